// Package firstboot shows a headless gateway's first admin enrollment on the console and the
// boot partition until an admin has joined, and reads the owner's settings file there.
package firstboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/statefile"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Names of the files Run writes into Config.BootDir while no admin exists. They hold the
// pending admin's private key and are removed once an admin is active.
const (
	ConfName = "printgate-admin.conf"
	PNGName  = "printgate-admin.png"
)

// Console markers around the terminal QR, each on a line of its own. Tools (and the image
// boot test) find the QR in a serial log between the last BEGIN and the END after it.
const (
	BeginMarker = "-----BEGIN PRINTGATE ADMIN QR-----"
	EndMarker   = "-----END PRINTGATE ADMIN QR-----"
)

// Defaults for the zero values of Config.
const (
	DefaultTTL        = time.Hour
	DefaultPoll       = 2 * time.Second
	DefaultNamePrefix = "admin"
)

// clearScreen moves the cursor home and clears the screen on a VT (the HDMI console); in a
// serial log it is a few bytes of noise before the header.
const clearScreen = "\x1b[H\x1b[2J"

// Config connects Run to the roster and to the outside world. Enroll and Peers are required.
type Config struct {
	// BootDir is the boot partition (e.g. /boot/firmware) that receives ConfName and PNGName;
	// empty: no files, console only.
	BootDir string
	// Console receives the QR and notices; nil: /dev/console, opened for each write. It must
	// not be a log that is kept: the QR holds a private key.
	Console io.Writer
	// Enroll creates a pending peer (registry.Enroll). Run asks for Role admin and TTL.
	Enroll func(enroll.Request) (*enroll.Enrollment, error)
	// Peers lists the roster (registry.Peers).
	Peers func() []enroll.Peer
	// Revoke, if set, revokes stale pending admins made by an earlier run whose private key
	// is gone, so that exactly one pending admin enrollment exists; nil: they expire by TTL.
	Revoke func(name string) error
	// TerminalQR renders text as a QR for a text console; nil: HalfBlockQR.
	TerminalQR func(text string) (string, error)
	// PNGQR renders text as a QR PNG; nil: PNGQR.
	PNGQR func(text string) ([]byte, error)
	// TTL is how long each pending admin enrollment lives; zero: DefaultTTL.
	TTL time.Duration
	// Poll is how often the roster is checked; zero: DefaultPoll.
	Poll time.Duration
	// NamePrefix names the pending admins PREFIX-1, PREFIX-2, ...; empty: DefaultNamePrefix.
	NamePrefix string
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Tick, if set, replaces the poll ticker (tests drive it); nil: a time.Ticker of Poll.
	Tick <-chan time.Time
	// Logf logs progress, never secrets; nil: no logging.
	Logf func(format string, args ...any)
}

