package gateway

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/files"
)

// The HTTP faces: printerd's gateway face (web UI, native API, push) on port 80 of the
// gateway's tunnel addresses and each printer's OctoPrint-compatible API on port 80 of its
// own. Listeners come from the netstack: nothing listens on a host address.

// webServers runs printerd on the stack's listeners.
type webServers struct {
	srv *printerd.Server
	wg  sync.WaitGroup
}

// identity is the roster as printerd asks it: who is behind a tunnel address, and whether an
// API key belongs to a peer.
type identity struct{ g *Gateway }

func (id identity) WhoIs(a netip.Addr) (printerd.Caller, bool) {
	p, ok := id.g.WhoIs(a)
	if !ok {
		return printerd.Caller{}, false
	}
	return printerd.Caller{Name: p.Name, Role: p.Role, PublicKey: p.PublicKey}, true
}

func (id identity) CheckAPIKey(peer, key string) (enroll.Role, bool) {
	return id.g.checkAPIKey(peer, key)
}

// devices is the roster for the admin pages: enroll and revoke go through the gateway so the
// device changes (and a revoked peer's connections close) before they return.
type devices struct{ g *Gateway }

func (d devices) Peers() []enroll.PeerView                              { return d.g.Peers() }
func (d devices) Enroll(req enroll.Request) (*enroll.Enrollment, error) { return d.g.enroll(req) }
func (d devices) Revoke(name string) (enroll.Peer, error) {
	res, err := d.g.revoke(name)
	return res.peer, err
}
func (d devices) RotateAPIKey(name string, role enroll.Role) (string, error) {
	return d.g.rotateAPIKey(name, role)
}

// startWeb makes the printerd server and serves it on port 80 of every tunnel address.
func (g *Gateway) startWeb() (*webServers, error) {
	pcs := map[string]printerd.PrinterConfig{}
	pub := g.PublicKey()
	for _, p := range g.prs {
		store, err := files.New(files.Config{
			Dir:    filepath.Join(g.cfg.StateDir, "files", p.spec.Name),
			Check:  p.pol.CheckFile,
			Logf:   g.verbosef,
			Errorf: g.logf,
		})
		if err != nil {
			return nil, fmt.Errorf("printer %s: %w", p.spec.Name, err)
		}
		p.files = store
		var addrs []netip.Addr
		for _, a := range []netip.Addr{p.addr4, p.addr6} {
			if a.IsValid() {
				addrs = append(addrs, a)
			}
		}
		pcs[p.spec.Name] = printerd.PrinterConfig{Printer: p.ctl, Files: store, Policy: p.pol,
			Webcam: printerd.Webcam{Stream: p.spec.Webcam, Snapshot: p.spec.Snapshot}, Addrs: addrs,
			UUID: printerd.DeriveUUID(pub[:], p.spec.Name)} // stable: the gateway key is persisted
	}
	cfg := printerd.Config{
		Printers:   pcs,
		Identity:   identity{g},
		Devices:    devices{g},
		Mesh:       meshInviter{g},
		GatewayURL: "http://" + g.Addrs()[0].String(),
		Metrics:    g.writeMetrics,
		Logf:       g.verbosef,
		Errorf:     g.logf,
	}
	if g.audit != nil {
		cfg.Audit = g.audit
		path := audit.Path(g.cfg.StateDir)
		cfg.VerifyAudit = func() (audit.Head, error) { return audit.VerifyFile(path) }
	} else {
		cfg.Audit = noAudit{audit.Path(g.cfg.StateDir)} // actions refused (507), stops still sent
	}
	srv, err := printerd.New(cfg)
	if err != nil {
		return nil, err
	}
	w := &webServers{srv: srv}
	// serve listens on a tunnel address and runs fn on the listener until Close.
	serve := func(ap netip.AddrPort, what string, fn func(net.Listener) error) error {
		ln, err := g.stack.ListenTCP(ap)
		if err != nil {
			return err
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			g.logf("gateway: %s on %v", what, ap)
			if err := fn(ln); err != nil {
				g.logf("gateway: %s on %v: %v", what, ap, err)
			}
		}()
		return nil
	}
	for _, a := range g.Addrs() {
		if err := serve(netip.AddrPortFrom(a, 80), "web UI and native API", srv.ServeGateway); err != nil {
			w.Close()
			return nil, err
		}
	}
	for _, p := range g.prs {
		name := p.spec.Name
		for _, a := range []netip.Addr{p.addr4, p.addr6} {
			if !a.IsValid() {
				continue
			}
			err := serve(netip.AddrPortFrom(a, 80), "printer "+name+" OctoPrint API", func(l net.Listener) error { return srv.ServePrinter(name, l) })
			if err == nil {
				err = serve(netip.AddrPortFrom(a, printerd.BridgePort), "printer "+name+" serial bridge", func(l net.Listener) error { return srv.ServeBridge(name, l) })
			}
			if err != nil {
				w.Close()
				return nil, err
			}
		}
	}
	return w, nil
}

// Close stops every HTTP server, push socket and stream and waits for them.
func (w *webServers) Close() {
	w.srv.Close()
	w.wg.Wait()
}

// writeMetrics adds the gateway's own Prometheus lines to printerd's /metrics.
func (g *Gateway) writeMetrics(w io.Writer) {
	g.stats.Lock()
	last := g.stats.lastRevoke
	g.stats.Unlock()
	fmt.Fprintf(w, "# HELP printgate_revocation_apply_seconds Time from a revocation request to the peer off the device with its connections closed (last revocation).\n")
	fmt.Fprintf(w, "# TYPE printgate_revocation_apply_seconds gauge\n")
	fmt.Fprintf(w, "printgate_revocation_apply_seconds %g\n", last.Seconds())
}
