package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"testing"
	"time"
)

// uiCam is a camera daemon bound to 127.0.0.1 in the gateway's namespace (as mjpg-streamer
// or ustreamer with --host 127.0.0.1): an MJPEG stream at /?action=stream and a JPEG at
// /?action=snapshot.
type uiCam struct {
	url    string   // http://127.0.0.1:PORT/
	port   string   // PORT
	frames [][]byte // the JPEG frames it sends, in turn
}

// uiCamBoundary is the stream's multipart boundary.
const uiCamBoundary = "uiframe"

func uiJPEG(t *testing.T, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, 255
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// uiStartCam listens on 127.0.0.1 inside ns (the socket is made on a thread in that
// namespace) and serves until the test ends.
func uiStartCam(t *testing.T, ns netns) *uiCam {
	t.Helper()
	cam := &uiCam{frames: [][]byte{
		uiJPEG(t, color.RGBA{R: 200}), uiJPEG(t, color.RGBA{G: 200}), uiJPEG(t, color.RGBA{B: 200}),
	}}
	var ln net.Listener
	if err := ns.do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("camera listen in %s: %v", ns.name, err)
	}
	_, cam.port, _ = net.SplitHostPort(ln.Addr().String())
	cam.url = "http://127.0.0.1:" + cam.port + "/"
	// mjpg-streamer's URLs, as docs/slicers.md gives them: /?action=stream and
	// /?action=snapshot.
	snapshot := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(cam.frames[0])
	}
	stream := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+uiCamBoundary)
		rc := http.NewResponseController(w)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			f := cam.frames[i%len(cam.frames)]
			if _, err := fmt.Fprintf(w, "--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", uiCamBoundary, len(f)); err != nil {
				return
			}
			w.Write(f)
			io.WriteString(w, "\r\n")
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet || r.URL.Path != "/":
			http.NotFound(w, r)
		case r.URL.Query().Get("action") == "stream":
			stream(w, r)
		case r.URL.Query().Get("action") == "snapshot":
			snapshot(w, r)
		default:
			http.NotFound(w, r)
		}
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return cam
}

// uiWebcamTest: a viewer gets the camera's stream and snapshot through the tunnel (the
// printer's OctoPrint face, as phone apps read settings.webcam, and the gateway's native
// route the web UI uses); the camera's own port is reachable from no tunnel address.
func uiWebcamTest(t *testing.T, u *uiLab) {
	v := u.viewer
	base := "http://" + u.pr

	t.Run("Settings", func(t *testing.T) {
		r := uiMustCurl(t, v.ns, base+"/api/settings")
		m := r.json()
		wc, _ := m["webcam"].(map[string]any)
		if r.code != 200 || wc == nil {
			t.Fatalf("GET /api/settings = %v, want 200 with webcam", r)
		}
		for k, want := range map[string]string{"streamUrl": base + "/webcam/stream", "snapshotUrl": base + "/webcam/snapshot"} {
			if s, _ := wc[k].(string); s != want {
				t.Errorf("settings webcam.%s = %q, want %q: the proxied URL in the tunnel, never the camera's own", k, s, want)
			}
		}
		t.Logf("settings webcam: %v", wc)
	})

	t.Run("Snapshot", func(t *testing.T) {
		for _, url := range []string{base + "/webcam/snapshot", "http://" + u.gw + "/api/v1/printers/" + uiPrinter + "/webcam/snapshot"} {
			r := uiMustCurl(t, v.ns, url)
			if r.code != 200 || r.h.Get("Content-Type") != "image/jpeg" || !bytes.Equal(r.body, u.cam.frames[0]) {
				t.Errorf("GET %s = %d %q, %d bytes; want 200 image/jpeg and the camera's snapshot (%d bytes)",
					url, r.code, r.h.Get("Content-Type"), len(r.body), len(u.cam.frames[0]))
			}
		}
	})

	t.Run("Stream", func(t *testing.T) {
		for _, url := range []string{base + "/webcam/stream", "http://" + u.gw + "/api/v1/printers/" + uiPrinter + "/webcam/stream"} {
			uiReadStream(t, u, v, url, 4)
		}
	})

	t.Run("CameraPortUnreachable", func(t *testing.T) {
		for _, host := range []string{u.gw, u.pr} {
			url := "http://" + net.JoinHostPort(host, u.cam.port) + "/?action=snapshot"
			if out, err := curlFail(v.ns, url); err == nil {
				t.Errorf("camera port reachable through the tunnel: curl %s answered %q", url, out)
			}
		}
		// Nor from the LAN: the camera listens on loopback only (the client namespace
		// reaches the gateway's LAN address over the veth).
		if out, err := curlFail(v.ns, "http://"+net.JoinHostPort(u.gwIP, u.cam.port)+"/?action=snapshot"); err == nil {
			t.Errorf("camera port reachable on the gateway's LAN address: %q", out)
		}
		// The admin, too: no role opens the camera's own port.
		if out, err := curlFail(u.admin.ns, "http://"+net.JoinHostPort(u.gw, u.cam.port)+"/?action=stream"); err == nil {
			t.Errorf("camera port reachable for the admin: %q", out)
		}
	})
}

// uiReadStream reads n frames of the MJPEG stream at url from p's namespace and checks each
// is one of the camera's frames, byte for byte.
func uiReadStream(t *testing.T, u *uiLab, p *uiPeer, url string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	hc := uiNSClient(p.ns)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || err != nil || mt != "multipart/x-mixed-replace" || params["boundary"] == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("GET %s = %s %q, want 200 multipart/x-mixed-replace: %s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	seen := map[int]bool{}
	for i := range n {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("GET %s: frame %d: %v", url, i, err)
		}
		b, err := io.ReadAll(part)
		if err != nil {
			t.Fatalf("GET %s: frame %d: %v", url, i, err)
		}
		which := -1
		for k, f := range u.cam.frames {
			if bytes.Equal(b, f) {
				which = k
			}
		}
		if which < 0 {
			t.Fatalf("GET %s: frame %d (%d bytes, %s) is none of the camera's frames", url, i, len(b), part.Header.Get("Content-Type"))
		}
		if _, err := jpeg.Decode(bytes.NewReader(b)); err != nil {
			t.Errorf("GET %s: frame %d does not decode: %v", url, i, err)
		}
		seen[which] = true
	}
	if len(seen) < 2 {
		t.Errorf("GET %s: %d frames, all the same: the stream does not move", url, n)
	}
}