// Run keeps exactly one pending admin enrollment while the roster has no active admin: it
// makes one, shows its QR on the console and writes ConfName and PNGName to BootDir, and
// replaces all of that with a fresh enrollment whenever the pending one expires or vanishes.
// Once an active admin exists it removes the files (also those of an earlier run), clears the
// console, prints a notice with no secret, and returns nil. It returns ctx.Err() when ctx ends
// first, leaving the files for the next run to adopt.
//
// A pending admin from an earlier run is adopted when BootDir still holds its config (the
// QR stays the same across reboots); pending admins named by NamePrefix without one are
// revoked when Revoke is set.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Enroll == nil || cfg.Peers == nil {
		return errors.New("firstboot: run: Enroll and Peers are required")
	}
	r := &runner{cfg: cfg}
	r.setDefaults()

	var tick <-chan time.Time = cfg.Tick
	if tick == nil {
		t := time.NewTicker(r.cfg.Poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		done, err := r.step()
		if err != nil {
			r.logf("firstboot: %v", err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		}
	}
}

type runner struct {
	cfg Config
	// current is the pending admin whose QR is shown; its Config holds the private key, in
	// memory only (and in BootDir's files, which the owner reads off the card).
	current *shown
	started bool
}

type shown struct {
	name    string
	pub     wgtypes.Key
	config  string
	expires time.Time
	// filesOK and consoleOK say which outputs were written; a failed one is retried each
	// round (the boot partition may be mounted late), a written one is never repeated.
	filesOK, consoleOK bool
}

func (r *runner) setDefaults() {
	c := &r.cfg
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TerminalQR == nil {
		c.TerminalQR = HalfBlockQR
	}
	if c.PNGQR == nil {
		c.PNGQR = PNGQR
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

func (r *runner) logf(format string, args ...any) { r.cfg.Logf(format, args...) }

// step runs one round: done reports that an admin is active and everything is cleaned up.
func (r *runner) step() (done bool, err error) {
	peers := r.cfg.Peers()
	if admin, ok := activeAdmin(peers); ok {
		return true, r.finish(admin)
	}
	if !r.started {
		r.started = true
		r.adoptOrRevoke(peers)
	}
	if r.current != nil && r.stillPending(peers, r.current) {
		if !r.current.filesOK || !r.current.consoleOK {
			return false, r.show(r.current, r.current.expires) // retry what failed
		}
		return false, nil
	}
	if r.current != nil {
		r.logf("firstboot: pending admin %s expired; making a fresh one", r.current.name)
		r.current = nil
	}
	return false, r.enrollNew(peers)
}

func activeAdmin(peers []enroll.Peer) (enroll.Peer, bool) {
	for _, p := range peers {
		if p.Role == enroll.Admin && p.State == enroll.Active {
			return p, true
		}
	}
	return enroll.Peer{}, false
}

// stillPending reports whether s is in the roster as a pending peer that has not expired.
func (r *runner) stillPending(peers []enroll.Peer, s *shown) bool {
	now := r.cfg.Now()
	for _, p := range peers {
		if p.Name == s.name && p.PublicKey == s.pub {
			return p.State == enroll.Pending && (p.ExpiresAt.IsZero() || now.Before(p.ExpiresAt))
		}
	}
	return false
}

// adoptOrRevoke takes over a pending admin from an earlier run whose config is still in
// BootDir, and revokes (when it can) the other pending admins of ours: their keys are lost.
func (r *runner) adoptOrRevoke(peers []enroll.Peer) {
	if r.cfg.BootDir != "" {
		if b, err := os.ReadFile(filepath.Join(r.cfg.BootDir, ConfName)); err == nil {
			if pub, ok := configPublicKey(string(b)); ok {
				for _, p := range peers {
					s := &shown{name: p.Name, pub: pub, config: string(b), expires: p.ExpiresAt}
					if p.PublicKey == pub && p.Role == enroll.Admin && r.stillPending(peers, s) {
						r.logf("firstboot: adopting pending admin %s from the boot partition", p.Name)
						r.current = s
						if err := r.show(s, s.expires); err != nil {
							r.logf("firstboot: %v", err)
						}
						break
					}
				}
			}
		}
	}
	if r.cfg.Revoke == nil {
		return
	}
	for _, p := range peers {
		if p.Role != enroll.Admin || p.State != enroll.Pending || !r.ours(p.Name) {
			continue
		}
		if r.current != nil && p.Name == r.current.name {
			continue
		}
		if err := r.cfg.Revoke(p.Name); err != nil {
			r.logf("firstboot: revoke stale pending admin %s: %v", p.Name, err)
		} else {
			r.logf("firstboot: revoked stale pending admin %s (its key was not kept)", p.Name)
		}
	}
}

// ours reports whether name has the form PREFIX-N that enrollNew gives.
func (r *runner) ours(name string) bool {
	rest, ok := strings.CutPrefix(name, r.cfg.NamePrefix+"-")
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (r *runner) enrollNew(peers []enroll.Peer) error {
	name := r.freeName(peers)
	e, err := r.cfg.Enroll(enroll.Request{Name: name, Role: enroll.Admin, TTL: r.cfg.TTL})
	if err != nil {
		return fmt.Errorf("enroll admin %s: %w", name, err)
	}
	if e.PrivateKey == nil || e.Config == "" {
		return fmt.Errorf("enroll admin %s: enrollment has no private key or config", name)
	}
	s := &shown{name: e.Peer.Name, pub: e.Peer.PublicKey, config: e.Config, expires: e.Peer.ExpiresAt}
	r.current = s
	r.logf("firstboot: pending admin %s enrolled (expires %s); showing its QR", s.name, e.Peer.ExpiresAt.UTC().Format(time.RFC3339))
	return r.show(s, e.Peer.ExpiresAt)
}

// freeName returns the first PREFIX-N not in the roster (revoked names stay taken).
func (r *runner) freeName(peers []enroll.Peer) string {
	for n := 1; ; n++ {
		name := fmt.Sprintf("%s-%d", r.cfg.NamePrefix, n)
		if !slices.ContainsFunc(peers, func(p enroll.Peer) bool { return p.Name == name }) {
			return name
		}
	}
}

// show writes the files first (so the console can point at them), then the console QR; it
// skips what an earlier call already wrote.
func (r *runner) show(s *shown, expires time.Time) error {
	var errs []error
	if r.cfg.BootDir == "" {
		s.filesOK = true
	}
	if !s.filesOK {
		if err := r.writeFiles(s); err != nil {
			errs = append(errs, err)
		} else {
			s.filesOK = true
		}
	}
	if !s.consoleOK {
		if err := r.printQR(s, expires); err != nil {
			errs = append(errs, err)
		} else {
			s.consoleOK = true
		}
	}
	return errors.Join(errs...)
}

func (r *runner) writeFiles(s *shown) error {
	png, err := r.cfg.PNGQR(s.config)
	if err != nil {
		return fmt.Errorf("render png: %w", err)
	}
	if err := statefile.WriteFAT(filepath.Join(r.cfg.BootDir, PNGName), png); err != nil {
		return err
	}
	return statefile.WriteFAT(filepath.Join(r.cfg.BootDir, ConfName), []byte(s.config))
}

func (r *runner) printQR(s *shown, expires time.Time) error {
	qr, err := r.cfg.TerminalQR(s.config)
	if err != nil {
		return fmt.Errorf("render terminal qr: %w", err)
	}
	var b strings.Builder
	b.WriteString(clearScreen)
	fmt.Fprintf(&b, "printgate: no admin yet. Scan this QR with the WireGuard app (+, Scan from QR code)\n")
	fmt.Fprintf(&b, "to become the admin of this gateway as %q.", s.name)
	if !expires.IsZero() {
		fmt.Fprintf(&b, " It expires at %s; a new one replaces it.", expires.UTC().Format("2006-01-02 15:04 MST"))
	}
	b.WriteString("\n")
	if r.cfg.BootDir != "" && s.filesOK {
		fmt.Fprintf(&b, "The same is in %s and %s on the boot partition.\n", PNGName, ConfName)
	}
	b.WriteString(BeginMarker + "\n")
	b.WriteString(strings.TrimRight(qr, "\n") + "\n")
	b.WriteString(EndMarker + "\n")
	return r.writeConsole(b.String())
}

// finish removes the secret files, clears the console if a QR was shown, and says so.
func (r *runner) finish(admin enroll.Peer) error {
	var errs []error
	if r.cfg.BootDir != "" {
		for _, name := range []string{ConfName, PNGName} {
			path := filepath.Join(r.cfg.BootDir, name)
			if err := os.Remove(path); err == nil {
				r.logf("firstboot: removed %s", path)
			} else if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
			}
		}
		if len(errs) == 0 {
			statefile.SyncDir(r.cfg.BootDir)
		}
	}
	if r.current != nil {
		msg := fmt.Sprintf("%sprintgate: admin %q has joined; the enrollment QR is no longer valid.\n", clearScreen, admin.Name)
		if err := r.writeConsole(msg); err != nil {
			errs = append(errs, err)
		}
		r.current = nil
	}
	r.logf("firstboot: admin %s is active; first boot done", admin.Name)
	return errors.Join(errs...)
}

func (r *runner) writeConsole(s string) error {
	if r.cfg.Console != nil {
		if _, err := io.WriteString(r.cfg.Console, s); err != nil {
			return fmt.Errorf("write console: %w", err)
		}
		return nil
	}
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscallNoCTTY, 0)
	if err != nil {
		return fmt.Errorf("open console: %w", err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, s); err != nil {
		return fmt.Errorf("write console: %w", err)
	}
	return nil
}

// configPublicKey returns the public key of the PrivateKey in a wg-quick config's [Interface].
func configPublicKey(conf string) (wgtypes.Key, bool) {
	for _, line := range strings.Split(conf, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "PrivateKey") {
			continue
		}
		key, err := wgtypes.ParseKey(strings.TrimSpace(v))
		if err != nil {
			return wgtypes.Key{}, false
		}
		return key.PublicKey(), true
	}
	return wgtypes.Key{}, false
}
