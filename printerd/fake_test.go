package printerd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// fakePrinter is a Printer that records what it is sent and changes state as told.
type fakePrinter struct {
	mu   sync.Mutex
	st   marlin.Status
	hist []marlin.Temps
	sent []string
	subs map[int]chan marlin.Event
	next int
	job  []byte // content of the started job
	// filter is the controller's Filter (the same policy), as the daemon wires it.
	filter marlin.Filter
}

func newFakePrinter() *fakePrinter {
	bed := marlin.Temp{Actual: 21.5, Target: 0}
	f := &fakePrinter{subs: map[int]chan marlin.Event{}}
	f.st = marlin.Status{Name: "mk3", State: marlin.Operational, Port: "/dev/ttyACM0", Baud: 250000,
		Temps: marlin.Temps{Time: time.Unix(1700000000, 0), Tools: []marlin.Temp{{Actual: 22, Target: 0}}, Bed: &bed}}
	for i := range 5 {
		t := f.st.Temps
		t.Time = t.Time.Add(time.Duration(i-5) * 2 * time.Second)
		f.hist = append(f.hist, t)
	}
	return f
}

func (f *fakePrinter) Status() marlin.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	if st.Job != nil {
		j := *st.Job
		st.Job = &j
	}
	return st
}

func (f *fakePrinter) History() []marlin.Temps {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]marlin.Temps(nil), f.hist...)
}

func (f *fakePrinter) Subscribe() (<-chan marlin.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan marlin.Event, 256)
	id := f.next
	f.next++
	f.subs[id] = ch
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, id)
	}
}

func (f *fakePrinter) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// publishLocked sends an event to every subscriber. Needs f.mu.
func (f *fakePrinter) publishLocked(kind, line string) {
	e := marlin.Event{Kind: kind, Status: f.st, Line: line}
	for _, ch := range f.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func (f *fakePrinter) setState(st marlin.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.State = st
	f.publishLocked("state", "")
}

func (f *fakePrinter) setTemps(tool, target float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Temps.Tools[0] = marlin.Temp{Actual: tool, Target: target}
	f.st.Temps.Time = f.st.Temps.Time.Add(2 * time.Second)
	f.hist = append(f.hist, f.st.Temps)
	f.publishLocked("temps", "")
}

func (f *fakePrinter) recv(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishLocked("log", "Recv: "+line)
}

func (f *fakePrinter) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

func (f *fakePrinter) Connect() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.State = marlin.Operational
	f.publishLocked("state", "")
	return nil
}

func (f *fakePrinter) Disconnect() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.State = marlin.Disconnected
	f.publishLocked("state", "")
	return nil
}

var errFakeNotConnected = errors.New("printer not connected")

func (f *fakePrinter) Send(ctx context.Context, line string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !operational(f.st.State) {
		return errFakeNotConnected
	}
	if f.filter != nil {
		l, err := policy.Parse(line)
		if err == nil {
			err = f.filter.Check(l, f.st)
		}
		if err != nil {
			return err
		}
	}
	f.sent = append(f.sent, line)
	f.publishLocked("log", "Send: "+line)
	return nil
}

func (f *fakePrinter) Emergency() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, "M112")
	f.st.State = marlin.Halted
	f.publishLocked("state", "")
	return nil
}

func (f *fakePrinter) Start(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	b := make([]byte, size)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st.State != marlin.Operational {
		return errors.New("printer busy")
	}
	f.job = b
	f.st.State = marlin.Printing
	f.st.Job = &marlin.Job{File: name, Size: size, Started: time.Now(), Estimate: 10 * time.Minute, Left: 10 * time.Minute}
	f.publishLocked("state", "")
	return nil
}

// progress moves the job on; done finishes it.
func (f *fakePrinter) progress(pos int64, done bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Job.Pos = pos
	f.st.Job.Elapsed += time.Minute
	f.st.Job.Left = 9 * time.Minute
	if done {
		f.st.Job.Done = true
		f.st.Job.Left = 0
		f.st.State = marlin.Operational
		f.publishLocked("state", "")
		return
	}
	f.publishLocked("job", "")
}

func (f *fakePrinter) Pause() error  { return f.to(marlin.Printing, marlin.Paused, false) }
func (f *fakePrinter) Resume() error { return f.to(marlin.Paused, marlin.Printing, false) }
func (f *fakePrinter) Cancel() error { return f.to("", marlin.Operational, true) }

func (f *fakePrinter) to(from, to marlin.State, cancel bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if from != "" && f.st.State != from {
		return errors.New("no job running")
	}
	f.st.State = to
	if cancel && f.st.Job != nil {
		f.st.Job.Cancelled = true
	}
	f.publishLocked("state", "")
	return nil
}

