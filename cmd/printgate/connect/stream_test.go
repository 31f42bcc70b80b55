package connect_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/cmd/printgate/connect"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/tunnel"
	"github.com/printgate/printgate/tunnel/tunneltest"
)

// TestForwardStreamsUpload: the first bytes of an upload reach the printer while the client
// still holds back the rest, so the forward never buffers a whole body; and the printer sees
// its own address as Host. The printer is an HTTP server in a tunneltest gateway's stack.
func TestForwardStreamsUpload(t *testing.T) {
	gw := tunneltest.NewGateway(t)
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	me := netip.MustParseAddr("10.99.0.200")
	gw.AddPeer(t, tunnel.Peer{PublicKey: key.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(me, 32)}})
	ln, err := gw.Stack.ListenTCP(netip.AddrPortFrom(gw.Addr4, 80))
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 5)
		io.ReadFull(r.Body, b)
		first <- r.Host + " " + string(b)
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", "http://"+gw.Addr4.String()+"/api/files/local/x.gcode")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "rest "+strconv.FormatInt(n, 10))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c := startClient(t, gw, key, me, "0="+gw.Addr4.String())
	st, _ := c.Status()
	url := "http://" + st.Listeners[0].Addr.String() + "/api/files/local"

	pr, pw := io.Pipe()
	type answer struct {
		resp *http.Response
		body string
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Post(url, "application/octet-stream", pr)
		if err != nil {
			done <- answer{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- answer{resp: resp, body: string(b)}
	}()
	pw.Write([]byte("first"))
	select {
	case got := <-first:
		if want := gw.Addr4.String() + " first"; got != want {
			t.Errorf("the printer saw %q, want %q (its own Host, the first bytes)", got, want)
		}
	case a := <-done:
		t.Fatalf("upload ended before its body did: %+v", a)
	case <-time.After(2 * time.Minute): // a deadlock guard, not a speed check
		t.Fatal("the first bytes never reached the printer while the body was open: the forward buffers uploads")
	}
	pw.Write(make([]byte, 1<<20))
	pw.Close()
	a := <-done
	if a.err != nil || a.resp.StatusCode != http.StatusCreated || a.body != "rest 1048576" {
		t.Fatalf("upload = %+v, want 201 and the rest received", a)
	}
	if loc, want := a.resp.Header.Get("Location"), "http://"+st.Listeners[0].Addr.String()+"/api/files/local/x.gcode"; loc != want {
		t.Errorf("Location = %q, want the forward's %q", loc, want)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	noGoroutinesLeft(t, "printgate/cmd/printgate/connect.")
}

// noGoroutinesLeft waits until no goroutine has a frame in pkg (net/http's handler goroutines
// end shortly after Close, not within it), and fails with their stacks if some never do.
func noGoroutinesLeft(t *testing.T, pkg string) {
	t.Helper()
	var left []string
	for range 300 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		left = left[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, pkg) && !strings.Contains(g, "noGoroutinesLeft") && !strings.Contains(g, "testing.tRunner") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%d goroutines of %s left after Close:\n%s", len(left), pkg, strings.Join(left, "\n\n"))
}

// startClient starts a connect client of gw with key at address me and the given forwards.
func startClient(t *testing.T, gw *tunneltest.Gateway, key wgtypes.Key, me netip.Addr, forwards ...string) *connect.Client {
	t.Helper()
	var fws []connect.Forward
	for _, f := range forwards {
		fw, err := connect.ParseForward(f)
		if err != nil {
			t.Fatal(err)
		}
		fws = append(fws, fw)
	}
	c, err := connect.Start(context.Background(), connect.Config{
		Device: enroll.DeviceConfig{
			PrivateKey: key,
			Addresses:  []netip.Prefix{netip.PrefixFrom(me, 32)},
			Peers: []enroll.ConfigPeer{{PublicKey: gw.PublicKey, Endpoint: gw.Endpoint.String(),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}},
		},
		Forwards: fws,
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCloseEndsHalfClosedRawForward: a raw forward whose client has sent EOF while the far end
// stays open (and silent) still ends when the Client closes.
func TestCloseEndsHalfClosedRawForward(t *testing.T) {
	gw := tunneltest.NewGateway(t)
	key, _ := wgtypes.GeneratePrivateKey()
	me := netip.MustParseAddr("10.99.0.201")
	gw.AddPeer(t, tunnel.Peer{PublicKey: key.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(me, 32)}})
	ln, err := gw.Stack.ListenTCP(netip.AddrPortFrom(gw.Addr4, 2323))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.ReadAll(c) // until the client's EOF; then it stays open and silent
		got <- c
	}()
	c := startClient(t, gw, key, me, "tcp:0="+gw.Addr4.String()+":2323")
	st, _ := c.Status()
	conn, err := net.Dial("tcp", st.Listeners[0].Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("hello"))
	conn.(*net.TCPConn).CloseWrite()
	var far net.Conn
	select {
	case far = <-got:
		defer far.Close()
	case <-time.After(2 * time.Minute): // a deadlock guard
		t.Fatal("the far end never saw the client's EOF")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Close hung on a half-closed raw forward")
	}
}
