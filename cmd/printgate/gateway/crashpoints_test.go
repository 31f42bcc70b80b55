package gateway

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// TestRotateLocalWriteFails: a rotation the mesh committed but this gateway could not record
// (the roster write failed) leaves neither key working here, never both, and says to rotate
// again; a rotation once the state directory is writable again gives a key that works, and
// the first key stays refused.
func TestRotateLocalWriteFails(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	e, err := g.Enroll(enroll.Request{Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, e.Config)
	hc := cl.httpClient(false)
	url := "http://" + g.Addrs()[0].String() + "/api/v1/whoami"
	waitFor(t, "phone reaching the gateway", func() bool { _, err := get(hc, url); return err == nil })
	waitFor(t, "phone active in the mesh", func() bool {
		d, ok := g.node.Roster().Device("phone")
		return ok && d.State == mesh.Active
	})
	id := identity{g}
	if _, ok := id.CheckAPIKey("phone", e.APIKey); !ok {
		t.Fatal("phone's key refused before any rotation")
	}
	before, _ := g.node.Roster().Device("phone")

	// The roster can no longer be replaced: its name is taken by a directory that is not empty.
	roster := filepath.Join(dir, enroll.FileRoster)
	saved, err := os.ReadFile(roster)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(roster); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(roster, "blocked"), 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := g.rotateAPIKey("phone", "")
	if err == nil || key != "" || !strings.Contains(err.Error(), "rotate again") {
		t.Fatalf("rotate with the roster unwritable = %q, %v; want an error that says to rotate again, no key", key, err)
	}
	after, _ := g.node.Roster().Device("phone")
	if bytes.Equal(after.APIKeyHash, before.APIKeyHash) {
		t.Fatal("the mesh kept the old key's hash: the failure came before the commit, not after it")
	}
	if _, ok := id.CheckAPIKey("phone", e.APIKey); ok {
		t.Error("the old key still works on its home gateway after the mesh took a new one")
	}

	// The disk is back: rotating again records a key that works, and only that one.
	if err := os.RemoveAll(roster); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(roster, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err = g.rotateAPIKey("phone", "")
	if err != nil {
		t.Fatalf("rotate once the roster is writable: %v", err)
	}
	if _, ok := id.CheckAPIKey("phone", key); !ok {
		t.Error("the new key is refused after a rotation that succeeded")
	}
	if _, ok := id.CheckAPIKey("phone", e.APIKey); ok {
		t.Error("the first key works again after the second rotation")
	}
	if body, err := get(hc, url); err != nil || !strings.Contains(body, "phone") {
		t.Errorf("phone after the rotations: %q, %v; want still served", body, err)
	}
}

// TestActivationAfterCrash: a gateway killed after its registry recorded a device's first
// handshake but before the mesh committed it (the registry says active, the mesh pending)
// commits the activation at its first stats round after the restart, with the recorded time,
// with no new handshake: the mesh never lists a connected device as pending for good.
func TestActivationAfterCrash(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	e, err := g.Enroll(enroll.Request{Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	// What the registry holds when the kill came between its write and the mesh commit.
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := reg.Now().Add(-time.Minute).Truncate(time.Second)
	ev, err := reg.Observe([]enroll.Observation{{PublicKey: e.Peer.PublicKey, LastHandshake: at}}, reg.Now())
	if err != nil || len(ev) != 1 || ev[0].Kind != enroll.EventActivated {
		t.Fatalf("observe the first handshake offline = %v, %v; want one activation", ev, err)
	}
	p, _ := reg.Peer("phone")
	first := p.FirstHandshake
	if p.State != enroll.Active || first.IsZero() {
		t.Fatalf("the registry has phone %+v, want active with its first handshake", p)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	reg2, off := openOffline(t, dir)
	if d, ok := off.node.Roster().Device("phone"); !ok || !d.Pending() {
		t.Fatalf("the mesh before the restart has phone %+v, want pending", d)
	}
	off.Close()
	reg2.Close()

	g = startGateway(t, dir)
	waitFor(t, "the first handshake committed in the mesh", func() bool {
		d, ok := g.node.Roster().Device("phone")
		return ok && d.State == mesh.Active && !d.Pending()
	})
	d, _ := g.node.Roster().Device("phone")
	if !d.Activated.Equal(first) {
		t.Errorf("the mesh has phone activated at %v, the registry recorded %v", d.Activated, first)
	}
}
