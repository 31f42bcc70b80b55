package enroll

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// clock is a manual clock for tests: a wall clock and a monotonic one. Advance moves both
// (time passes); Set moves the wall clock alone (someone sets it, or NTP corrects it).
type clock struct {
	mu   sync.Mutex
	t    time.Time
	mono time.Duration
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.mono += d
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Reboot starts the monotonic clock again, as a restart of the machine does.
func (c *clock) Reboot() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mono = 0
}

// opts are Options on c.
func (c *clock) opts() Options { return Options{Now: c.Now, Monotonic: c.Mono} }

const testEndpoint = "gw.example.test:51820"

// newState initialises a state directory for a test.
func newState(t *testing.T, opts InitOptions) (string, Gateway) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if opts.Endpoint == "" {
		opts.Endpoint = testEndpoint
	}
	g, err := Init(dir, opts)
	if err != nil {
		t.Fatalf("Init(%s) = %v", dir, err)
	}
	return dir, g
}

// openState opens dir with clk and closes it at cleanup (a second Close is harmless there).
func openState(t *testing.T, dir string, clk *clock) *Registry {
	t.Helper()
	o := Options{Logf: t.Logf}
	if clk != nil {
		o = clk.opts()
		o.Logf = t.Logf
	}
	r, err := OpenWith(dir, o)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func mustEnroll(t *testing.T, r *Registry, req Request) *Enrollment {
	t.Helper()
	e, err := r.Enroll(req)
	if err != nil {
		t.Fatalf("Enroll(%q) = %v", req.Name, err)
	}
	return e
}

func TestInitDefaults(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("state dir mode = %#o, want 0700", got)
	}
	fi, err = os.Stat(filepath.Join(dir, FileGatewayKey))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("gateway key mode = %#o, want 0600", got)
	}
	if g.ListenPort != 51820 {
		t.Errorf("ListenPort = %d, want 51820", g.ListenPort)
	}
	if g.Prefix4 != DefaultPrefix4 {
		t.Errorf("Prefix4 = %v, want %v", g.Prefix4, DefaultPrefix4)
	}
	if g.Prefix6.Bits() != 64 || g.Prefix6.Addr().As16()[0] != 0xfd || g.Prefix6 != g.Prefix6.Masked() {
		t.Errorf("Prefix6 = %v, want an fd00::/8 /64", g.Prefix6)
	}
	if g.PrivateKey == (wgtypes.Key{}) {
		t.Error("PrivateKey is zero")
	}
	if g.Endpoint != testEndpoint || g.EndpointGuessed {
		t.Errorf("Endpoint = %q guessed %v, want %q not guessed", g.Endpoint, g.EndpointGuessed, testEndpoint)
	}
	if got, want := g.Addr4(), netip.MustParseAddr("10.77.0.1"); got != want {
		t.Errorf("Addr4 = %v, want %v", got, want)
	}
	if got := g.Addr6(); got != g.Prefix6.Addr().Next() {
		t.Errorf("Addr6 = %v, want %v", got, g.Prefix6.Addr().Next())
	}
	if s := g.String() + g.GoString(); strings.Contains(s, g.PrivateKey.String()) {
		t.Errorf("Gateway.String leaks the private key: %s", s)
	}

	r := openState(t, dir, nil)
	if got := r.Gateway(); got != g {
		t.Errorf("Open().Gateway() = %v, want %v", got, g)
	}
}

func TestInitTwoULAsDiffer(t *testing.T) {
	_, a := newState(t, InitOptions{})
	_, b := newState(t, InitOptions{})
	if a.Prefix6 == b.Prefix6 {
		t.Errorf("two inits made the same ULA prefix %v", a.Prefix6)
	}
}

func TestInitRefusesExisting(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	_, err := Init(dir, InitOptions{Endpoint: testEndpoint})
	if err == nil || !strings.Contains(err.Error(), "already initialized") {
		t.Fatalf("second Init = %v, want an 'already initialized' error", err)
	}
	k, err := readGatewayKey(dir)
	if err != nil || k != g.PrivateKey {
		t.Errorf("gateway key after a refused Init = %v, %v; want unchanged", k, err)
	}
}

func TestInitDetectsEndpoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	g, err := Init(dir, InitOptions{})
	if err != nil {
		if strings.Contains(err.Error(), "--endpoint") {
			t.Skipf("no LAN address on this host: %v", err)
		}
		t.Fatalf("Init without endpoint = %v", err)
	}
	if !g.EndpointGuessed {
		t.Errorf("EndpointGuessed = false for a detected endpoint %q", g.Endpoint)
	}
	ap, err := netip.ParseAddrPort(g.Endpoint)
	if err != nil || ap.Port() != 51820 || ap.Addr().IsLoopback() {
		t.Errorf("detected Endpoint = %q, want a non-loopback ADDR:51820", g.Endpoint)
	}
	r := openState(t, dir, nil)
	if !r.Gateway().EndpointGuessed {
		t.Error("EndpointGuessed not kept across Open")
	}
}

func TestInitRejects(t *testing.T) {
	tests := []struct {
		name string
		opts InitOptions
	}{
		{"port too big", InitOptions{ListenPort: 70000}},
		{"negative port", InitOptions{ListenPort: -1}},
		{"public v4", InitOptions{Prefix4: netip.MustParsePrefix("8.8.8.0/24")}},
		{"v4 too wide", InitOptions{Prefix4: netip.MustParsePrefix("10.0.0.0/8")}},
		{"v4 too narrow", InitOptions{Prefix4: netip.MustParsePrefix("10.77.0.0/25")}},
		{"v4 host bits", InitOptions{Prefix4: netip.MustParsePrefix("10.77.0.5/24")}},
		{"v6 in v4 slot", InitOptions{Prefix4: netip.MustParsePrefix("fd00::/64")}},
		{"v6 too narrow", InitOptions{Prefix6: netip.MustParsePrefix("fd00::/120")}},
		{"v6 host bits", InitOptions{Prefix6: netip.MustParsePrefix("fd00::1/64")}},
		{"bad endpoint", InitOptions{Endpoint: "bad host:1"}},
		{"endpoint port", InitOptions{Endpoint: "example.com:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if tt.opts.Endpoint == "" {
				tt.opts.Endpoint = testEndpoint
			}
			if _, err := Init(dir, tt.opts); !errors.Is(err, ErrInvalid) {
				t.Errorf("Init(%+v) = %v, want ErrInvalid", tt.opts, err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Init(%+v) created %s despite invalid options", tt.opts, dir)
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	_, err := Open(dir)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
	want := "in use by pid " + strconv.Itoa(os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("second Open error %q does not say %q", err, want)
	}
	if _, err := Init(dir, InitOptions{Endpoint: testEndpoint}); !errors.Is(err, ErrInUse) {
		t.Errorf("Init on an open state dir = %v, want ErrInUse", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := r.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := r.Enroll(Request{Name: "late"}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Enroll after Close = %v, want net.ErrClosed", err)
	}
	r2 := openState(t, dir, nil)
	r2.Close()
}

// TestOpenLockWait: with LockWait, Open outlasts a holder that lets go (a CLI command that
// opened the directory for a moment), and still refuses one that does not.
func TestOpenLockWait(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	holder := openState(t, dir, nil)
	released := make(chan struct{})
	go func() {
		// Let the waiter find the lock taken first: it polls until the holder closes.
		time.Sleep(200 * time.Millisecond)
		holder.Close()
		close(released)
	}()
	r, err := OpenWith(dir, Options{LockWait: time.Minute})
	if err != nil {
		t.Fatalf("OpenWith(LockWait 1m) while the holder lets go = %v, want success", err)
	}
	<-released
	if _, err := OpenWith(dir, Options{LockWait: 300 * time.Millisecond}); !errors.Is(err, ErrInUse) {
		t.Errorf("OpenWith(LockWait 300ms) on a directory held for good = %v, want ErrInUse", err)
	}
	r.Close()
}

func TestOpenRefusesLooseModes(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	if err := os.Chmod(filepath.Join(dir, FileGatewayKey), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Open with a 0644 gateway key = %v, want a chmod hint", err)
	}
	os.Chmod(filepath.Join(dir, FileGatewayKey), 0o600)
	os.Chmod(dir, 0o755)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("Open of a 0755 state dir = %v, want a chmod hint", err)
	}
}

func TestOpenUninitialised(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "printgate init") {
		t.Errorf("Open(empty dir) = %v, want a hint to run init", err)
	}
	if _, err := Open(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "printgate init") {
		t.Errorf("Open(missing dir) = %v, want a hint to run init", err)
	}
}

// secretForms are the encodings a key could be written in.
func secretForms(k []byte) map[string][]byte {
	return map[string][]byte{
		"raw":       k,
		"base64":    []byte(base64.StdEncoding.EncodeToString(k)),
		"base64raw": []byte(base64.RawStdEncoding.EncodeToString(k)),
		"base64url": []byte(base64.RawURLEncoding.EncodeToString(k)),
		"hex":       []byte(hex.EncodeToString(k)),
		"HEX":       []byte(strings.ToUpper(hex.EncodeToString(k))),
	}
}

// grepState fails if any file under dir contains any form of secret.
func grepState(t *testing.T, dir, what string, secret []byte) {
	t.Helper()
	forms := secretForms(secret)
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for form, s := range forms {
			if bytes.Contains(data, s) {
				t.Errorf("%s holds the %s in %s form", path, what, form)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("searched only %d files under %s", n, dir)
	}
}

func TestNoPrivateKeyAtRest(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	var keys []wgtypes.Key
	var apiKeys []string
	for _, name := range []string{"phone", "tablet", "laptop"} {
		e := mustEnroll(t, r, Request{Name: name, Role: Operator})
		if e.PrivateKey == nil {
			t.Fatalf("Enroll(%s).PrivateKey = nil", name)
		}
		if !strings.Contains(e.Config, "PrivateKey = "+e.PrivateKey.String()) {
			t.Fatalf("Enroll(%s).Config lacks the private key", name)
		}
		keys = append(keys, *e.PrivateKey)
		apiKeys = append(apiKeys, e.APIKey)
	}
	// Revoke one and flush observations so every kind of write has happened.
	if _, err := r.Revoke("tablet"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		grepState(t, dir, "device private key "+strconv.Itoa(i), k[:])
		grepState(t, dir, "API key "+strconv.Itoa(i), []byte(apiKeys[i]))
	}
	// The searcher itself must find a key that is there: the gateway's own.
	g, _ := readGatewayKey(dir)
	data, _ := os.ReadFile(filepath.Join(dir, FileGatewayKey))
	if !bytes.Contains(data, secretForms(g[:])["base64"]) {
		t.Fatal("self-check: the search does not find the gateway key in gateway.key")
	}
}

func TestEnrollPubkeyHasNoPrivateKey(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	priv, _ := wgtypes.GeneratePrivateKey()
	pub := priv.PublicKey()
	e := mustEnroll(t, r, Request{Name: "laptop", PublicKey: &pub, Role: Admin})
	if e.PrivateKey != nil {
		t.Errorf("Enroll(--pubkey).PrivateKey = non-nil, want nil")
	}
	if !e.Peer.OwnKey || e.Peer.PublicKey != pub {
		t.Errorf("Enroll(--pubkey).Peer = OwnKey %v key %v, want true %v", e.Peer.OwnKey, e.Peer.PublicKey, pub)
	}
	if !strings.Contains(e.Config, "PrivateKey = "+PrivateKeyPlaceholder+"\n") {
		t.Errorf("Enroll(--pubkey).Config lacks the placeholder line:\n%s", e.Config)
	}
	if strings.Contains(e.Config, priv.String()) {
		t.Error("config holds a private key the gateway never had")
	}
	// The same key again, under any name, is refused.
	if _, err := r.Enroll(Request{Name: "laptop2", PublicKey: &pub}); !errors.Is(err, ErrExists) {
		t.Errorf("Enroll(same pubkey) = %v, want ErrExists", err)
	}
	gpub := g.PublicKey()
	if _, err := r.Enroll(Request{Name: "sneaky", PublicKey: &gpub}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Enroll(gateway's own key) = %v, want ErrInvalid", err)
	}
	zero := wgtypes.Key{}
	if _, err := r.Enroll(Request{Name: "zero", PublicKey: &zero}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Enroll(zero key) = %v, want ErrInvalid", err)
	}
}

func TestEnrollAddresses(t *testing.T) {
	dir, g := newState(t, InitOptions{Prefix4: netip.MustParsePrefix("192.168.200.0/24")})
	r := openState(t, dir, nil)
	e1 := mustEnroll(t, r, Request{Name: "a"})
	e2 := mustEnroll(t, r, Request{Name: "b"})
	if got, want := e1.Peer.IPv4, netip.MustParseAddr("192.168.200.100"); got != want {
		t.Errorf("first device IPv4 = %v, want %v", got, want)
	}
	if got, want := e2.Peer.IPv4, netip.MustParseAddr("192.168.200.101"); got != want {
		t.Errorf("second device IPv4 = %v, want %v", got, want)
	}
	off := netip.PrefixFrom(g.Prefix6.Addr(), 128).Addr()
	for i := 0; i < 100; i++ {
		off = off.Next()
	}
	if e1.Peer.IPv6 != off {
		t.Errorf("first device IPv6 = %v, want %v", e1.Peer.IPv6, off)
	}
	// A /24 holds offsets 100-254: 155 devices, then a clear error.
	for i := 2; i < 155; i++ {
		mustEnroll(t, r, Request{Name: "d" + strconv.Itoa(i)})
	}
	if _, err := r.Enroll(Request{Name: "one-too-many"}); err == nil || !strings.Contains(err.Error(), "no device address left") {
		t.Errorf("Enroll past the prefix = %v, want 'no device address left'", err)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range r.Peers() {
		if p.IPv4.As4()[3] == 0 || p.IPv4.As4()[3] == 255 || seen[p.IPv4] {
			t.Errorf("peer %s has address %v (duplicate or .0/.255)", p.Name, p.IPv4)
		}
		seen[p.IPv4] = true
	}
}

func TestEnrollValidatesFirst(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	gen := r.Generation()
	before, _ := os.ReadFile(filepath.Join(dir, FileRoster))
	bad := []Request{
		{Name: ""},
		{Name: "bad name"},
		{Name: "x=y"},
		{Name: "new\nline"},
		{Name: strings.Repeat("a", 33)},
		{Name: "ok", Role: "root"},
		{Name: "ok", TTL: -time.Second},
		{Name: "ok", TTL: MaxTTL + time.Second},
		{Name: "ok", Role: Viewer, APIKeyRole: Admin},
	}
	for _, req := range bad {
		if _, err := r.Enroll(req); !errors.Is(err, ErrInvalid) {
			t.Errorf("Enroll(%+v) = %v, want ErrInvalid", req, err)
		}
	}
	after, _ := os.ReadFile(filepath.Join(dir, FileRoster))
	if r.Generation() != gen || !bytes.Equal(before, after) || len(r.Peers()) != 0 {
		t.Error("rejected enrollments changed the roster")
	}
	mustEnroll(t, r, Request{Name: "dup"})
	if _, err := r.Enroll(Request{Name: "dup"}); !errors.Is(err, ErrExists) {
		t.Errorf("Enroll(existing name) = %v, want ErrExists", err)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"phone", true},
		{"Alice-Pixel_8.home", true},
		{"a", true},
		{"0", true},
		{strings.Repeat("x", 32), true},
		{strings.Repeat("x", 33), false},
		{"", false},
		{"with space", false},
		{"a=b", false},
		{"tab\there", false},
		{"nl\n", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"-flag", false},
		{".hidden", false},
		{"_x", false},
		{"a/b", false},
		{"a\\b", false},
		{"ünï", false},
		{"quote\"", false},
		{"semi;colon", false},
		{"esc\x1b[31m", false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.name), func(t *testing.T) {
			err := ValidateName(tt.name)
			if (err == nil) != tt.ok {
				t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateName(%q) = %v, want ErrInvalid", tt.name, err)
			}
		})
	}
}

func TestParseInputs(t *testing.T) {
	priv, _ := wgtypes.GeneratePrivateKey()
	pub := priv.PublicKey().String()
	keyTests := []struct {
		in string
		ok bool
	}{
		{pub, true},
		{" " + pub + "\n", true},
		{pub[:43], false},
		{pub[:43] + "A", false},
		{pub[:20] + "\n" + pub[21:], false},
		{strings.Repeat("A", 43) + "=", false}, // all zero
		{"", false},
		{pub + pub, false},
		{strings.ReplaceAll(pub, "+", "-"), strings.Count(pub, "+") == 0},
	}
	for _, tt := range keyTests {
		_, err := ParsePublicKey(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParsePublicKey(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
	ttlTests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"15m", 15 * time.Minute, true},
		{"2h", 2 * time.Hour, true},
		{"168h", MaxTTL, true},
		{"169h", 0, false},
		{"7d", MaxTTL, true},
		{"1d", 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"6d23h59m", MaxTTL - time.Minute, true},
		{"8d", 0, false},
		{"7d1s", 0, false},
		{"0d", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"-1d", 0, false},
		{"1d-2h", 0, false},
		{"99999999999d", 0, false},
		{"0", 0, false},
		{"-5m", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, tt := range ttlTests {
		got, err := ParseTTL(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	roleTests := []struct {
		in   string
		want Role
		ok   bool
	}{
		{"", Viewer, true}, {"viewer", Viewer, true}, {"operator", Operator, true}, {"admin", Admin, true},
		{"Admin", "", false}, {"root", "", false}, {"admin ", "", false},
	}
	for _, tt := range roleTests {
		got, err := ParseRole(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRole(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	epTests := []struct {
		in, want string
	}{
		{"example.com:51820", "example.com:51820"},
		{"Example.COM", "example.com:51820"},
		{"192.0.2.7", "192.0.2.7:51820"},
		{"192.0.2.7:1234", "192.0.2.7:1234"},
		{"[2001:db8::1]:5", "[2001:db8::1]:5"},
		{"2001:db8::1", "[2001:db8::1]:51820"},
		{"bad host", ""},
		{"x:99999", ""},
		{"0.0.0.0:1", ""},
		{"-bad.com:1", ""},
		{"a\nb:1", ""},
	}
	for _, tt := range epTests {
		got, err := ParseEndpoint(tt.in, 51820)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if !Admin.Includes(Operator) || !Operator.Includes(Viewer) || Viewer.Includes(Operator) || Role("x").Includes(Viewer) {
		t.Error("Role.Includes order is wrong")
	}
}

func TestRestartPersistence(t *testing.T) {
	dir, g := newState(t, InitOptions{ListenPort: 41000, Prefix4: netip.MustParsePrefix("172.20.4.0/22")})
	clk := newClock()
	r := openState(t, dir, clk)
	e := mustEnroll(t, r, Request{Name: "phone", Role: Admin})
	mustEnroll(t, r, Request{Name: "tablet"})
	pa, err := r.AllocatePrinterAddr("mk4")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Revoke("tablet"); err != nil {
		t.Fatal(err)
	}
	hs := clk.Now().Add(time.Minute)
	clk.Advance(2 * time.Minute)
	ep := netip.MustParseAddrPort("198.51.100.9:40000")
	if _, err := r.Observe([]Observation{{PublicKey: e.Peer.PublicKey, Endpoint: ep, LastHandshake: hs, Rx: 10, Tx: 20}}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	peers, gen, snap := r.Peers(), r.Generation(), r.Snapshot()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := openState(t, dir, clk)
	if got := r2.Gateway(); got != g {
		t.Errorf("after restart Gateway = %v, want %v", got, g)
	}
	if got := r2.Peers(); !peersEqual(got, peers) {
		t.Errorf("after restart Peers =\n%v\nwant\n%v", got, peers)
	}
	if got := r2.Snapshot(); !peersEqual(got.Peers, snap.Peers) || got.Generation < gen {
		t.Errorf("after restart Snapshot gen %d, want >= %d and the same peers", got.Generation, gen)
	}
	if got := r2.PrinterAddrs(); len(got) != 1 || got[0] != pa {
		t.Errorf("after restart PrinterAddrs = %v, want [%v]", got, pa)
	}
	p, ok := r2.WhoIs(e.Peer.IPv4)
	if !ok || p.Name != "phone" || p.State != Active || !p.LastHandshake.Equal(hs) || p.Endpoint != ep || p.RxBytes != 10 {
		t.Errorf("after restart WhoIs(%v) = %+v, %v; want active phone with handshake %v from %v", e.Peer.IPv4, p, ok, hs, ep)
	}
	if !r2.CheckAPIKey("phone", e.APIKey) {
		t.Error("after restart the API key no longer checks")
	}
}

// peersEqual compares every field, secrets included, as the state file records them.
func peersEqual(a, b []Peer) bool {
	disk := func(ps []Peer) []byte {
		ds := make([]diskPeer, len(ps))
		for i, p := range ps {
			ds[i] = toDisk(p)
		}
		out, _ := json.Marshal(ds)
		return out
	}
	return bytes.Equal(disk(a), disk(b))
}

func TestRevokeTombstones(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	r := openState(t, dir, clk)
	a := mustEnroll(t, r, Request{Name: "lost-phone"})
	b := mustEnroll(t, r, Request{Name: "other"})
	clk.Advance(time.Second)
	got, err := r.Revoke("lost-phone")
	if err != nil {
		t.Fatalf("Revoke = %v", err)
	}
	if got.State != Revoked || !got.RevokedAt.Equal(clk.Now()) {
		t.Errorf("Revoke returned state %s at %v, want revoked at %v", got.State, got.RevokedAt, clk.Now())
	}
	if _, err := r.Revoke("lost-phone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Revoke = %v, want ErrNotFound", err)
	}
	if _, ok := r.WhoIs(a.Peer.IPv4); ok {
		t.Error("WhoIs finds a revoked peer")
	}
	if r.CheckAPIKey("lost-phone", a.APIKey) {
		t.Error("a revoked peer's API key still checks")
	}
	if _, ok := r.APIKeyPeer(a.APIKey); ok {
		t.Error("APIKeyPeer finds a revoked peer")
	}
	for _, dp := range r.DevicePeers() {
		if dp.PublicKey == a.Peer.PublicKey {
			t.Error("DevicePeers still lists the revoked peer")
		}
	}
	r.Close()

	// Across a restart: the name may be reused, the addresses and the key never.
	r2 := openState(t, dir, clk)
	c := mustEnroll(t, r2, Request{Name: "lost-phone"})
	for _, old := range []Peer{a.Peer, b.Peer} {
		if c.Peer.IPv4 == old.IPv4 || c.Peer.IPv6 == old.IPv6 {
			t.Errorf("re-enrolled peer got %v/%v, already handed to %s", c.Peer.IPv4, c.Peer.IPv6, old.Name)
		}
	}
	if _, err := r2.Enroll(Request{Name: "again", PublicKey: &a.Peer.PublicKey}); !errors.Is(err, ErrExists) {
		t.Errorf("Enroll(revoked key) = %v, want ErrExists", err)
	}
	var states []string
	for _, p := range r2.Peers() {
		states = append(states, p.Name+":"+string(p.State))
	}
	if got, want := strings.Join(states, " "), "lost-phone:revoked lost-phone:pending other:pending"; got != want {
		t.Errorf("Peers = %s, want %s", got, want)
	}
	if p, ok := r2.WhoIs(c.Peer.IPv4); !ok || p.PublicKey != c.Peer.PublicKey {
		t.Errorf("WhoIs(new address) = %v, %v", p, ok)
	}
}

func TestWhoIs(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	e := mustEnroll(t, r, Request{Name: "phone"})
	for _, a := range []netip.Addr{e.Peer.IPv4, e.Peer.IPv6, netip.AddrFrom16(e.Peer.IPv4.As16())} {
		if p, ok := r.WhoIs(a); !ok || p.Name != "phone" {
			t.Errorf("WhoIs(%v) = %v, %v; want phone", a, p, ok)
		}
	}
	for _, a := range []netip.Addr{g.Addr4(), g.Addr6(), e.Peer.IPv4.Next(), {}} {
		if p, ok := r.WhoIs(a); ok {
			t.Errorf("WhoIs(%v) = %v, want none", a, p)
		}
	}
	if p, ok := r.Snapshot().WhoIs(e.Peer.IPv6, time.Now()); !ok || p.Name != "phone" {
		t.Errorf("Snapshot.WhoIs(%v) = %v, %v; want phone", e.Peer.IPv6, p, ok)
	}
	dps := r.DevicePeers()
	if len(dps) != 1 || dps[0].PresharedKey != e.Peer.PresharedKey ||
		dps[0].AllowedIPs[0] != netip.PrefixFrom(e.Peer.IPv4, 32) || dps[0].AllowedIPs[1] != netip.PrefixFrom(e.Peer.IPv6, 128) {
		t.Errorf("DevicePeers = %+v", dps)
	}
}

func TestAPIKey(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	e := mustEnroll(t, r, Request{Name: "slicer", Role: Operator, APIKeyRole: Viewer})
	other := mustEnroll(t, r, Request{Name: "other"})
	if len(e.APIKey) != 43 || strings.Trim(e.APIKey, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		t.Errorf("API key %q: want 43 URL-safe characters", e.APIKey)
	}
	if e.APIKey == other.APIKey {
		t.Error("two peers got the same API key")
	}
	h := HashAPIKey(e.APIKey)
	if !bytes.Equal(e.Peer.APIKeyHash, h[:]) {
		t.Error("APIKeyHash is not the SHA-256 of the key")
	}
	if !r.CheckAPIKey("slicer", e.APIKey) {
		t.Error("CheckAPIKey(own key) = false")
	}
	if r.CheckAPIKey("other", e.APIKey) || r.CheckAPIKey("slicer", other.APIKey) || r.CheckAPIKey("slicer", "") {
		t.Error("CheckAPIKey accepts another peer's key or an empty one")
	}
	p, ok := r.APIKeyPeer(e.APIKey)
	if !ok || p.Name != "slicer" || p.EffectiveAPIRole() != Viewer {
		t.Errorf("APIKeyPeer = %v, %v (api role %s); want slicer narrowed to viewer", p, ok, p.EffectiveAPIRole())
	}
	nk, err := r.RotateAPIKey("slicer", "")
	if err != nil {
		t.Fatal(err)
	}
	if r.CheckAPIKey("slicer", e.APIKey) || !r.CheckAPIKey("slicer", nk) {
		t.Error("after RotateAPIKey the old key works or the new one does not")
	}
	if _, err := r.RotateAPIKey("slicer", Admin); !errors.Is(err, ErrInvalid) {
		t.Errorf("RotateAPIKey widening to admin = %v, want ErrInvalid", err)
	}
}

func TestPrinterAddrs(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	a, err := r.AllocatePrinterAddr("mk4")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := r.AllocatePrinterAddr("ender")
	again, _ := r.AllocatePrinterAddr("mk4")
	if a != again {
		t.Errorf("AllocatePrinterAddr(mk4) twice = %v then %v", a, again)
	}
	if a.IPv4 != netip.MustParseAddr("10.77.0.11") || b.IPv4 != netip.MustParseAddr("10.77.0.12") {
		t.Errorf("printer addresses = %v, %v; want 10.77.0.11, 10.77.0.12", a.IPv4, b.IPv4)
	}
	if !g.Prefix6.Contains(a.IPv6) {
		t.Errorf("printer IPv6 %v outside %v", a.IPv6, g.Prefix6)
	}
	if _, err := r.AllocatePrinterAddr("bad name"); !errors.Is(err, ErrInvalid) {
		t.Errorf("AllocatePrinterAddr(bad name) = %v, want ErrInvalid", err)
	}
	for i := 2; i < 40; i++ {
		if _, err := r.AllocatePrinterAddr("p" + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.AllocatePrinterAddr("p41"); err == nil {
		t.Error("41st printer got an address; the range holds 40")
	}
	if got := r.PrinterAddrs(); got[0].Name != "ender" || len(got) != 40 {
		t.Errorf("PrinterAddrs = %d entries starting %v, want 40 sorted by name", len(got), got[0])
	}
	// A device never lands on a printer or gateway address.
	e := mustEnroll(t, r, Request{Name: "phone"})
	if e.Peer.IPv4 != netip.MustParseAddr("10.77.0.100") {
		t.Errorf("device IPv4 = %v, want 10.77.0.100", e.Peer.IPv4)
	}
}

func TestPeerJSONHidesSecrets(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	e := mustEnroll(t, r, Request{Name: "phone", Role: Operator})
	b, err := json.Marshal(r.Peers())
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, secret := range []string{e.Peer.PresharedKey.String(), e.PrivateKey.String(), e.APIKey, hex.EncodeToString(e.Peer.APIKeyHash)} {
		if strings.Contains(s, secret) {
			t.Errorf("peers JSON holds a secret: %s", s)
		}
	}
	for _, field := range []string{`"name":"phone"`, `"role":"operator"`, `"state":"pending"`, `"address":"10.77.0.100"`, `"public_key":"` + e.Peer.PublicKey.String() + `"`} {
		if !strings.Contains(s, field) {
			t.Errorf("peers JSON lacks %s: %s", field, s)
		}
	}
	var back []Peer
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 1 || back[0].PublicKey != e.Peer.PublicKey || back[0].IPv4 != e.Peer.IPv4 {
		t.Errorf("json round trip = %v, %v", back, err)
	}
	if strings.Contains(e.Peer.String()+e.Peer.GoString(), e.Peer.PresharedKey.String()) {
		t.Error("Peer.String leaks the preshared key")
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	tests := []struct {
		route, want string
	}{
		{"Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n" +
			"docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n" +
			"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n", "wlan0"},
		{"Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n" +
			"eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := defaultRouteInterface(tt.route); got != tt.want {
			t.Errorf("defaultRouteInterface(%q) = %q, want %q", tt.route, got, tt.want)
		}
	}
}

func TestSetEndpoint(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	if _, err := r.SetEndpoint("bad host"); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetEndpoint(bad host) = %v, want ErrInvalid", err)
	}
	if got := r.Gateway().Endpoint; got != g.Endpoint {
		t.Errorf("a refused SetEndpoint changed the endpoint to %q", got)
	}
	ng, err := r.SetEndpoint("home.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if ng.Endpoint != "home.example.org:51820" || ng.EndpointGuessed || ng.PrivateKey != g.PrivateKey || ng.Prefix6 != g.Prefix6 {
		t.Errorf("SetEndpoint = %v, want home.example.org:51820 with the same key and prefixes", ng)
	}
	e := mustEnroll(t, r, Request{Name: "phone"})
	if !strings.Contains(e.Config, "Endpoint = home.example.org:51820\n") {
		t.Errorf("config after SetEndpoint:\n%s", e.Config)
	}
	r.Close()
	r2 := openState(t, dir, nil)
	if got := r2.Gateway(); got != ng {
		t.Errorf("after restart Gateway = %v, want %v", got, ng)
	}
}
