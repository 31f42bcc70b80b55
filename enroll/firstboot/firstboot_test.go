package firstboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/qr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// roster is a fake registry: Enroll makes a real key pair and a wg-quick config.
type roster struct {
	mu       sync.Mutex
	now      func() time.Time
	peers    []enroll.Peer
	enrolls  []enroll.Request
	revoked  []string
	failNext error
}

func (r *roster) Enroll(req enroll.Request) (*enroll.Enrollment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enrolls = append(r.enrolls, req)
	if err := r.failNext; err != nil {
		r.failNext = nil
		return nil, err
	}
	for _, p := range r.peers {
		if p.Name == req.Name {
			return nil, fmt.Errorf("enroll %s: name taken", req.Name)
		}
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	p := enroll.Peer{
		Name: req.Name, Role: req.Role, State: enroll.Pending, PublicKey: key.PublicKey(),
		Created: r.now(), ExpiresAt: r.now().Add(req.TTL),
	}
	r.peers = append(r.peers, p)
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.77.0.%d/32\n\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.77.0.0/24\nEndpoint = gw.example:51820\n",
		key, len(r.peers)+1, wgtypes.Key{1, 2, 3})
	return &enroll.Enrollment{Peer: p, PrivateKey: &key, Config: conf}, nil
}

func (r *roster) Peers() []enroll.Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]enroll.Peer(nil), r.peers...)
}

func (r *roster) Revoke(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.peers {
		if r.peers[i].Name == name {
			r.peers[i].State = enroll.Revoked
			r.revoked = append(r.revoked, name)
			return nil
		}
	}
	return errors.New("no such peer")
}

func (r *roster) set(name string, state enroll.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.peers {
		if r.peers[i].Name == name {
			r.peers[i].State = state
		}
	}
}

func (r *roster) add(p enroll.Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = append(r.peers, p)
}

func (r *roster) pendingAdmins() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for _, p := range r.peers {
		if p.Role == enroll.Admin && p.State == enroll.Pending && r.now().Before(p.ExpiresAt) {
			names = append(names, p.Name)
		}
	}
	return names
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// console is a goroutine-safe buffer.
type console struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

type fixture struct {
	clock   *fakeClock
	roster  *roster
	console *console
	boot    string
	cfg     Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		clock:   &fakeClock{t: time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)},
		console: &console{},
		boot:    t.TempDir(),
	}
	f.roster = &roster{now: f.clock.Now}
	f.cfg = Config{
		BootDir: f.boot,
		Console: f.console,
		Enroll:  f.roster.Enroll,
		Peers:   f.roster.Peers,
		Revoke:  f.roster.Revoke,
		TTL:     10 * time.Minute,
		Now:     f.clock.Now,
		Logf:    t.Logf,
	}
	return f
}

func (f *fixture) runner() *runner {
	r := &runner{cfg: f.cfg}
	r.setDefaults()
	return r
}

func step(t *testing.T, r *runner) bool {
	t.Helper()
	done, err := r.step()
	if err != nil {
		t.Fatalf("step() = %v", err)
	}
	return done
}

// sameBits reports whether img draws bits (true = dark) at scale pixels per module starting
// at pixel offset off, by sampling each module's centre.
func sameBits(img image.Image, bits [][]bool, scale, off int) error {
	b := img.Bounds()
	if b.Dx() < off+len(bits)*scale || b.Dy() < off+len(bits)*scale {
		return fmt.Errorf("image %v too small for %d modules at scale %d", b, len(bits), scale)
	}
	for y := range bits {
		for x := range bits[y] {
			r, _, _, _ := img.At(b.Min.X+off+x*scale+scale/2, b.Min.Y+off+y*scale+scale/2).RGBA()
			if dark := r < 0x8000; dark != bits[y][x] {
				return fmt.Errorf("module (%d,%d) dark=%v, want %v", x, y, dark, bits[y][x])
			}
		}
	}
	return nil
}

