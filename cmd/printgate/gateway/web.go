package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"net/http"
	"net/netip"
	"sync"
	"time"
)

// webServers are the HTTP servers on the stack's tunnel addresses: the gateway face on the
// gateway's addresses and each printer's face on its own. Nothing listens on a host address.
type webServers struct {
	logf    func(format string, args ...any)
	servers []*http.Server
	wg      sync.WaitGroup
}

// startWeb listens on port 80 of every tunnel address of the stack.
func (g *Gateway) startWeb() (*webServers, error) {
	w := &webServers{logf: g.logf}
	serve := func(a netip.Addr, h http.Handler) error {
		ap := netip.AddrPortFrom(a, 80)
		ln, err := g.stack.ListenTCP(ap)
		if err != nil {
			return err
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          nil,
		}
		w.servers = append(w.servers, srv)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			g.logf("gateway: http on %v", ap)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.logf("gateway: http on %v: %v", ap, err)
			}
		}()
		return nil
	}
	gh := g.gatewayHandler()
	for _, a := range g.Addrs() {
		if err := serve(a, gh); err != nil {
			w.Close()
			return nil, err
		}
	}
	for _, p := range g.prs {
		ph := g.printerHandler(p)
		for _, a := range []netip.Addr{p.addr4, p.addr6} {
			if !a.IsValid() {
				continue
			}
			if err := serve(a, ph); err != nil {
				w.Close()
				return nil, err
			}
		}
	}
	return w, nil
}

// Close shuts the servers down: idle connections at once, active ones given two seconds.
func (w *webServers) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range w.servers {
		if err := s.Shutdown(ctx); err != nil {
			s.Close()
		}
	}
	w.wg.Wait()
}

// caller returns who sent r, from the tunnel source address only (invariant 3).
func (g *Gateway) caller(r *http.Request) (name, role string, ok bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return "", "", false
	}
	p, ok := g.WhoIs(ap.Addr())
	if !ok {
		return "", "", false
	}
	return p.Name, string(p.Role), true
}

// gatewayHandler serves the gateway address: a status document for the calling peer.
func (g *Gateway) gatewayHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		name, role, ok := g.caller(r)
		if !ok {
			http.Error(w, "unknown peer", http.StatusForbidden)
			return
		}
		st := g.Status()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fmt.Fprintf(w, "printgate gateway %s\nyou: %s (%s)\n", st.Addresses[0], name, role)
		for _, p := range st.Printers {
			fmt.Fprintf(w, "printer %s at %s: %s\n", p.Name, p.Address, p.State)
		}
	})
	mux.HandleFunc("GET /api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		name, role, ok := g.caller(r)
		if !ok {
			http.Error(w, "unknown peer", http.StatusForbidden)
			return
		}
		writeJSON(w, map[string]string{"name": name, "role": role, "peer_role": role})
	})
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := g.caller(r); !ok {
			http.Error(w, "unknown peer", http.StatusForbidden)
			return
		}
		writeJSON(w, g.Status())
	})
	return mux
}

// printerHandler serves one printer's address.
func (g *Gateway) printerHandler(p *printer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := g.caller(r); !ok {
			http.Error(w, "unknown peer", http.StatusForbidden)
			return
		}
		writeJSON(w, p.info())
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(v)
}
