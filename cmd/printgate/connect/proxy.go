package connect

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// The forwards. An HTTP forward is a reverse proxy (net/http/httputil) to port Port of the
// target, for slicers and apps pointed at http://127.0.0.1:PORT:
//
//  1. Host check: the request's Host must be an IP literal or "localhost" (loopback literals
//     only on a loopback listener), so a web page that rebinds its own DNS name to 127.0.0.1
//     cannot use the forward (the printer's own Host check is out of play: see 3).
//  2. Resolve the target (a printer name through the gateway) to a tunnel address.
//  3. Rewrite: URL and Host are the printer's (its Host check wants its own address); an
//     Origin that is the forward's own becomes the printer's, so the printer's same-origin
//     check holds for a browser on the forward and still refuses every other origin.
//  4. Stream: request bodies (uploads) are not buffered; responses flush at once (the SockJS
//     push); a websocket upgrade is passed through by ReverseProxy.
//  5. A Location that names the printer is turned back into the forward's.
//
// A raw forward (the serial bridge) dials the target for each connection and splices bytes.

type forwarder struct {
	c     *Client
	f     Forward
	ln    net.Listener
	conns connSet
	srv   *http.Server // nil for a raw forward

	ctx    context.Context // canceled by close: ends hijacked upgrades and raw dials
	cancel context.CancelFunc
}

// ctxKey carries a request's route from front to rewrite and modifyResponse.
type ctxKey struct{}

type route struct {
	target netip.AddrPort // the printer's tunnel address and port
	inHost string         // the Host the client sent to the forward
}

// listenForward opens a forward's listener; serve runs it.
func (c *Client) listenForward(f Forward) (*forwarder, error) {
	ln, err := net.Listen("tcp", f.Listen.String())
	if err != nil {
		return nil, fmt.Errorf("connect: forward %s: %w", f, err)
	}
	fw := &forwarder{c: c, f: f}
	fw.ln = listener{Listener: ln, s: &fw.conns}
	fw.ctx, fw.cancel = context.WithCancel(context.Background())
	if !f.Raw {
		rp := &httputil.ReverseProxy{
			Rewrite:        fw.rewrite,
			Transport:      c.http,
			FlushInterval:  -1,
			ModifyResponse: fw.modifyResponse,
			ErrorHandler:   fw.proxyError,
			ErrorLog:       log.New(logWriter(c.verbose), "connect: forward: ", 0),
		}
		fw.srv = &http.Server{
			Handler:           fw.front(rp),
			ReadHeaderTimeout: 30 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return fw.ctx },
			ErrorLog:          log.New(logWriter(c.verbose), "connect: forward: ", 0),
		}
	}
	return fw, nil
}

// Addr returns where the forward listens (its port, when Listen asked for port 0).
func (fw *forwarder) Addr() net.Addr { return fw.ln.Addr() }

func (fw *forwarder) serve() {
	if fw.srv != nil {
		fw.srv.Serve(fw.ln)
		return
	}
	for {
		conn, err := fw.ln.Accept()
		if err != nil {
			return
		}
		fw.c.wg.Add(1)
		go func() {
			defer fw.c.wg.Done()
			fw.raw(conn)
		}()
	}
}

func (fw *forwarder) raw(conn net.Conn) {
	ctx, cancel := context.WithTimeout(fw.ctx, 30*time.Second)
	up, err := fw.dialTarget(ctx)
	cancel()
	if err != nil {
		fw.c.logf("connect: forward %s: %v", fw.f, err)
		conn.Close()
		return
	}
	stop := context.AfterFunc(fw.ctx, func() { up.Close() }) // Close ends a half-closed splice too
	defer stop()
	splice(conn, up)
}

// dialTarget resolves the forward's target and dials it inside the tunnel.
func (fw *forwarder) dialTarget(ctx context.Context) (net.Conn, error) {
	a, err := fw.c.Resolve(ctx, fw.f.Target)
	if err != nil {
		return nil, err
	}
	return fw.c.Dial(ctx, netip.AddrPortFrom(a, fw.f.Port))
}

func (fw *forwarder) close() {
	fw.cancel()
	fw.ln.Close()
	if fw.srv != nil {
		fw.srv.Close()
	}
	fw.conns.closeAll()
}

// front checks the Host header and resolves the target before the proxy runs.
func (fw *forwarder) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fw.hostOK(r.Host) {
			http.Error(w, "printgate connect: Host not served here: use http://127.0.0.1:PORT or http://localhost:PORT", http.StatusMisdirectedRequest)
			return
		}
		a, err := fw.c.Resolve(r.Context(), fw.f.Target)
		if err != nil {
			http.Error(w, "printgate connect: "+err.Error(), http.StatusBadGateway)
			return
		}
		if !fw.c.Allowed(a) {
			http.Error(w, "printgate connect: "+(&NotAllowedError{Addr: a}).Error(), http.StatusBadGateway)
			return
		}
		rt := route{target: netip.AddrPortFrom(a, fw.f.Port), inHost: r.Host}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rt)))
	})
}

// hostOK accepts "localhost" and IP literals (loopback ones only on a loopback listener),
// with an optional port.
func (fw *forwarder) hostOK(h string) bool {
	host := h
	if hh, _, err := net.SplitHostPort(h); err == nil {
		host = hh
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		host = h[1 : len(h)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return false
	}
	return a.Unmap().IsLoopback() || fw.f.Exposed()
}

func (fw *forwarder) rewrite(pr *httputil.ProxyRequest) {
	printer := hostPort(pr.In.Context().Value(ctxKey{}).(route).target)
	pr.SetURL(&url.URL{Scheme: "http", Host: printer})
	pr.Out.Host = printer
	if o := pr.In.Header.Get("Origin"); o != "" && strings.EqualFold(o, "http://"+pr.In.Host) {
		pr.Out.Header.Set("Origin", "http://"+printer)
	}
	// The printer knows the caller from the tunnel; headers claiming otherwise are dropped.
	pr.Out.Header.Del("Forwarded")
	pr.Out.Header.Del("X-Forwarded-For")
	pr.Out.Header.Del("X-Forwarded-Host")
	pr.Out.Header.Del("X-Forwarded-Proto")
}

func (fw *forwarder) modifyResponse(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" || resp.Request == nil {
		return nil
	}
	rt, ok := resp.Request.Context().Value(ctxKey{}).(route)
	if !ok {
		return nil
	}
	if rest, ok := strings.CutPrefix(loc, "http://"+hostPort(rt.target)); ok && (rest == "" || rest[0] == '/') {
		resp.Header.Set("Location", "http://"+rt.inHost+rest)
	}
	return nil
}

func (fw *forwarder) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away, or connect is closing
	}
	fw.c.logf("connect: forward %s: %v", fw.f, err)
	http.Error(w, "printgate connect: "+err.Error(), http.StatusBadGateway)
}

// logWriter sends a log.Logger's lines (net/http's own complaints) to a log function.
type logWriter func(format string, args ...any)

func (w logWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