// zbar decodes a PNG with zbarimg when it is installed (a real decoder, the one the image
// boot test uses); it returns ok=false when zbarimg is missing.
func zbar(t *testing.T, pngData []byte) (string, bool) {
	t.Helper()
	if _, err := exec.LookPath("zbarimg"); err != nil {
		return "", false
	}
	p := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(p, pngData, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zbarimg", "--raw", "-q", "-Sbinary", p).Output()
	if err != nil {
		t.Fatalf("zbarimg %s: %v", p, err)
	}
	return string(out), true
}

// checkQR checks that img (a console image or a PNG, scale pixels per module from off) carries
// text: module by module against the encoder's own bitmap, and with zbarimg if present.
func checkQR(t *testing.T, what string, img image.Image, bits [][]bool, scale, off int, text string) {
	t.Helper()
	if err := sameBits(img, bits, scale, off); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if got, ok := zbar(t, buf.Bytes()); ok && got != text {
		t.Errorf("%s: zbarimg = %q, want %q", what, got, text)
	}
}

// checkConsoleQR checks the last QR block in a console log against text.
func checkConsoleQR(t *testing.T, log, text string) {
	t.Helper()
	const scale, margin = 4, 4 // ConsoleImage adds margin white modules around the symbol
	img, err := ConsoleImage(log, scale)
	if err != nil {
		t.Fatalf("ConsoleImage: %v", err)
	}
	q, err := encode(text)
	if err != nil {
		t.Fatal(err)
	}
	checkQR(t, "console QR", img, q.Bitmap(), scale, scale*margin, text)
}

func (f *fixture) files(t *testing.T) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(f.boot)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(f.boot, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

// checkShown asserts that the console's last QR, the .conf and the PNG all carry conf.
func (f *fixture) checkShown(t *testing.T, conf string) {
	t.Helper()
	checkConsoleQR(t, f.console.String(), conf)
	files := f.files(t)
	if len(files) != 2 {
		var names []string
		for n := range files {
			names = append(names, n)
		}
		t.Errorf("boot dir holds %q, want exactly %s and %s", names, ConfName, PNGName)
	}
	if got := string(files[ConfName]); got != conf {
		t.Errorf("%s = %q, want %q", ConfName, got, conf)
	}
	img, err := png.Decode(bytes.NewReader(files[PNGName]))
	if err != nil {
		t.Fatalf("decode %s: %v", PNGName, err)
	}
	c, err := qr.Encode(conf)
	if err != nil {
		t.Fatal(err)
	}
	bits := make([][]bool, c.Size())
	for y := range bits {
		bits[y] = make([]bool, c.Size())
		for x := range bits[y] {
			bits[y][x] = c.Dark(x, y)
		}
	}
	checkQR(t, PNGName, img, bits, 8, 0, conf)
}

func lastConfig(t *testing.T, f *fixture) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.boot, ConfName))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFirstBootShowsOnePendingAdmin(t *testing.T) {
	f := newFixture(t)
	r := f.runner()
	if step(t, r) {
		t.Fatal("step() done with an empty roster")
	}
	if len(f.roster.enrolls) != 1 {
		t.Fatalf("Enroll called %d times, want 1", len(f.roster.enrolls))
	}
	req := f.roster.enrolls[0]
	if req.Role != enroll.Admin || req.TTL != 10*time.Minute || req.Name != "admin-1" || req.PublicKey != nil {
		t.Errorf("Enroll(%+v), want role admin, TTL 10m, name admin-1, no public key", req)
	}
	conf := lastConfig(t, f)
	if !strings.Contains(conf, "PrivateKey = ") {
		t.Fatalf("conf %q has no private key", conf)
	}
	f.checkShown(t, conf)
	out := f.console.String()
	if strings.Count(out, BeginMarker) != 1 || strings.Count(out, EndMarker) != 1 {
		t.Errorf("console has %d BEGIN and %d END markers, want 1 each", strings.Count(out, BeginMarker), strings.Count(out, EndMarker))
	}

	// Nothing changes while the enrollment is pending: no new enrollment, no reprint.
	for range 3 {
		step(t, r)
	}
	if n := len(f.roster.enrolls); n != 1 {
		t.Errorf("Enroll called %d times after idle steps, want 1", n)
	}
	if got := f.console.String(); got != out {
		t.Errorf("console written again while nothing changed")
	}
	if got := f.roster.pendingAdmins(); len(got) != 1 {
		t.Errorf("pending admins = %q, want exactly one", got)
	}
}

func TestFirstBootReplacesExpired(t *testing.T) {
	tests := []struct {
		name   string
		expire func(f *fixture)
	}{
		{"ttl passes", func(f *fixture) { f.clock.Advance(10*time.Minute + time.Second) }},
		{"peer dropped", func(f *fixture) {
			f.roster.mu.Lock()
			f.roster.peers = nil
			f.roster.mu.Unlock()
		}},
		{"peer revoked", func(f *fixture) { f.roster.set("admin-1", enroll.Revoked) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.runner()
			step(t, r)
			first := lastConfig(t, f)
			tt.expire(f)
			step(t, r)
			if n := len(f.roster.enrolls); n != 2 {
				t.Fatalf("Enroll called %d times, want 2", n)
			}
			second := lastConfig(t, f)
			if second == first {
				t.Fatal("config not replaced after expiry")
			}
			f.checkShown(t, second)
			if got := f.roster.pendingAdmins(); len(got) != 1 {
				t.Errorf("pending admins = %q, want exactly one", got)
			}
		})
	}
}

