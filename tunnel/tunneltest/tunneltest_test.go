package tunneltest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/printgate/printgate/tunnel/tunneltest"
)

// TestPairHTTP is the in-process end to end: a client device reaches an HTTP server that
// listens on the gateway's netstack address, over IPv4 and IPv6, and the server sees the
// client's tunnel address as the remote address.
func TestPairHTTP(t *testing.T) {
	gw, cl := tunneltest.NewPair(t, tunneltest.WithPresharedKey())
	for _, addr := range []netip.Addr{gw.Addr4, gw.Addr6} {
		ln, err := gw.Stack.ListenTCP(netip.AddrPortFrom(addr, 80))
		if err != nil {
			t.Fatalf("ListenTCP(%v): %v", addr, err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s", r.RemoteAddr)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	hc := cl.HTTPClient(t)
	for _, tc := range []struct {
		url  string
		from netip.Addr
	}{
		{"http://10.99.0.1/", cl.Addr4},
		{"http://[fd00:99::1]/", cl.Addr6},
	} {
		t.Run(tc.url, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", tc.url, nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", tc.url, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			ap, err := netip.ParseAddrPort(string(body[len("hello "):]))
			if err != nil || ap.Addr() != tc.from {
				t.Errorf("GET %s = %q, want hello from %v", tc.url, body, tc.from)
			}
		})
	}
}
