package printerd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawConn is a client connection that speaks HTTP by hand, for requests that stall.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t, c, bufio.NewReader(c)}
}

func (c *rawConn) write(s string) error {
	_, err := io.WriteString(c.c, s)
	return err
}

// response reads one response: status code and body (generous deadline: no timing is asserted).
func (c *rawConn) response() (int, string) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *rawConn) get(path string) (int, string) {
	c.t.Helper()
	if err := c.write("GET " + path + " HTTP/1.1\r\nHost: " + printerAddr.String() + "\r\n\r\n"); err != nil {
		c.t.Fatal(err)
	}
	return c.response()
}

// postHead starts a POST whose body (length n) the caller sends.
func postHead(path, ctype string, n int) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nX-Printgate: 1\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", path, printerAddr, ctype, n)
}

// TestConnCaps: a device over its connection cap is answered 429 with the reason before any
// HTTP is read; another device is served meanwhile; a closed connection frees its slot.
func TestConnCaps(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConnsPerDevice, c.MaxConns = 2, 3 })
	face := func(l net.Listener) error { return h.s.ServePrinter("mk3", l) }
	op := h.serveAs(operatorAddr, printerAddr, face)
	viewer := h.serveAs(viewerAddr, printerAddr, face)
	admin := h.serveAs(adminAddr, printerAddr, face)

	a, b := dialRaw(t, op), dialRaw(t, op)
	for _, c := range []*rawConn{a, b} {
		if code, body := c.get("/api/printer"); code != http.StatusOK {
			t.Fatalf("within the cap: %d %s", code, body)
		}
	}
	over := dialRaw(t, op)
	if code, body := over.response(); code != http.StatusTooManyRequests || !strings.Contains(body, "too many connections from this device") {
		t.Errorf("third connection of one device = %d %q, want 429 naming the device cap", code, body)
	}
	if code, body := dialRaw(t, viewer).get("/api/printer"); code != http.StatusOK {
		t.Errorf("another device while the first is at its cap = %d %s", code, body)
	}
	// The viewer's connection still counts: the server is at its total cap of 3.
	if code, body := dialRaw(t, admin).response(); code != http.StatusTooManyRequests || !strings.Contains(body, "on this gateway") {
		t.Errorf("a connection over the total cap = %d %q, want 429 naming the gateway's cap", code, body)
	}
	a.c.Close()
	waitFor(t, "a slot freed by a closed connection", func() bool {
		n, _ := h.s.limits.conns.open("peer oscar")
		return n < 2
	})
	if code, body := dialRaw(t, op).get("/api/printer"); code != http.StatusOK {
		t.Errorf("after a close, a new connection = %d %s", code, body)
	}
	if !strings.Contains(h.do(req{method: "GET", target: "/metrics", from: adminAddr, to: gwAddr}).Body.String(), "printgate_http_connections_refused_total 2") {
		t.Error("metrics do not count the two refused connections")
	}
	waitFor(t, "the heap returned to the system after the refusals", func() bool {
		h.s.limits.trim.Lock()
		defer h.s.limits.trim.Unlock()
		return h.s.limits.trim.collects > 0
	})
}

// TestUploadCaps: a device's second upload while its first is in progress is 429; another
// device uploads meanwhile.
func TestUploadCaps(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxUploadsPerDevice = 1 })
	face := func(l net.Listener) error { return h.s.ServePrinter("mk3", l) }
	op := h.serveAs(operatorAddr, printerAddr, face)
	admin := h.serveAs(adminAddr, printerAddr, face)
	body := multipartBody(testBoundary, []formPart{{name: "file", filename: "slow.gcode", value: goodGcode}}, true)
	ctype := "multipart/form-data; boundary=" + testBoundary
	first := dialRaw(t, op)
	if err := first.write(postHead("/api/files/local", ctype, len(body)) + body[:40]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first upload in progress", func() bool {
		n, _ := h.s.limits.uploads.open("peer oscar")
		return n == 1
	})
	second := dialRaw(t, op)
	second.write(postHead("/api/files/local", ctype, len(body)) + body)
	if code, resp := second.response(); code != http.StatusTooManyRequests || !strings.Contains(resp, "too many uploads from this device") {
		t.Errorf("second upload of one device = %d %q, want 429", code, resp)
	}
	other := dialRaw(t, admin)
	otherBody := strings.Replace(body, "slow.gcode", "other.gcode", 1)
	other.write(postHead("/api/files/local", ctype, len(otherBody)) + otherBody)
	if code, resp := other.response(); code != http.StatusCreated {
		t.Errorf("another device's upload meanwhile = %d %q, want 201", code, resp)
	}
	first.write(body[40:])
	if code, resp := first.response(); code != http.StatusCreated {
		t.Errorf("the first upload, finished = %d %q", code, resp)
	}
}

// TestSlowBody: a body that stalls, or trickles under the minimum rate, ends with 408 and
// nothing stored; a body at a normal pace is served.
func TestSlowBody(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MinBodyRate, c.BodyIdle = 1000, 300*time.Millisecond })
	op := h.serveAs(operatorAddr, printerAddr, func(l net.Listener) error { return h.s.ServePrinter("mk3", l) })
	body := multipartBody(testBoundary, []formPart{{name: "file", filename: "drip.gcode", value: goodGcode}}, true)
	ctype := "multipart/form-data; boundary=" + testBoundary

	stall := dialRaw(t, op)
	stall.write(postHead("/api/files/local", ctype, len(body)) + body[:20])
	if code, resp := stall.response(); code != http.StatusRequestTimeout || !strings.Contains(resp, "no data") {
		t.Errorf("a stalled upload = %d %q, want 408", code, resp)
	}

	drip := dialRaw(t, op)
	drip.write(postHead("/api/printer/command", "application/json", 1000) + "{")
	done := make(chan struct{})
	go func() { // one byte per 50 ms: 20 bytes/s, far under 1000
		defer close(done)
		for range 200 {
			time.Sleep(50 * time.Millisecond)
			if drip.write(" ") != nil {
				return
			}
		}
	}()
	if code, resp := drip.response(); code != http.StatusRequestTimeout || !strings.Contains(resp, "minimum") {
		t.Errorf("a dripping body = %d %q, want 408 naming the minimum rate", code, resp)
	}
	drip.c.Close()
	<-done
	if list, _ := h.store.List("", true); len(list) != 0 {
		t.Errorf("slow uploads left %v", list)
	}
	ok := dialRaw(t, op)
	ok.write(postHead("/api/files/local", ctype, len(body)) + body)
	if code, resp := ok.response(); code != http.StatusCreated {
		t.Errorf("an upload at a normal pace = %d %q", code, resp)
	}
}
