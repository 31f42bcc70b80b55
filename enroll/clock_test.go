package enroll

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// reopen closes r (or, crashed, only lets go of its lock), runs between (the machine's clock
// while it is down) and opens dir again on clk.
func reopen(t *testing.T, r *Registry, dir string, clk *clock, crash bool, between func()) *Registry {
	t.Helper()
	if crash {
		// A kill -9: nothing written at exit, the lock goes with the process.
		r.mu.Lock()
		r.mu.closed = true
		r.mu.Unlock()
		unlockDir(r.lock)
	} else if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if between != nil {
		between()
	}
	return openState(t, dir, clk)
}

func pendingLive(r *Registry, name string) bool {
	p, ok := r.Peer(name)
	return ok && p.State == Pending
}

// TestClockSetBackAcrossRestart: a QR code with a one-minute TTL; the gateway restarts with
// its clock an hour back (a Pi without RTC, NTP not yet answered or spoofed). The TTL still
// runs out after one minute of the gateway's time, not an hour and a minute.
func TestClockSetBackAcrossRestart(t *testing.T) {
	for _, crash := range []bool{false, true} {
		dir, _ := newState(t, InitOptions{})
		clk := newClock()
		r := openState(t, dir, clk)
		e := mustEnroll(t, r, Request{Name: "phone", TTL: time.Minute})
		clk.Advance(10 * time.Second)
		before := r.Now()

		r = reopen(t, r, dir, clk, crash, func() {
			clk.Set(clk.Now().Add(-time.Hour))
			clk.Reboot()
		})
		if now := r.Now(); now.Before(before) && !crash {
			t.Errorf("crash=%v: the registry's time went back across the restart: %v, was %v", crash, now, before)
		}
		if !pendingLive(r, "phone") {
			t.Fatalf("crash=%v: pending peer gone right after the restart", crash)
		}
		clk.Advance(50 * time.Second)
		if crash {
			// The floor was last written at the enrollment: the 10 s between it and the
			// kill are unknowable, and the TTL counts from the floor.
			clk.Advance(10 * time.Second)
		}
		if _, ok := r.WhoIs(e.Peer.IPv4); ok || pendingLive(r, "phone") {
			t.Errorf("crash=%v: pending peer still live one TTL of gateway time after enrollment, with the clock set back an hour", crash)
		}
		if ev, err := r.Observe(nil, clk.Now()); err != nil || len(ev) != 1 || ev[0].Kind != EventExpired {
			t.Errorf("crash=%v: Observe = %v, %v; want one expiry", crash, ev, err)
		}
	}
}

// TestWrongClockCorrected: enrollments made under a 2001 clock (first boot before NTP) keep
// their whole TTL when the clock is corrected, in the same process and across a restart.
func TestWrongClockCorrected(t *testing.T) {
	real := newClock().Now()
	for _, restart := range []string{"none", "close", "crash"} {
		dir, _ := newState(t, InitOptions{})
		clk := newClock()
		clk.Set(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
		r := openState(t, dir, clk)
		if now := r.Now(); now.Before(Epoch) {
			t.Errorf("Now() = %v under a 2001 clock, want no earlier than %v", now, Epoch)
		}
		e := mustEnroll(t, r, Request{Name: "phone", TTL: 10 * time.Minute})
		clk.Advance(time.Minute)

		switch restart {
		case "none":
			clk.Set(real) // NTP answers
		case "close":
			// NTP answers, then the gateway restarts: Close saw the correction.
			clk.Set(real)
			r = reopen(t, r, dir, clk, false, clk.Reboot)
		case "crash":
			// The gateway dies, and the machine comes back with the right time.
			r = reopen(t, r, dir, clk, true, func() { clk.Set(real); clk.Reboot() })
		}
		if !pendingLive(r, "phone") {
			t.Fatalf("restart=%s: a 10-minute enrollment died 1 minute in, when the clock was corrected", restart)
		}
		if p, _ := r.Peer("phone"); p.ExpiresAt.Before(real) || p.ExpiresAt.After(real.Add(10*time.Minute)) {
			t.Errorf("restart=%s: ExpiresAt = %v after the correction, want within 10 minutes of %v", restart, p.ExpiresAt, real)
		}
		if ev, err := r.Observe(nil, clk.Now()); err != nil || len(ev) != 0 {
			t.Errorf("restart=%s: Observe after the correction = %v, %v; want no events", restart, ev, err)
		}
		clk.Advance(8*time.Minute + 30*time.Second)
		if _, ok := r.WhoIs(e.Peer.IPv4); !ok {
			t.Errorf("restart=%s: peer dead 9.5 minutes into a 10-minute TTL", restart)
		}
		clk.Advance(time.Minute)
		if restart == "crash" {
			// The floor was last written at the enrollment, a minute before the crash.
			clk.Advance(time.Minute)
		}
		if pendingLive(r, "phone") {
			t.Errorf("restart=%s: peer live 10.5 minutes of gateway time into a 10-minute TTL", restart)
		}
		// The file follows the correction: a commit writes the expiry on the corrected scale.
		if restart == "none" {
			mustEnroll(t, r, Request{Name: "other"})
			r = reopen(t, r, dir, clk, false, nil)
			if p, ok := r.Peer("other"); !ok || p.State != Pending {
				t.Errorf("restart=%s: the second enrollment did not survive a restart", restart)
			}
		}
	}
}

// TestClockFloorPersisted: the floor file exists after Open and every commit, is private, and
// never moves back.
func TestClockFloorPersisted(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	r := openState(t, dir, clk)
	path := filepath.Join(dir, FileClock)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no clock floor after Open: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("clock floor mode %v, want 0600", fi.Mode().Perm())
	}
	clk.Advance(time.Hour)
	mustEnroll(t, r, Request{Name: "phone"})
	f, err := readClockFloor(dir)
	if err != nil || !f.Time.Equal(clk.Now()) || f.WallBehind {
		t.Errorf("floor after a commit = %+v, %v; want %v, wall not behind", f, err, clk.Now())
	}
	r = reopen(t, r, dir, clk, false, func() { clk.Set(clk.Now().Add(-24 * time.Hour)) })
	g, _ := readClockFloor(dir)
	if g.Time.Before(f.Time) || !g.WallBehind {
		t.Errorf("floor after a restart on a clock set back = %+v, want no earlier than %v and the wall behind", g, f.Time)
	}
	if p, _ := r.Peer("phone"); !p.Created.Equal(f.Time) {
		t.Errorf("Created = %v, want %v", p.Created, f.Time)
	}
	// A damaged floor file does not stop the gateway.
	r.Close()
	os.WriteFile(path, []byte("{garbage"), 0o600)
	r = openState(t, dir, clk)
	if _, ok := r.Peer("phone"); !ok {
		t.Error("phone gone after a damaged clock floor")
	}
}