func TestFirstBootAdminJoins(t *testing.T) {
	f := newFixture(t)
	r := f.runner()
	step(t, r)
	secret := lastConfig(t, f)
	before := len(f.console.String())

	f.roster.set("admin-1", enroll.Active)
	if !step(t, r) {
		t.Fatal("step() not done after the admin became active")
	}
	if files := f.files(t); len(files) != 0 {
		t.Errorf("boot dir still holds %d files after the admin joined", len(files))
	}
	after := f.console.String()[before:]
	if !strings.HasPrefix(after, clearScreen) || !strings.Contains(after, `admin "admin-1" has joined`) {
		t.Errorf("console after join = %q, want a clear screen and a notice", after)
	}
	key := strings.TrimSpace(strings.SplitN(strings.SplitN(secret, "PrivateKey = ", 2)[1], "\n", 2)[0])
	if strings.Contains(after, key) || strings.Contains(after, BeginMarker) {
		t.Errorf("console after join shows a secret: %q", after)
	}
}

// An active peer that is not an admin does not end first boot.
func TestFirstBootIgnoresNonAdmins(t *testing.T) {
	f := newFixture(t)
	f.roster.add(enroll.Peer{Name: "laptop", Role: enroll.Operator, State: enroll.Active})
	r := f.runner()
	if step(t, r) {
		t.Fatal("step() done with only an active operator")
	}
	f.checkShown(t, lastConfig(t, f))
}

