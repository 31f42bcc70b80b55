package printerd

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/printgate/printgate/enroll"
)

// This file proxies a camera daemon bound to loopback (mjpg-streamer, ustreamer, camera-streamer
// with --host 127.0.0.1) into the tunnel: the MJPEG stream copied part by part as it arrives,
// never buffered whole, and a single snapshot. The camera's own port stays unreachable from
// the LAN and the tunnel alike.

// maxSnapshot caps one proxied snapshot.
const maxSnapshot = 16 << 20

// checkWebcamURL accepts "" or an http URL on a loopback address.
func checkWebcamURL(u string) error {
	if u == "" {
		return nil
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "http" || pu.User != nil || pu.Host == "" {
		return fmt.Errorf("webcam url %q: want http://127.0.0.1:PORT/...", u)
	}
	if !loopbackHost(pu.Hostname()) {
		return fmt.Errorf("webcam url %q: the camera must listen on a loopback address (127.0.0.1 or ::1), not %q", u, pu.Hostname())
	}
	return nil
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// webcamClient dials loopback only, whatever a redirect or a resolver says.
var webcamTransport = &http.Transport{
	Proxy: nil,
	DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(host, "localhost") {
			host = "127.0.0.1"
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Unmap().IsLoopback() {
			return nil, fmt.Errorf("webcam: refusing to dial %s: not loopback", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
	},
	ResponseHeaderTimeout: 10 * time.Second,
	DisableCompression:    true,
	MaxIdleConnsPerHost:   2,
}

var webcamClient = &http.Client{
	Transport:     webcamTransport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (s *Server) webcamGet(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := webcamClient.Do(req)
	if err != nil {
		return nil, errorf(http.StatusBadGateway, "webcam not reachable")
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, errorf(http.StatusBadGateway, "webcam answered %d", resp.StatusCode)
	}
	return resp, nil
}

// webcamStream copies the MJPEG stream until the client goes away or the server closes.
func (s *Server) webcamStream(q *request) error {
	if q.r.URL.Query().Get("action") == "snapshot" {
		// Home Assistant (pyoctoprintapi) takes its still image from the stream URL with
		// ?action=snapshot added, as mjpg-streamer answers it.
		return s.webcamSnapshot(q)
	}
	if q.p.Webcam.Stream == "" {
		return errorf(http.StatusNotFound, "no webcam configured for this printer")
	}
	ctx, cancel := context.WithCancel(q.r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	resp, err := s.webcamGet(ctx, q.p.Webcam.Stream)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" || params["boundary"] == "" {
		return errorf(http.StatusBadGateway, "webcam stream is not MJPEG")
	}
	h := q.w.Header()
	h.Set("Content-Type", mime.FormatMediaType(mt, map[string]string{"boundary": params["boundary"]}))
	h.Set("Cache-Control", "no-store")
	q.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(q.w)
	buf := make([]byte, 32<<10)
	checked := time.Now()
	for {
		if time.Since(checked) > pushInterval {
			if !s.stillPeer(q, enroll.Viewer) {
				return nil // revoked: the stream ends
			}
			checked = time.Now()
		}
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := q.w.Write(buf[:n]); werr != nil {
				return nil
			}
			rc.Flush()
		}
		if rerr != nil {
			return nil
		}
	}
}

// webcamSnapshot serves one JPEG.
func (s *Server) webcamSnapshot(q *request) error {
	if q.p.Webcam.Snapshot == "" {
		return errorf(http.StatusNotFound, "no webcam snapshot configured for this printer")
	}
	ctx, cancel := context.WithTimeout(q.r.Context(), 15*time.Second)
	defer cancel()
	resp, err := s.webcamGet(ctx, q.p.Webcam.Snapshot)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "image/jpeg" && mt != "image/png" {
		return errorf(http.StatusBadGateway, "webcam snapshot is not an image")
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSnapshot+1))
	if err != nil {
		return errorf(http.StatusBadGateway, "webcam snapshot incomplete")
	}
	if len(b) > maxSnapshot {
		return errorf(http.StatusBadGateway, "webcam snapshot too large")
	}
	h := q.w.Header()
	h.Set("Content-Type", mt)
	h.Set("Cache-Control", "no-store")
	q.w.WriteHeader(http.StatusOK)
	q.w.Write(b)
	return nil
}
