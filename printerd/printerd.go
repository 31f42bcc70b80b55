// Package printerd serves printers inside the tunnel: the OctoPrint-compatible API on each
// printer's address, the web UI, native JSON API and live push on the gateway's address, a
// webcam proxy and a raw serial bridge, all behind one route → role table.
//
// The package never opens a socket of its own: the caller hands it net.Listeners (tunnel
// listeners from the netstack) and it serves HTTP or the bridge on them. Identity comes only
// from the remote address of the connection (Config.Identity), never from a header.
//
// A request passes these steps, in order (see auth.go):
//
//  1. ConnContext records the connection's remote and local tunnel addresses.
//  2. The Host header must name this gateway: the address the connection arrived on (with an
//     optional port) or one of Config.Hosts; else 421 (DNS rebinding).
//  3. The route table gives the role the route needs; the peer comes from Identity.WhoIs on
//     the remote address (unknown → 403), an API key (X-Api-Key, Bearer, ?apikey=) may only
//     narrow the peer's role and must be that peer's (else 403).
//  4. State-changing methods need a same-origin Origin when one is sent and a non-cookie
//     header (X-Api-Key, Authorization or X-Printgate), else 403.
//  5. The handler runs and returns an error; writeError maps it to a status and JSON body.
//     G-code from any handler passes the printer's Policy with the caller's role and then the
//     controller's own filter.
//
// The files follow the faces, in three layers: the Server (life cycle, request pipeline), the
// actions the faces share (a view of the Server), and the faces (views of the actions).
// routes.go is the one route table; auth.go the checks before a handler; api.go what both
// faces share of HTTP (the error mapping, JSON bodies, downloads); ops.go the printer actions
// (type actions, which also holds the file actions of api.go and upload.go). The
// OctoPrint-compatible face (type octoprint) is api_octoprint.go, octojson.go, sockjs.go, and
// opUpload and the app-keys plugin in upload.go and appkeys.go; the native face (type native)
// is api_native.go, push.go, ui.go, and the app-key grants and /metrics in appkeys.go and
// metrics.go. The serial bridge is a face of its own (type bridge, bridge.go); the webcam
// proxy (webcam.go) serves both HTTP faces from the Server.
package printerd

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// Printer is what the server needs of one printer; *marlin.Controller satisfies it. The faces
// only watch a printer (Monitor); the printer actions both faces share (ops.go) and the serial
// bridge drive it through its Link and its Jobs.
type Printer interface {
	Monitor
	Link
	Jobs
}

// Monitor is a printer as the faces show it.
type Monitor interface {
	Status() marlin.Status
	History() []marlin.Temps
	Subscribe() (<-chan marlin.Event, func())
}

// Link is the printer's connection: opened, closed, sent a line, or stopped at once (M112).
type Link interface {
	Connect() error
	Disconnect() error
	Send(ctx context.Context, line string) error
	Emergency() error
}

// Jobs streams a file to the printer and pauses, resumes or cancels it.
type Jobs interface {
	Start(ctx context.Context, name string, r io.ReaderAt, size int64) error
	Pause() error
	Resume() error
	Cancel() error
}

var _ Printer = (*marlin.Controller)(nil)

// Files is one printer's upload store; *files.Store satisfies it.
type Files interface {
	Put(ctx context.Context, folder, name string, r io.Reader) (files.FileInfo, error)
	MkdirAll(folder string) error
	Stat(p string) (files.FileInfo, error)
	List(folder string, recursive bool) ([]files.FileInfo, error)
	Open(p string) (*files.File, error)
	Delete(p string) error
}

var _ Files = (*files.Store)(nil)

// Policy is one printer's safety policy as the API edge uses it; *policy.Policy satisfies it.
type Policy interface {
	CheckAs(r policy.Role, l gcode.Line, s marlin.Status) error
	CheckLine(r policy.Role, text string, s marlin.Status) (gcode.Line, error)
	Limits() policy.Limits
}

var _ Policy = (*policy.Policy)(nil)

// Caller is the peer behind a tunnel address.
type Caller struct {
	Name      string
	Role      enroll.Role
	PublicKey wgtypes.Key
}

// Identity maps tunnel addresses to peers and checks API keys.
type Identity interface {
	// WhoIs returns the live peer that owns the tunnel address a.
	WhoIs(a netip.Addr) (Caller, bool)
	// CheckAPIKey reports whether key is an API key of the peer named peer, and the role the
	// key carries (at most the peer's role). It compares in constant time.
	CheckAPIKey(peer, key string) (enroll.Role, bool)
}

