package printerd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCamera is an MJPEG source on 127.0.0.1 that streams frames until the client leaves.
type fakeCamera struct {
	srv    *httptest.Server
	frames atomic.Int64 // frames written
	gone   chan struct{}
}

var jpegFrame = append([]byte{0xff, 0xd8, 0xff, 0xe0}, append(bytes.Repeat([]byte("frame"), 200), 0xff, 0xd9)...)

func newFakeCamera(t *testing.T) *fakeCamera {
	t.Helper()
	c := &fakeCamera{gone: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary=camframe")
		w.WriteHeader(http.StatusOK)
		defer func() { c.gone <- struct{}{} }()
		for {
			_, err := fmt.Fprintf(w, "--camframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(jpegFrame))
			if err == nil {
				_, err = w.Write(append(jpegFrame, "\r\n"...))
			}
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
			c.frames.Add(1)
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(jpegFrame)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://192.0.2.1/snapshot", http.StatusFound)
	})
	mux.HandleFunc("/html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<script>alert(1)</script>")
	})
	c.srv = httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(c.srv.Close)
	return c
}

func TestWebcamProxy(t *testing.T) {
	cam := newFakeCamera(t)
	h := newHarness(t, func(c *Config) {
		pc := c.Printers["mk3"]
		pc.Webcam = Webcam{Stream: cam.srv.URL + "/stream", Snapshot: cam.srv.URL + "/snapshot"}
		c.Printers["mk3"] = pc
	})
	addr := h.serveAs(viewerAddr, printerAddr, func(l net.Listener) error { return h.s.ServePrinter("mk3", l) })

	s := decode(t, h.do(req{method: "GET", target: "/api/settings", from: viewerAddr}))
	webcam := s["webcam"].(map[string]any)
	if webcam["streamUrl"] != "http://10.99.0.11/webcam/stream" || webcam["snapshotUrl"] != "http://10.99.0.11/webcam/snapshot" || webcam["webcamEnabled"] != true {
		t.Errorf("settings webcam = %v", webcam)
	}

	get := func(path string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		r.Host = "10.99.0.11"
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get("/webcam/stream")
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "multipart/x-mixed-replace" {
		t.Fatalf("stream = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Frames arrive while the camera keeps streaming: the proxy copies, it does not buffer.
	mr := multipart.NewReader(bufio.NewReader(resp.Body), params["boundary"])
	for i := range 3 {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		b, _ := io.ReadAll(p)
		if !bytes.Equal(b, jpegFrame) {
			t.Fatalf("frame %d: %d bytes, want the camera's %d", i, len(b), len(jpegFrame))
		}
	}
	resp.Body.Close()
	// The viewer left: the proxy lets go of the camera.
	select {
	case <-cam.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("camera stream still held after the viewer left")
	}

	// A viewer revoked mid-stream loses the stream.
	resp = get("/webcam/stream")
	h.id.mu.Lock()
	delete(h.id.peers, viewerAddr)
	h.id.mu.Unlock()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Logf("stream after revocation: %v", err)
	}
	resp.Body.Close()
	select {
	case <-cam.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("camera stream still held after the viewer was revoked")
	}
	h.id.mu.Lock()
	h.id.peers[viewerAddr] = Caller{Name: "vera", Role: "viewer"}
	h.id.mu.Unlock()

	resp = get("/webcam/snapshot")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" || !bytes.Equal(b, jpegFrame) {
		t.Errorf("snapshot = %d %q %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}
	// The gateway face proxies the same camera for the web UI.
	gw := h.do(req{method: "GET", target: "/api/v1/printers/mk3/webcam/snapshot", from: viewerAddr, to: gwAddr})
	if gw.Code != http.StatusOK || !bytes.Equal(gw.Body.Bytes(), jpegFrame) {
		t.Errorf("gateway snapshot = %d", gw.Code)
	}
	// A stranger sees nothing.
	if w := h.do(req{method: "GET", target: "/webcam/snapshot", from: strangerAddr}); w.Code != http.StatusForbidden {
		t.Errorf("stranger snapshot = %d, want 403", w.Code)
	}
}

func TestWebcamRefusals(t *testing.T) {
	cam := newFakeCamera(t)
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080/?action=stream", true},
		{"http://localhost:8080/stream", true},
		{"http://[::1]:8080/stream", true},
		{"http://127.1.2.3:8080/", true},
		{"http://192.168.1.20:8080/?action=stream", false},
		{"http://10.99.0.11/stream", false},
		{"http://camera.local:8080/", false},
		{"https://127.0.0.1:8443/", false},
		{"http://user:pw@127.0.0.1:8080/", false},
		{"file:///dev/video0", false},
		{"127.0.0.1:8080", false},
	} {
		_, err := New(Config{Identity: &fakeIdentity{}, Printers: map[string]PrinterConfig{
			"mk3": {Printer: newFakePrinter(), Files: nopFiles{}, Policy: nopPolicy(t), Webcam: Webcam{Stream: tt.url}},
		}})
		if (err == nil) != tt.ok {
			t.Errorf("New with webcam %q: err %v, want ok %v", tt.url, err, tt.ok)
		}
	}
	// A camera that redirects off loopback, or serves HTML, is not proxied.
	for _, path := range []string{"/redirect", "/html"} {
		h := newHarness(t, func(c *Config) {
			pc := c.Printers["mk3"]
			pc.Webcam = Webcam{Snapshot: cam.srv.URL + path, Stream: cam.srv.URL + path}
			c.Printers["mk3"] = pc
		})
		for _, target := range []string{"/webcam/snapshot", "/webcam/stream"} {
			w := h.do(req{method: "GET", target: target, from: viewerAddr})
			if w.Code != http.StatusBadGateway || strings.Contains(w.Body.String(), "<script>") {
				t.Errorf("camera %s, GET %s = %d %q, want 502", path, target, w.Code, w.Body)
			}
		}
	}
}
