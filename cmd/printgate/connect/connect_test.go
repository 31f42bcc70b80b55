package connect_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/printgate/printgate/cmd/printgate/connect"
	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
)

// A gateway in this process with one simulated printer, and a connect client built from an
// enrollment's wg-quick config, over loopback UDP.

const printerName = "mk4"

type rig struct {
	g      *gateway.Gateway
	c      *connect.Client
	apiKey string
	http   string // the HTTP forward's base URL
	bridge string // the raw forward's address
	ui     string // a forward to the gateway's web UI
	socks  string // the SOCKS proxy's address
	pr     netip.Addr
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	if _, err := enroll.Init(dir, enroll.InitOptions{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), ListenPort: port}); err != nil {
		t.Fatal(err)
	}
	spec, err := gateway.ParsePrinterSpec(printerName + "=sim")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.Start(context.Background(), gateway.Config{StateDir: dir, Printers: []gateway.PrinterSpec{spec},
		StatsInterval: 100 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatalf("gateway.Start: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	e, err := g.Enroll(enroll.Request{Name: "laptop", Role: enroll.Admin})
	if err != nil {
		t.Fatal(err)
	}
	dc, err := enroll.ParseConfig([]byte(e.Config))
	if err != nil {
		t.Fatal(err)
	}
	loop := func(spec string) connect.Forward {
		f, err := connect.ParseForward(spec)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	c, err := connect.Start(context.Background(), connect.Config{
		Device:   dc,
		Forwards: []connect.Forward{loop("0=" + printerName), loop("tcp:0=" + printerName + ":8888"), loop("0=" + g.Status().Addresses[0])},
		SOCKS:    netip.MustParseAddrPort("127.0.0.1:0"),
		Logf:     t.Logf,
		Verbosef: t.Logf,
	})
	if err != nil {
		t.Fatalf("connect.Start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{g: g, c: c, apiKey: e.APIKey,
		http:   "http://" + st.Listeners[0].Addr.String(),
		bridge: st.Listeners[1].Addr.String(),
		ui:     "http://" + st.Listeners[2].Addr.String(),
		socks:  st.Listeners[3].Addr.String(),
	}
	gs := g.Status()
	r.pr = netip.MustParseAddr(gs.Printers[0].Address)
	return r
}

// do makes a request through the HTTP forward with the device's API key.
func (r *rig) do(t *testing.T, method, path string, body io.Reader, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, r.http+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Api-Key", r.apiKey)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if h, ok := hdr["Host"]; ok {
		req.Host = h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// printerState is the OctoPrint state text through the forward.
func (r *rig) printerState(t *testing.T) string {
	code, b := r.do(t, "GET", "/api/job", nil, nil)
	if code != 200 {
		return ""
	}
	var j struct{ State string }
	json.Unmarshal(b, &j)
	return j.State
}

func TestForwardSlicerUploadAndPrint(t *testing.T) {
	r := newRig(t)
	waitFor(t, "the printer operational through the forward", 60*time.Second, func() bool {
		return r.printerState(t) == "Operational"
	})
	code, b := r.do(t, "GET", "/api/version", nil, nil)
	if code != 200 || !bytes.Contains(b, []byte(`"api"`)) {
		t.Fatalf("GET /api/version through the forward = %d %s", code, b)
	}

	// PrusaSlicer's upload: multipart file plus select and print.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "cube.gcode")
	io.WriteString(fw, "; cube\nG28\nG1 X10 Y10 F3000\nG1 X20 Y20\nM400\n")
	mw.WriteField("select", "true")
	mw.WriteField("print", "true")
	mw.Close()
	code, b = r.do(t, "POST", "/api/files/local", &body, map[string]string{"Content-Type": mw.FormDataContentType()})
	if code != http.StatusCreated {
		t.Fatalf("POST /api/files/local through the forward = %d %s", code, b)
	}
	var up struct {
		Done bool `json:"done"`
		Refs struct {
			Resource string `json:"resource"`
		} `json:"refs"`
	}
	json.Unmarshal(b, &up)
	if !up.Done {
		t.Errorf("upload answer %s: want done", b)
	}
	waitFor(t, "the job done", 60*time.Second, func() bool {
		_, b := r.do(t, "GET", "/api/job", nil, nil)
		var j struct {
			State string
			Job   struct{ File struct{ Name string } }
		}
		json.Unmarshal(b, &j)
		return j.Job.File.Name == "cube.gcode" && j.State == "Operational"
	})
}

func TestForwardPushWebsocket(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(r.http, "http")+"/sockjs/websocket", &websocket.DialOptions{
		HTTPHeader: http.Header{"X-Api-Key": {r.apiKey}},
	})
	if err != nil {
		t.Fatalf("websocket through the forward: %v", err)
	}
	defer ws.CloseNow()
	_, msg, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("first push message: %v", err)
	}
	if !bytes.Contains(msg, []byte("connected")) && !bytes.Contains(msg, []byte("current")) {
		t.Errorf("first push message = %.200s, want connected or current", msg)
	}
	st, err := r.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Listeners[0].Open == 0 || st.LastHandshake.IsZero() || st.RxBytes == 0 {
		t.Errorf("Status = %+v, want the forward in use after a handshake", st)
	}

	// Close ends the push socket too (a hijacked connection the HTTP server forgets).
	done := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				done <- err
				return
			}
		}
	}()
	if err := r.c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the push socket stayed open after Close")
	}
	if err := r.c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