// Devices is the roster as the admin pages see it. Enroll, Revoke and RotateAPIKey match
// *enroll.Registry; the daemon wraps them so that a change reaches the WireGuard device
// (and a revocation closes the peer's connections) before they return.
type Devices interface {
	// Peers returns every device, revoked ones included, as `printgate peers --json` shows
	// them (in a mesh: every device of the mesh, the same on every gateway).
	Peers() []enroll.PeerView
	// Enroll adds a peer and returns its one-time secrets.
	Enroll(req enroll.Request) (*enroll.Enrollment, error)
	// Revoke removes a peer for good.
	Revoke(name string) (enroll.Peer, error)
	// RotateAPIKey gives the peer a new API key narrowed to role and returns it once.
	RotateAPIKey(name string, role enroll.Role) (string, error)
}

// Mesh is the gateway's mesh as the admin API reaches it.
type Mesh interface {
	// Printers are the printers of the mesh's other gateways, as this gateway's replica
	// lists them: the native printer list names them so that a client (the web UI,
	// `printgate connect`) finds every printer of the mesh from its home gateway.
	Printers() []MeshPrinter
	// Invite makes a join token for a new gateway valid for ttl (zero: the gateway's default)
	// and returns its text and expiry. An error wrapping enroll.ErrUnavailable means the mesh
	// has no quorum; enroll.ErrInvalid a bad ttl.
	Invite(ctx context.Context, ttl time.Duration) (token string, expires time.Time, err error)
}

// MeshPrinter is a printer on another gateway of the mesh: reached through this gateway (the
// relay), served and authorized by its own gateway.
type MeshPrinter struct {
	Name     string `json:"name"`
	Gateway  string `json:"gateway"`
	Address  string `json:"address,omitempty"`
	Address6 string `json:"address6,omitempty"`
	// GatewayAddress is the printer's gateway's tunnel address: its web UI.
	GatewayAddress string `json:"gateway_address,omitempty"`
}

// Audit is the audit log; *audit.Log satisfies it.
type Audit interface {
	Append(ctx context.Context, r audit.Record) error
	Tail(n int) ([]audit.Record, error)
}

var _ Audit = (*audit.Log)(nil)

// PrinterConfig is one printer.
type PrinterConfig struct {
	// Printer is the controller. Required.
	Printer Printer
	// Files is the printer's upload store. Required.
	Files Files
	// Policy checks every line the API builds or relays, with the caller's role, before the
	// controller's own filter sees it. Required.
	Policy Policy
	// Webcam is the printer's camera; the zero value means none.
	Webcam Webcam
	// Model names the printer in the printer profile; empty means "Marlin printer".
	Model string
	// Addrs are the printer's tunnel addresses, listed by the native API (`printgate connect`
	// resolves printer names with them); empty lists none.
	Addrs []netip.Addr
	// UUID is the printer's UPnP UUID in /api/settings plugins.discovery.upnpUuid, which Home
	// Assistant keys the printer's device on, so it must not change between restarts. Empty
	// derives one from the printer's name and Config.GatewayURL (see DeriveUUID).
	UUID string
}