func TestFirstBootAdminAlreadyActive(t *testing.T) {
	f := newFixture(t)
	f.roster.add(enroll.Peer{Name: "phone", Role: enroll.Admin, State: enroll.Active})
	// Files left by an earlier boot are removed, even though this run did not write them.
	for _, n := range []string{ConfName, PNGName} {
		if err := os.WriteFile(filepath.Join(f.boot, n), []byte("old secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(f.boot, "config.txt")
	if err := os.WriteFile(other, []byte("arm_64bit=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), f.cfg); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if files := f.files(t); len(files) != 1 || files["config.txt"] == nil {
		t.Errorf("boot dir after Run = %d files, want only config.txt", len(files))
	}
	if out := f.console.String(); out != "" {
		t.Errorf("console = %q, want nothing at all", out)
	}
	if n := len(f.roster.enrolls); n != 0 {
		t.Errorf("Enroll called %d times, want 0", n)
	}
}

func TestFirstBootAdoptsAcrossRestart(t *testing.T) {
	f := newFixture(t)
	step(t, f.runner())
	conf := lastConfig(t, f)

	// The daemon restarts: a new runner, the same roster and boot partition.
	f.console = &console{}
	f.cfg.Console = f.console
	r := f.runner()
	step(t, r)
	if n := len(f.roster.enrolls); n != 1 {
		t.Errorf("Enroll called %d times across a restart, want 1 (adopt)", n)
	}
	if len(f.roster.revoked) != 0 {
		t.Errorf("revoked %q, want nothing", f.roster.revoked)
	}
	f.checkShown(t, conf)
}

func TestFirstBootRevokesStalePending(t *testing.T) {
	f := newFixture(t)
	step(t, f.runner())
	// Restart, but the boot partition lost the config (the owner deleted it): the old
	// pending admin's key is gone, so it is revoked and a fresh one is made.
	os.Remove(filepath.Join(f.boot, ConfName))
	f.roster.add(enroll.Peer{Name: "someone", Role: enroll.Admin, State: enroll.Pending, ExpiresAt: f.clock.Now().Add(time.Hour)})
	step(t, f.runner())
	if got := f.roster.revoked; len(got) != 1 || got[0] != "admin-1" {
		t.Errorf("revoked %q, want [admin-1] (not the owner's own pending admin)", got)
	}
	if req := f.roster.enrolls[len(f.roster.enrolls)-1]; req.Name != "admin-2" {
		t.Errorf("new enrollment named %q, want admin-2", req.Name)
	}
	f.checkShown(t, lastConfig(t, f))
}

func TestFirstBootEnrollFailureRetries(t *testing.T) {
	f := newFixture(t)
	f.roster.failNext = errors.New("roster busy")
	r := f.runner()
	if _, err := r.step(); err == nil || !strings.Contains(err.Error(), "roster busy") {
		t.Fatalf("step() = %v, want the enroll error", err)
	}
	if files := f.files(t); len(files) != 0 || f.console.String() != "" {
		t.Fatalf("after a failed enroll: %d files, console %q; want nothing", len(files), f.console.String())
	}
	step(t, r)
	f.checkShown(t, lastConfig(t, f))
}

// A boot partition that cannot be written still gets the console QR, and the files are
// retried on the next round without a new enrollment.
func TestFirstBootRetriesFiles(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(t.TempDir(), "not-yet-mounted")
	f.cfg.BootDir = missing
	r := f.runner()
	if _, err := r.step(); err == nil {
		t.Fatal("step() = nil with a missing boot dir, want an error")
	}
	if !strings.Contains(f.console.String(), EndMarker) {
		t.Fatal("no console QR when the boot dir fails")
	}
	if _, err := r.step(); err == nil {
		t.Fatal("second step() = nil with a missing boot dir, want an error")
	}
	if err := os.Mkdir(missing, 0o700); err != nil {
		t.Fatal(err)
	}
	f.boot = missing
	step(t, r)
	if n := len(f.roster.enrolls); n != 1 {
		t.Errorf("Enroll called %d times, want 1", n)
	}
	if n := strings.Count(f.console.String(), EndMarker); n != 1 {
		t.Errorf("console QR printed %d times while retrying the files, want 1", n)
	}
	f.checkShown(t, lastConfig(t, f))
}

func TestRunLoop(t *testing.T) {
	f := newFixture(t)
	tick := make(chan time.Time)
	f.cfg.Tick = tick
	errc := make(chan error, 1)
	go func() { errc <- Run(context.Background(), f.cfg) }()

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.console.String(), EndMarker) {
		if time.Now().After(deadline) {
			t.Fatal("no QR on the console")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.clock.Advance(11 * time.Minute)
	tick <- time.Time{}
	for len(f.roster.pendingAdmins()) != 1 || strings.Count(f.console.String(), EndMarker) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("expired enrollment not replaced")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.roster.set("admin-2", enroll.Active)
	tick <- time.Time{}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run() = %v, want nil once an admin is active", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the admin joined")
	}
	if files := f.files(t); len(files) != 0 {
		t.Errorf("%d files left after Run", len(files))
	}
}

func TestRunStopsWithContext(t *testing.T) {
	f := newFixture(t)
	f.cfg.Tick = make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, f.cfg) }()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunNeedsRoster(t *testing.T) {
	if err := Run(context.Background(), Config{}); err == nil {
		t.Error("Run(Config{}) = nil, want an error")
	}
}

func TestHalfBlockQRRoundTrip(t *testing.T) {
	long := "[Interface]\nPrivateKey = " + strings.Repeat("A", 43) + "=\nAddress = 10.99.0.11/32, fd00:1:2:3::11/128\nDNS = 10.99.0.1\n\n[Peer]\nPublicKey = " +
		strings.Repeat("B", 43) + "=\nPresharedKey = " + strings.Repeat("C", 43) + "=\nAllowedIPs = 10.99.0.0/24, fd00:1:2:3::/64\nEndpoint = printer-gateway.example.org:51820\nPersistentKeepalive = 25\n"
	for _, text := range []string{"hello", long} {
		qr, err := HalfBlockQR(text)
		if err != nil {
			t.Fatalf("HalfBlockQR: %v", err)
		}
		lines := strings.Split(strings.TrimSuffix(qr, "\n"), "\n")
		for i, l := range lines {
			if n := len([]rune(l)); n != len([]rune(lines[0])) || n > maxConsoleWidth {
				t.Fatalf("line %d is %d wide (first %d, max %d)", i, n, len([]rune(lines[0])), maxConsoleWidth)
			}
		}
		log := "boot noise\n" + BeginMarker + "\r\n" + strings.ReplaceAll(qr, "\n", "\r\n") + EndMarker + "\n[  12.3] kernel line\n"
		checkConsoleQR(t, log, text)
	}
}

func TestConsoleImageErrors(t *testing.T) {
	qr, _ := HalfBlockQR("x")
	lines := strings.Split(qr, "\n")
	tests := []struct {
		name, log string
	}{
		{"empty", ""},
		{"no end", BeginMarker + "\n" + qr},
		{"no begin", qr + EndMarker + "\n"},
		{"no qr lines", BeginMarker + "\nhello\n" + EndMarker + "\n"},
		{"ragged", BeginMarker + "\n" + lines[0] + "\n" + lines[1] + "██\n" + EndMarker + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ConsoleImage(tt.log, 2); err == nil {
				t.Errorf("ConsoleImage(%q) = nil error, want one", tt.log)
			}
		})
	}
}

func FuzzConsoleImage(f *testing.F) {
	qr, _ := HalfBlockQR("seed")
	f.Add(BeginMarker + "\n" + qr + EndMarker + "\n")
	f.Add(BeginMarker + "\n█ ▀▄\n▄▄\n" + EndMarker)
	f.Fuzz(func(t *testing.T, log string) {
		img, err := ConsoleImage(log, 1)
		if err == nil && (img.Bounds().Dx() == 0 || img.Bounds().Dy() == 0) {
			t.Errorf("ConsoleImage(%q) = empty image and no error", log)
		}
	})
}