func TestForwardHostCheck(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1", 200},
		{"localhost:80", 200},
		{"evil.example", http.StatusMisdirectedRequest}, // DNS rebinding to 127.0.0.1
		{"10.1.2.3", http.StatusMisdirectedRequest},     // not loopback, on a loopback forward
	} {
		code, b := r.do(t, "GET", "/api/version", nil, map[string]string{"Host": tc.host})
		if code != tc.want {
			t.Errorf("GET /api/version Host %q = %d %s, want %d", tc.host, code, b, tc.want)
		}
	}
	// A page of another origin is still refused by the printer (its Origin is kept).
	code, _ := r.do(t, "POST", "/api/printer/command", strings.NewReader(`{"command":"M105"}`),
		map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"})
	if code != http.StatusForbidden {
		t.Errorf("cross-origin POST through the forward = %d, want 403", code)
	}
}

// socksConnect does a SOCKS5 CONNECT by name (atyp 3) or address and returns the reply code
// and the connection.
func socksConnect(t *testing.T, proxy, host string, port uint16) (byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte{5, 1, 0})
	var g [2]byte
	if _, err := io.ReadFull(c, g[:]); err != nil || g != [2]byte{5, 0} {
		t.Fatalf("socks greeting = %v %v", g, err)
	}
	req := []byte{5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		req = append(append(req, 1), a.AsSlice()...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = append(req, byte(port>>8), byte(port))
	c.Write(req)
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("socks reply: %v", err)
	}
	c.SetDeadline(time.Time{})
	return rep[1], c
}

func TestSOCKS(t *testing.T) {
	r := newRig(t)
	code, c := socksConnect(t, r.socks, printerName, 80)
	if code != 0 {
		t.Fatalf("CONNECT %s:80 = reply %d, want 0", printerName, code)
	}
	fmt.Fprintf(c, "GET /api/version HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\nConnection: close\r\n\r\n", printerName, r.apiKey)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Errorf("GET http://%s/api/version through SOCKS = %s, want 200", printerName, resp.Status)
	}

	// A tunnel address works as well; nothing outside the config's AllowedIPs does.
	if code, _ := socksConnect(t, r.socks, r.pr.String(), 80); code != 0 {
		t.Errorf("CONNECT %v:80 = reply %d, want 0", r.pr, code)
	}
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	for _, tc := range []struct {
		host string
		port uint16
		want byte
	}{
		{"127.0.0.1", uint16(outside.Addr().(*net.TCPAddr).Port), 2}, // this machine: not allowed
		{"192.0.2.1", 80, 2},    // the internet: not allowed
		{"localhost", 80, 4},    // a name the gateway does not list
		{"example.com", 443, 4}, // ditto
	} {
		if code, _ := socksConnect(t, r.socks, tc.host, tc.port); code != tc.want {
			t.Errorf("CONNECT %s:%d = reply %d, want %d", tc.host, tc.port, code, tc.want)
		}
	}
}

func TestRawForwardBridge(t *testing.T) {
	r := newRig(t)
	c, err := net.Dial("tcp", r.bridge)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// The bridge speaks only after it has the printer; whatever it says proves the splice.
	fmt.Fprintf(c, "M105\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("bridge through the raw forward: %v", err)
	}
	t.Logf("bridge answered %q", line)
}

func TestSecondInstanceLock(t *testing.T) {
	dir := t.TempDir()
	k := [32]byte{1, 2, 3}
	l, err := connect.AcquireLock(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	var inUse *connect.InUseError
	if _, err := connect.AcquireLock(dir, k); !errors.As(err, &inUse) {
		t.Fatalf("second AcquireLock = %v, want *InUseError", err)
	}
	if l2, err := connect.AcquireLock(dir, [32]byte{9}); err != nil {
		t.Fatalf("AcquireLock(another key) = %v", err)
	} else {
		l2.Release()
	}
	l.Release()
	l3, err := connect.AcquireLock(dir, k)
	if err != nil {
		t.Fatalf("AcquireLock after Release = %v", err)
	}
	l3.Release()
}

func TestLockRefusesSharedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777) // the umask may have narrowed it
	if l, err := connect.AcquireLock(dir, [32]byte{1}); err == nil {
		l.Release()
		t.Errorf("AcquireLock in a world-writable directory = nil error, want a refusal")
	}
}

func TestForwardWebUI(t *testing.T) {
	r := newRig(t)
	resp, err := http.Get(r.ui + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / through a forward to the gateway = %s %.100s, want the web UI", resp.Status, b)
	}
	resp, err = http.Get(r.ui + "/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"laptop"`)) {
		t.Errorf("GET /api/v1/whoami through the forward = %s %s, want the device", resp.Status, b)
	}
	// The browser's own origin on the forward counts as the gateway's (the forward rewrites it).
	req, _ := http.NewRequest("POST", r.ui+"/api/v1/printers/"+printerName+"/temperature", strings.NewReader(`{"heater":"bed","target":0}`))
	req.Header.Set("Origin", r.ui)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Printgate", "1")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusForbidden {
		t.Errorf("same-origin POST from the forward's page = %s %s, want it not refused as cross-origin", resp.Status, b)
	}
}
