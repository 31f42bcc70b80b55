package printerd

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/printgate/printgate/enroll"
)

// handler builds one face's handler from the route table. p is the printer of a printer face.
func (s *Server) handler(f face, p *printer) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		if rt.face&f == 0 {
			continue
		}
		mux.Handle(rt.pattern, s.wrap(rt, p))
	}
	// Everything else: the peer must still be known before it learns that a path is missing.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := s.authenticate(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		s.writeError(w, r, errorf(http.StatusNotFound, "no such route: %s %s", r.Method, r.URL.Path))
	})
	return s.front(mux, p)
}

// front applies the checks every request of either face gets before routing: security
// headers and the Host check. p is the printer of a printer face, nil for the gateway's.
func (s *Server) front(next http.Handler, p *printer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header(), r.Host)
		if b := s.boundBody(w, r); b != nil {
			defer b.finish()
		}
		if err := s.checkHost(r, p); err != nil {
			s.metrics.request("host", http.StatusMisdirectedRequest)
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// setSecurityHeaders sets the headers of every response: a strict CSP (no inline script or
// style, connections only to this origin), nosniff, no framing, no referrer.
func setSecurityHeaders(h http.Header, host string) {
	csp := "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'"
	if validHostHeader(host) {
		csp += " ws://" + host
	}
	csp += "; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// validHostHeader reports whether h is made only of characters that may appear in a
// host[:port], so that it can be placed in a header value.
func validHostHeader(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// checkHost refuses a Host header that is neither the tunnel address the connection arrived
// on (with an optional port) nor a configured name of this gateway nor, on a printer's face
// (p not nil), the printer's own name, which `printgate connect`'s SOCKS proxy resolves: a
// page on another site that rebinds its DNS name to a tunnel address still sends its own name.
func (s *Server) checkHost(r *http.Request, p *printer) error {
	host, ok := hostOnly(r.Host)
	if ok {
		if a, err := netip.ParseAddr(host); err == nil {
			if local := addrsFrom(r.Context()).local; local.IsValid() && a.Unmap() == local && a.Zone() == "" {
				return nil
			}
		} else {
			if p != nil && strings.EqualFold(p.name, host) {
				return nil
			}
			for _, n := range s.cfg.Hosts {
				if strings.EqualFold(n, host) {
					return nil
				}
			}
		}
	}
	return errorf(http.StatusMisdirectedRequest, "host not served here: use the tunnel address of this gateway or printer")
}

// hostOnly strips the optional port from a Host header (and the brackets of an IPv6
// literal).
func hostOnly(h string) (string, bool) {
	if !validHostHeader(h) {
		return "", false
	}
	if strings.HasPrefix(h, "[") {
		end := strings.Index(h, "]")
		if end < 0 || strings.ContainsAny(h[1:end], "[") || strings.ContainsAny(h[end+1:], "[]") {
			return "", false
		}
		rest := h[end+1:]
		if rest != "" && !validPort(strings.TrimPrefix(rest, ":")) || rest != "" && rest[0] != ':' {
			return "", false
		}
		return h[1:end], true
	}
	if strings.ContainsAny(h, "[]") {
		return "", false
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if strings.Count(h, ":") > 1 || !validPort(h[i+1:]) {
			return "", false
		}
		return h[:i], true
	}
	return h, true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n > 0 && n < 65536
}

// wrap authorizes one route and runs its handler.
func (s *Server) wrap(rt route, p *printer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		err := s.authorize(rec, r, rt, p)
		if err != nil {
			if code, _ := statusOf(err); code == http.StatusForbidden {
				s.metrics.denied()
			}
			s.writeError(rec, r, err)
		}
		s.metrics.request(rt.pattern, rec.code())
	})
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request, rt route, p *printer) error {
	caller, role, err := s.authenticate(r)
	if err != nil {
		return err
	}
	if !role.Includes(rt.need) {
		return errorf(http.StatusForbidden, "forbidden: this needs the %s role, the request has %s", rt.need, role)
	}
	if stateChanging(r.Method) {
		if err := checkCSRF(r, jsonProof[rt.pattern]); err != nil {
			return err
		}
	}
	q := &request{w: w, r: r, caller: caller, role: role, p: p, remote: addrsFrom(r.Context()).remote}
	if name := r.PathValue("printer"); name != "" && p == nil {
		if q.p = s.printers[name]; q.p == nil {
			return errorf(http.StatusNotFound, "no printer named %q", name)
		}
	}
	return rt.h(s, q)
}

// authenticate finds the peer from the connection's remote address and narrows its role by
// an API key when one is presented.
func (s *Server) authenticate(r *http.Request) (Caller, enroll.Role, error) {
	remote := addrsFrom(r.Context()).remote
	if !remote.IsValid() {
		return Caller{}, "", errorf(http.StatusForbidden, "forbidden: unknown peer")
	}
	c, ok := s.cfg.Identity.WhoIs(remote)
	if !ok || !c.Role.Valid() {
		return Caller{}, "", errorf(http.StatusForbidden, "forbidden: unknown peer (not enrolled, or revoked)")
	}
	key, present := apiKey(r)
	if !present {
		return c, c.Role, nil
	}
	kr, ok := s.cfg.Identity.CheckAPIKey(c.Name, key)
	if !ok || !kr.Valid() {
		return Caller{}, "", errorf(http.StatusForbidden, "forbidden: invalid API key for this device")
	}
	if !c.Role.Includes(kr) {
		kr = c.Role // a key never widens
	}
	return c, kr, nil
}

// apiKey returns the API key of a request, checked in OctoPrint's order: ?apikey=, X-Api-Key,
// Authorization: Bearer. present is true when any of them is given, even empty.
func apiKey(r *http.Request) (key string, present bool) {
	if vs, ok := r.URL.Query()["apikey"]; ok {
		if len(vs) > 0 {
			return vs[0], true
		}
		return "", true
	}
	if vs, ok := r.Header["X-Api-Key"]; ok {
		return strings.TrimSpace(vs[0]), true
	}
	if a := r.Header.Get("Authorization"); a != "" {
		if k, ok := strings.CutPrefix(a, "Bearer "); ok {
			return strings.TrimSpace(k), true
		}
	}
	return "", false
}

// stateChanging reports whether a method may change state.
func stateChanging(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// jsonProof are the routes where a JSON content type stands in for the non-cookie header:
// Cura asks for an app key before it has one, with no X-Api-Key. A cross-site page cannot send
// application/json without a CORS preflight (never granted), and the handler refuses any other
// content type; the result is only a request an admin must approve, for the asking device.
var jsonProof = map[string]bool{"POST /plugin/appkeys/request": true}

// checkCSRF guards state-changing requests against pages a browser inside the tunnel
// visits: an Origin, when sent (browsers send one on every POST and DELETE; slicers send
// none), must be this very origin, and the request must carry something a cross-site page
// cannot send without a CORS preflight, which is never granted: an X-Api-Key, Bearer
// Authorization or X-Printgate header, an API key in the query (already checked to be the peer's own), or,
// on jsonProof routes, an application/json body.
func checkCSRF(r *http.Request, jsonOK bool) error {
	if o, ok := r.Header["Origin"]; ok {
		u, err := url.Parse(o[0])
		if err != nil || u.Scheme != "http" || !strings.EqualFold(u.Host, r.Host) || u.Path != "" || u.User != nil {
			return errorf(http.StatusForbidden, "forbidden: cross-origin request (Origin %q)", clip(o[0], 80))
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return errorf(http.StatusForbidden, "forbidden: cross-site request")
	}
	// Only a Bearer Authorization counts: a browser may attach cached Basic credentials by
	// itself, as it does cookies.
	if r.Header.Get("X-Printgate") != "" || r.Header.Get("X-Api-Key") != "" || strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		return nil
	}
	if _, ok := r.URL.Query()["apikey"]; ok {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); jsonOK && err == nil && mt == "application/json" {
		return nil
	}
	return errorf(http.StatusForbidden, "forbidden: state-changing requests need an X-Api-Key or X-Printgate header")
}

// keyEqual compares secrets in constant time.
func keyEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// statusRecorder remembers the status for metrics; it passes Flush and Hijack through for
// streams and websockets.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusRecorder) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		w.status = http.StatusSwitchingProtocols
		return h.Hijack()
	}
	return nil, nil, errors.New("hijack not supported")
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