// fakeIdentity maps addresses to callers; keys are peer → key → role.
type fakeIdentity struct {
	mu    sync.Mutex
	peers map[netip.Addr]Caller
	keys  map[string]map[string]enroll.Role
}

func (f *fakeIdentity) WhoIs(a netip.Addr) (Caller, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.peers[a]
	return c, ok
}

func (f *fakeIdentity) CheckAPIKey(peer, key string) (enroll.Role, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, r := range f.keys[peer] {
		if keyEqual(k, key) {
			return r, true
		}
	}
	return "", false
}

// fakeDevices is the roster for the admin pages; RotateAPIKey issues keys into the identity.
type fakeDevices struct {
	id      *fakeIdentity
	mu      sync.Mutex
	peers   []enroll.Peer
	revoked []string
	n       int
}

func (d *fakeDevices) Peers() []enroll.PeerView {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]enroll.PeerView, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p.View(time.Now()))
	}
	return out
}

func (d *fakeDevices) Enroll(req enroll.Request) (*enroll.Enrollment, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.Name == "" || strings.ContainsAny(req.Name, " /<") {
		return nil, enroll.ErrInvalid
	}
	p := enroll.Peer{Name: req.Name, Role: req.Role, State: enroll.Pending, IPv4: netip.MustParseAddr("10.99.0.50"), ExpiresAt: time.Now().Add(time.Hour)}
	d.peers = append(d.peers, p)
	return &enroll.Enrollment{Peer: p, Config: "[Interface]\nPrivateKey = x\nAddress = 10.99.0.50/32\n", APIKey: "fresh-api-key-" + req.Name}, nil
}

func (d *fakeDevices) Revoke(name string) (enroll.Peer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.peers {
		if p.Name == name {
			d.peers[i].State = enroll.Revoked
			d.revoked = append(d.revoked, name)
			return d.peers[i], nil
		}
	}
	return enroll.Peer{}, enroll.ErrNotFound
}

func (d *fakeDevices) RotateAPIKey(name string, role enroll.Role) (string, error) {
	d.mu.Lock()
	d.n++
	key := "appkey-" + name + "-" + string(rune('a'+d.n))
	d.mu.Unlock()
	d.id.mu.Lock()
	defer d.id.mu.Unlock()
	d.id.keys[name] = map[string]enroll.Role{key: role}
	return key, nil
}

// memAudit keeps records in memory.
type memAudit struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (a *memAudit) Append(ctx context.Context, r audit.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.Seq = uint64(len(a.recs) + 1)
	a.recs = append(a.recs, r)
	return nil
}

func (a *memAudit) Tail(n int) ([]audit.Record, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n > len(a.recs) {
		n = len(a.recs)
	}
	return append([]audit.Record(nil), a.recs[len(a.recs)-n:]...), nil
}

func (a *memAudit) actions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, r := range a.recs {
		out = append(out, r.Action)
	}
	return out
}

// Test addresses: the gateway, one printer, and peers of each role.
var (
	gwAddr       = netip.MustParseAddr("10.99.0.1")
	printerAddr  = netip.MustParseAddr("10.99.0.11")
	adminAddr    = netip.MustParseAddr("10.99.0.2")
	operatorAddr = netip.MustParseAddr("10.99.0.3")
	viewerAddr   = netip.MustParseAddr("10.99.0.4")
	strangerAddr = netip.MustParseAddr("10.99.0.9")
)

// harness is a Server with one fake printer "mk3", a real file store and a real policy.
type harness struct {
	t       testing.TB
	s       *Server
	pr      *fakePrinter
	store   *files.Store
	dir     string // holds the uploads root "uploads" and nothing else
	id      *fakeIdentity
	devices *fakeDevices
	audit   *memAudit
}