// DeriveUUID returns a stable UUID (RFC 9562 version 8, name-based on SHA-256) for the printer
// name under seed, e.g. the gateway's public key: the same arguments always give the same UUID.
func DeriveUUID(seed []byte, name string) string {
	h := sha256.New()
	h.Write([]byte("printgate printer uuid\x00"))
	h.Write(seed)
	h.Write([]byte{0})
	h.Write([]byte(name))
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8
	b[8] = b[8]&0x3f | 0x80 // variant RFC 9562
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Webcam names a camera daemon's URLs. Both must be http URLs on a loopback address
// (127.0.0.0/8, ::1 or localhost): the camera never listens where the LAN could reach it, and
// the server proxies it into the tunnel. Empty means not available.
type Webcam struct {
	Stream   string // MJPEG (multipart/x-mixed-replace), e.g. http://127.0.0.1:8080/?action=stream
	Snapshot string // one JPEG, e.g. http://127.0.0.1:8080/?action=snapshot
}

// Config configures a Server. Fields documented "required" must be set; every other zero
// value means the documented default.
type Config struct {
	// Printers are the printers by name. Names are what the native API and web UI use.
	Printers map[string]PrinterConfig
	// Identity maps remote addresses to peers. Required.
	Identity Identity
	// Devices backs the admin device pages and app-key grants; nil disables them (503).
	Devices Devices
	// Mesh backs the admin's join invitations; nil disables them (503).
	Mesh Mesh
	// Audit records every state-changing action; nil records nothing.
	Audit Audit
	// VerifyAudit verifies the whole audit chain for the audit page; nil means not available.
	VerifyAudit func() (audit.Head, error)
	// Hosts are DNS names of this gateway accepted in the Host header besides the tunnel
	// address the connection arrived on, e.g. "printgate.internal". Compared without case.
	Hosts []string
	// GatewayURL is the web UI's base URL (http://<gateway tunnel address>) used in the
	// app-keys auth_dialog link; empty leaves the link out.
	GatewayURL string
	// MaxUpload caps one upload's file in bytes; zero means files.DefaultMaxSize. The request
	// body may be at most 1 MiB larger (form fields and multipart framing).
	MaxUpload int64
	// MaxConnsPerDevice caps the open HTTP connections of one device (one peer; an address
	// no peer owns counts as one device); zero means DefaultMaxConnsPerDevice. MaxConns caps
	// them for the whole server; zero means DefaultMaxConns. A connection over a cap is
	// answered 429 and closed before any HTTP is read.
	MaxConnsPerDevice, MaxConns int
	// MaxUploadsPerDevice caps one device's uploads in progress; zero means
	// DefaultMaxUploadsPerDevice. MaxUploads caps them for the whole server; zero means
	// DefaultMaxUploads. An upload over a cap is answered 429 before its body is read.
	MaxUploadsPerDevice, MaxUploads int
	// MinBodyRate is the slowest a request body may arrive, in bytes per second averaged
	// from its first byte, checked once BodyIdle has passed; zero means DefaultMinBodyRate.
	// BodyIdle is the longest a body may send nothing; zero means DefaultBodyIdle. A slower
	// body ends its request with 408 and its connection.
	MinBodyRate int64
	BodyIdle    time.Duration
	// Metrics, when set, writes extra Prometheus text lines (e.g. revocation_apply_seconds)
	// at the end of /metrics.
	Metrics func(w io.Writer)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logf logs at verbose level; nil discards.
	Logf func(format string, args ...any)
	// Errorf logs errors: the cause of every 500 (with the error id its body carries), failed
	// audit appends, a failed print after upload. The daemon logs it at the default level; nil
	// discards.
	Errorf func(format string, args ...any)
}

// Server serves the gateway and printer faces. Create it with New; it starts nothing until a
// Serve method is called with a listener.
//
// Its own methods are the life cycle (this file), the request pipeline (auth.go, api.go) and
// the webcam proxy; the shared actions are methods of actions, the faces' handlers methods of
// octoprint, native and bridge, all views of the Server.
type Server struct {
	cfg      Config
	logf     func(string, ...any)
	errorf   func(string, ...any)
	now      func() time.Time
	printers map[string]*printer
	names    []string // sorted printer names
	gateway  http.Handler
	appkeys  *appKeys
	sessions *sessions
	metrics  *metrics
	limits   *limits

	ctx    context.Context // canceled by Close: ends push sockets and streams
	cancel context.CancelFunc

	mu struct {
		sync.Mutex
		closed    bool
		servers   []*http.Server
		listeners []net.Listener // bridge listeners
	}
	wg sync.WaitGroup // bridge goroutines
}

// printer is one printer's runtime state beside its config.
type printer struct {
	name string
	PrinterConfig
	handler http.Handler

	mu struct {
		sync.Mutex
		selected string      // OctoPrint's selected file; "" none
		job      *files.File // the open file of the last started job
		jobPath  string
	}
	bridge struct {
		sync.Mutex
		busy bool
	}
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Identity == nil {
		return nil, errors.New("printerd: config: Identity is required")
	}
	if cfg.MaxUpload == 0 {
		cfg.MaxUpload = files.DefaultMaxSize
	}
	for _, d := range []struct {
		v   *int
		def int
	}{{&cfg.MaxConnsPerDevice, DefaultMaxConnsPerDevice}, {&cfg.MaxConns, DefaultMaxConns},
		{&cfg.MaxUploadsPerDevice, DefaultMaxUploadsPerDevice}, {&cfg.MaxUploads, DefaultMaxUploads}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MinBodyRate == 0 {
		cfg.MinBodyRate = DefaultMinBodyRate
	}
	if cfg.BodyIdle == 0 {
		cfg.BodyIdle = DefaultBodyIdle
	}
	if cfg.MaxConnsPerDevice < 0 || cfg.MaxConns < 0 || cfg.MaxUploadsPerDevice < 0 || cfg.MaxUploads < 0 || cfg.MinBodyRate < 0 || cfg.BodyIdle < 0 {
		return nil, errors.New("printerd: config: negative limit")
	}
	if cfg.MaxUpload < 0 {
		return nil, fmt.Errorf("printerd: config: negative MaxUpload %d", cfg.MaxUpload)
	}
	s := &Server{
		cfg:      cfg,
		logf:     cfg.Logf,
		now:      cfg.Now,
		printers: map[string]*printer{},
		sessions: newSessions(),
		metrics:  newMetrics(),
		limits: &limits{
			conns:   newCounter("connections", cfg.MaxConnsPerDevice, cfg.MaxConns),
			uploads: newCounter("uploads", cfg.MaxUploadsPerDevice, cfg.MaxUploads),
		},
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	s.errorf = cfg.Errorf
	if s.errorf == nil {
		s.errorf = func(string, ...any) {}
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.appkeys = newAppKeys(s.now)
	for name, pc := range cfg.Printers {
		if !validPrinterName(name) {
			return nil, fmt.Errorf("printerd: config: printer name %q: use 1-32 letters, digits, '-' or '_'", name)
		}
		if pc.Printer == nil || pc.Files == nil || pc.Policy == nil {
			return nil, fmt.Errorf("printerd: config: printer %s: Printer, Files and Policy are required", name)
		}
		for _, u := range []string{pc.Webcam.Stream, pc.Webcam.Snapshot} {
			if err := checkWebcamURL(u); err != nil {
				return nil, fmt.Errorf("printerd: config: printer %s: %w", name, err)
			}
		}
		if pc.UUID == "" {
			pc.UUID = DeriveUUID([]byte(cfg.GatewayURL), name)
		}
		p := &printer{name: name, PrinterConfig: pc}
		s.printers[name] = p
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.gateway = s.handler(faceGateway, nil)
	for _, p := range s.printers {
		p.handler = s.handler(facePrinter, p)
	}
	return s, nil
}

func validPrinterName(n string) bool {
	if n == "" || len(n) > 32 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// GatewayHandler returns the gateway face (web UI, native API, push, metrics) as an
// http.Handler. The request context must carry the connection addresses (see ServeGateway);
// a request without them is refused as from an unknown peer.
func (s *Server) GatewayHandler() http.Handler { return s.gateway }

// PrinterHandler returns the OctoPrint-compatible face of the named printer.
func (s *Server) PrinterHandler(name string) (http.Handler, bool) {
	p, ok := s.printers[name]
	if !ok {
		return nil, false
	}
	return p.handler, true
}

// ServeGateway serves the web UI, native JSON API and live push on l (port 80 of the
// gateway's tunnel address) until Close. It returns nil after Close.
func (s *Server) ServeGateway(l net.Listener) error { return s.serve(l, s.gateway) }

// ServePrinter serves the OctoPrint-compatible API of the named printer on l (port 80 of the
// printer's tunnel address) until Close. It returns nil after Close.
func (s *Server) ServePrinter(name string, l net.Listener) error {
	p, ok := s.printers[name]
	if !ok {
		l.Close()
		return fmt.Errorf("printerd: serve printer %q: no such printer", name)
	}
	return s.serve(l, p.handler)
}

func (s *Server) serve(l net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       connContext,
		ErrorLog:          nil,
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		l.Close()
		return fmt.Errorf("printerd: serve: %w", net.ErrClosed)
	}
	s.mu.servers = append(s.mu.servers, srv)
	s.mu.Unlock()
	err := srv.Serve(limitListener{Listener: l, s: s})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every server and bridge, ends push sockets and streams, and closes the open job
// files. A second Close returns an error wrapping net.ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return fmt.Errorf("printerd: close: %w", net.ErrClosed)
	}
	s.mu.closed = true
	servers, listeners := s.mu.servers, s.mu.listeners
	s.mu.Unlock()
	s.limits.stop()
	s.cancel()
	for _, l := range listeners {
		l.Close()
	}
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		cancel()
	}
	s.wg.Wait()
	for _, p := range s.printers {
		p.mu.Lock()
		if p.mu.job != nil {
			p.mu.job.Close()
			p.mu.job = nil
		}
		p.mu.Unlock()
	}
	return nil
}

// connKey keys the connection addresses in a request context.
type connKey struct{}

// connAddrs are a connection's tunnel addresses.
type connAddrs struct {
	remote netip.Addr
	local  netip.Addr
}

// connContext records the connection's addresses; identity comes from remote only.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return WithConnAddrs(ctx, addrOf(c.RemoteAddr()), addrOf(c.LocalAddr()))
}

// WithConnAddrs returns ctx carrying a connection's remote and local tunnel addresses, for
// callers that serve GatewayHandler or PrinterHandler on their own http.Server.
func WithConnAddrs(ctx context.Context, remote, local netip.Addr) context.Context {
	return context.WithValue(ctx, connKey{}, connAddrs{remote: remote.Unmap(), local: local.Unmap()})
}

func addrOf(a net.Addr) netip.Addr {
	if a == nil {
		return netip.Addr{}
	}
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func addrsFrom(ctx context.Context) connAddrs {
	a, _ := ctx.Value(connKey{}).(connAddrs)
	return a
}

// absURL is http://<Host><path> for Location headers and refs. The Host header has passed
// checkHost, so it is an address or a configured name.
func absURL(r *http.Request, path string) string {
	u := url.URL{Scheme: "http", Host: r.Host, Path: path}
	return u.String()
}
