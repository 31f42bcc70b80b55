package gateway

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// TestEnrollWithTheClockSetBack: a gateway whose wall clock is two hours behind what its
// registry saw last (a Pi without a real-time clock before NTP) still enrolls, in the daemon
// and offline, with the full TTL counted on the registry's clock, which is the clock the
// mesh's deadline is on.
func TestEnrollWithTheClockSetBack(t *testing.T) {
	dir := newState(t)
	floor, err := json.Marshal(map[string]any{"time": time.Now().UTC().Add(2 * time.Hour), "wall_behind": false})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, enroll.FileClock), floor, 0o600); err != nil {
		t.Fatal(err)
	}
	type registry interface {
		Now() time.Time
		Peer(string) (enroll.Peer, bool)
	}
	check := func(how, name string, reg registry, mesh func(string) (time.Time, bool)) {
		t.Helper()
		if _, live := reg.Peer(name); !live {
			t.Errorf("%s: %s is not live in the registry", how, name)
		}
		at, ok := mesh(name)
		if left := at.Sub(reg.Now()); !ok || left < enroll.DefaultTTL-time.Minute || left > enroll.DefaultTTL {
			t.Errorf("%s: the mesh has %s pending for %v on the registry's clock, want about %v", how, name, left, enroll.DefaultTTL)
		}
	}

	g := startGateway(t, dir)
	e, err := g.Enroll(enroll.Request{Name: "phone"})
	if err != nil {
		t.Fatalf("enroll with the wall clock behind the registry's: %v", err)
	}
	check("daemon", e.Peer.Name, g.reg.r, func(name string) (time.Time, bool) {
		d, ok := g.node.Roster().Device(name)
		return d.ExpiresAt, ok
	})
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	reg, off := openOffline(t, dir)
	e, err = off.Enroll(enroll.Request{Name: "laptop"})
	if err != nil {
		t.Fatalf("offline enroll with the wall clock behind the registry's: %v", err)
	}
	check("offline", e.Peer.Name, reg, func(name string) (time.Time, bool) {
		d, ok := off.node.Roster().Device(name)
		return d.ExpiresAt, ok
	})
}

// openOffline opens dir's registry and its offline mesh node, as the CLI does with no daemon
// running; both are closed when the test ends.
func openOffline(t *testing.T, dir string) (*enroll.Registry, *Offline) {
	t.Helper()
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	off, err := OpenOffline(reg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { off.Close() })
	return reg, off
}