func newHarness(t testing.TB, mod ...func(*Config)) *harness {
	t.Helper()
	pol, err := policy.New(policy.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := files.New(files.Config{Dir: filepath.Join(dir, "uploads"), MaxSize: 1 << 20, Check: pol.CheckFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	id := &fakeIdentity{
		peers: map[netip.Addr]Caller{
			adminAddr:    {Name: "alice", Role: enroll.Admin},
			operatorAddr: {Name: "oscar", Role: enroll.Operator},
			viewerAddr:   {Name: "vera", Role: enroll.Viewer},
		},
		keys: map[string]map[string]enroll.Role{
			"alice": {"alice-key": enroll.Admin, "alice-viewer-key": enroll.Viewer},
			"oscar": {"oscar-key": enroll.Operator},
			"vera":  {"vera-key": enroll.Viewer, "vera-admin-key": enroll.Admin},
		},
	}
	h := &harness{t: t, pr: newFakePrinter(), store: store, dir: dir, id: id, audit: &memAudit{}}
	h.pr.filter = pol
	h.devices = &fakeDevices{id: id, peers: []enroll.Peer{
		{Name: "alice", Role: enroll.Admin, State: enroll.Active, IPv4: adminAddr, LastHandshake: time.Now().Add(-30 * time.Second), RxBytes: 1234},
		{Name: "oscar", Role: enroll.Operator, State: enroll.Active, IPv4: operatorAddr, Clone: true},
	}}
	cfg := Config{
		Printers:   map[string]PrinterConfig{"mk3": {Printer: h.pr, Files: store, Policy: pol}},
		Identity:   id,
		Devices:    h.devices,
		Audit:      h.audit,
		Hosts:      []string{"printgate.internal"},
		GatewayURL: "http://10.99.0.1",
		MaxUpload:  1 << 20,
		Logf:       t.Logf,
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h.s = s
	return h
}

// req is one test request.
type req struct {
	method, target string
	from           netip.Addr // peer address
	to             netip.Addr // local (face) address; zero: the printer face
	body           string
	ctype          string // default application/json when body is set
	header         map[string]string
	noCSRF         bool // leave out X-Printgate
}

// do runs r against the face its local address names.
func (h *harness) do(r req) *httptest.ResponseRecorder {
	h.t.Helper()
	to := r.to
	if !to.IsValid() {
		to = printerAddr
	}
	hr := httptest.NewRequest(r.method, "http://"+to.String()+r.target, strings.NewReader(r.body))
	hr = hr.WithContext(WithConnAddrs(hr.Context(), r.from, to))
	if r.body != "" {
		ct := r.ctype
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	if !r.noCSRF {
		hr.Header.Set("X-Printgate", "1")
	}
	for k, v := range r.header {
		if k == "Host" {
			hr.Host = v
			continue
		}
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	var handler http.Handler
	if to == gwAddr {
		handler = h.s.GatewayHandler()
	} else {
		handler, _ = h.s.PrinterHandler("mk3")
	}
	handler.ServeHTTP(w, hr)
	return w
}

// decode parses a JSON body into a generic map.
func decode(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	return m
}

// multipartBody builds an upload form; fields before the file unless after is set.
type formPart struct {
	name, filename, value string
}

func multipartBody(boundary string, parts []formPart, terminate bool) string {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n")
		if p.filename != "" {
			b.WriteString(`Content-Disposition: form-data; name="` + p.name + `"; filename="` + p.filename + "\"\r\n")
			b.WriteString("Content-Type: application/octet-stream\r\n")
		} else {
			b.WriteString(`Content-Disposition: form-data; name="` + p.name + "\"\r\n")
		}
		b.WriteString("\r\n" + p.value + "\r\n")
	}
	if terminate {
		b.WriteString("--" + boundary + "--\r\n")
	}
	return b.String()
}

const testBoundary = "----printgateTestBoundary7MA4YWxk"

func uploadReq(from netip.Addr, target string, parts []formPart, terminate bool) req {
	return req{method: "POST", target: target, from: from, body: multipartBody(testBoundary, parts, terminate),
		ctype: "multipart/form-data; boundary=" + testBoundary}
}

const goodGcode = "; generated by PrusaSlicer\nG28\nG1 X10 Y10 F3000\nM104 S200\nG1 X20 E1\n"

// waitFor polls cond with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// addrListener hands out connections that claim fixed tunnel addresses, as netstack
// listeners would, over real loopback sockets.
type addrListener struct {
	net.Listener
	remote, local netip.Addr
}

func (l addrListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return addrConn{c, l.remote, l.local}, nil
}

type addrConn struct {
	net.Conn
	remote, local netip.Addr
}

func (c addrConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.remote, 40000))
}
func (c addrConn) LocalAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.local, 80))
}

// serveAs serves a face on loopback where every connection claims to come from peer.
func (h *harness) serveAs(peer, local netip.Addr, serve func(net.Listener) error) string {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(addrListener{ln, peer, local}) }()
	h.t.Cleanup(func() {
		h.s.Close()
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// nopFiles is an empty store for config tests.
type nopFiles struct{}

func (nopFiles) Put(ctx context.Context, folder, name string, r io.Reader) (files.FileInfo, error) {
	return files.FileInfo{}, errors.New("read-only")
}
func (nopFiles) MkdirAll(string) error                       { return errors.New("read-only") }
func (nopFiles) Stat(string) (files.FileInfo, error)         { return files.FileInfo{}, fs.ErrNotExist }
func (nopFiles) List(string, bool) ([]files.FileInfo, error) { return nil, nil }
func (nopFiles) Open(string) (*files.File, error)            { return nil, fs.ErrNotExist }
func (nopFiles) Delete(string) error                         { return fs.ErrNotExist }

func nopPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
