package enroll

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPendingExpiry(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	r := openState(t, dir, clk)
	e := mustEnroll(t, r, Request{Name: "phone", TTL: 10 * time.Minute})
	keep := mustEnroll(t, r, Request{Name: "kept"}) // default TTL, handshakes in time
	if got, want := e.Peer.ExpiresAt, clk.Now().Add(10*time.Minute); !got.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", got, want)
	}
	if got, want := keep.Peer.ExpiresAt, clk.Now().Add(DefaultTTL); !got.Equal(want) {
		t.Errorf("default ExpiresAt = %v, want %v", got, want)
	}

	clk.Advance(9 * time.Minute)
	ev, err := r.Observe([]Observation{{PublicKey: keep.Peer.PublicKey, LastHandshake: clk.Now()}}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 1 || ev[0].Kind != EventActivated || ev[0].Name != "kept" {
		t.Errorf("Observe at 9m = %v, want one activation of kept", ev)
	}
	if _, ok := r.WhoIs(e.Peer.IPv4); !ok {
		t.Error("WhoIs misses a pending peer before its expiry")
	}

	// At the expiry instant the peer is dead even before Observe records it.
	clk.Advance(time.Minute)
	if _, ok := r.WhoIs(e.Peer.IPv4); ok {
		t.Error("WhoIs finds a pending peer at its expiry")
	}
	if dps := r.DevicePeers(); len(dps) != 1 || dps[0].Name != "kept" {
		t.Errorf("DevicePeers at expiry = %v, want only kept", dps)
	}
	ev, err = r.Observe(nil, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 1 || ev[0].Kind != EventExpired || ev[0].Name != "phone" {
		t.Errorf("Observe at 10m = %v, want one expiry of phone", ev)
	}
	// A late handshake report does not bring it back.
	if ev, _ := r.Observe([]Observation{{PublicKey: e.Peer.PublicKey, LastHandshake: clk.Now()}}, clk.Now()); len(ev) != 0 {
		t.Errorf("Observe(handshake of an expired peer) = %v, want nothing", ev)
	}
	clk.Advance(time.Hour) // long past the default TTL: active peers stay
	r.Observe(nil, clk.Now())
	r.Close()

	r2 := openState(t, dir, clk)
	states := map[string]State{}
	for _, p := range r2.Peers() {
		states[p.Name] = p.State
	}
	if states["phone"] != Expired || states["kept"] != Active {
		t.Errorf("after restart states = %v, want phone expired, kept active", states)
	}
	again := mustEnroll(t, r2, Request{Name: "phone"})
	if again.Peer.IPv4 == e.Peer.IPv4 {
		t.Errorf("expired peer's address %v handed out again", e.Peer.IPv4)
	}
}

func TestHandshakeJustBeforeExpiryCounts(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	r := openState(t, dir, clk)
	e := mustEnroll(t, r, Request{Name: "phone", TTL: time.Minute})
	hs := clk.Now().Add(59 * time.Second)
	clk.Advance(65 * time.Second) // the poll comes after the TTL
	ev, err := r.Observe([]Observation{{PublicKey: e.Peer.PublicKey, LastHandshake: hs}}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 1 || ev[0].Kind != EventActivated {
		t.Errorf("Observe = %v, want activation", ev)
	}
	if p, ok := r.WhoIs(e.Peer.IPv4); !ok || p.State != Active || !p.FirstHandshake.Equal(hs) {
		t.Errorf("WhoIs = %v, %v; want active since %v", p, ok, hs)
	}
}

func TestCloneFlag(t *testing.T) {
	a := netip.MustParseAddrPort("198.51.100.1:40000")
	b := netip.MustParseAddrPort("203.0.113.7:51000")
	c := netip.MustParseAddrPort("203.0.113.7:51001")
	d := netip.MustParseAddrPort("192.0.2.44:6000")
	tests := []struct {
		name  string
		seq   []netip.AddrPort
		step  time.Duration
		clone bool
	}{
		{"two devices alternate", []netip.AddrPort{a, b, a, b, a}, 25 * time.Second, true},
		{"same NAT, two ports", []netip.AddrPort{b, c, b, c, b, c}, 25 * time.Second, true},
		{"roaming wifi-lte-wifi", []netip.AddrPort{a, b, a}, time.Minute, false},
		{"NAT rebinding", []netip.AddrPort{a, b, c, d}, 25 * time.Second, false},
		{"steady", []netip.AddrPort{a, a, a, a, a, a}, 25 * time.Second, false},
		{"slow alternation outside the window", []netip.AddrPort{a, b, a, b, a}, 6 * time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := newState(t, InitOptions{})
			clk := newClock()
			r := openState(t, dir, clk)
			e := mustEnroll(t, r, Request{Name: "phone"})
			var flagged []Event
			for _, ep := range tt.seq {
				clk.Advance(tt.step)
				ev, err := r.Observe([]Observation{{PublicKey: e.Peer.PublicKey, Endpoint: ep, LastHandshake: clk.Now()}}, clk.Now())
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range ev {
					if x.Kind == EventClone {
						flagged = append(flagged, x)
					}
				}
			}
			p, _ := r.Peer("phone")
			if p.Clone != tt.clone || (len(flagged) == 1) != tt.clone {
				t.Fatalf("sequence %v: Clone = %v with events %v, want %v (one event)", tt.seq, p.Clone, flagged, tt.clone)
			}
			if !tt.clone {
				return
			}
			if len(p.CloneEndpoints) != 2 || p.CloneEndpoints[0] == p.CloneEndpoints[1] {
				t.Errorf("CloneEndpoints = %v, want the two sources", p.CloneEndpoints)
			}
			// Visible in Peers, and kept across a restart.
			r.Close()
			r2 := openState(t, dir, clk)
			if ps := r2.Peers(); len(ps) != 1 || !ps[0].Clone {
				t.Errorf("after restart Peers = %v, want the clone flag", ps)
			}
			if err := r2.ClearClone("phone"); err != nil {
				t.Fatal(err)
			}
			if p, _ := r2.Peer("phone"); p.Clone {
				t.Error("ClearClone left the flag up")
			}
		})
	}
}

func TestObserveThrottlesWrites(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	r, err := OpenWith(dir, Options{Now: clk.Now, Monotonic: clk.Mono, FlushInterval: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	e := mustEnroll(t, r, Request{Name: "phone"})
	ep := netip.MustParseAddrPort("198.51.100.1:40000")
	obs := func(rx int64) {
		t.Helper()
		if _, err := r.Observe([]Observation{{PublicKey: e.Peer.PublicKey, Endpoint: ep, LastHandshake: clk.Now(), Rx: rx}}, clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	obs(1) // activation: written at once
	gen := r.Generation()
	rosterPath := filepath.Join(dir, FileRoster)
	before, _ := os.ReadFile(rosterPath)
	for i := 0; i < 20; i++ { // 20 polls over 4 minutes: no write
		clk.Advance(12 * time.Second)
		obs(int64(100 + i))
	}
	after, _ := os.ReadFile(rosterPath)
	if r.Generation() != gen || !bytes.Equal(before, after) {
		t.Errorf("20 polls within the flush interval wrote the roster (generation %d -> %d)", gen, r.Generation())
	}
	if p, _ := r.Peer("phone"); p.RxBytes != 119 {
		t.Errorf("in-memory RxBytes = %d, want 119", p.RxBytes)
	}
	clk.Advance(2 * time.Minute)
	obs(500)
	if r.Generation() != gen+1 {
		t.Errorf("after the flush interval generation = %d, want %d", r.Generation(), gen+1)
	}
	clk.Advance(time.Second)
	obs(600)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := openState(t, dir, clk)
	if p, _ := r2.Peer("phone"); p.RxBytes != 600 || !p.LastHandshake.Equal(clk.Now()) {
		t.Errorf("after Close and reopen RxBytes = %d, handshake %v; want 600, %v", p.RxBytes, p.LastHandshake, clk.Now())
	}
}

func TestExpiryDespiteWallClockSetBack(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	var mono time.Duration
	r, err := OpenWith(dir, Options{Now: clk.Now, Monotonic: func() time.Duration { return mono }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	e := mustEnroll(t, r, Request{Name: "phone", TTL: 10 * time.Minute})
	// NTP sets the wall clock a day back; ten minutes really pass.
	clk.Advance(-24 * time.Hour)
	mono += 9 * time.Minute
	if _, ok := r.WhoIs(e.Peer.IPv4); !ok {
		t.Fatal("peer dead before its TTL passed on the monotonic clock")
	}
	mono += time.Minute
	if _, ok := r.WhoIs(e.Peer.IPv4); ok {
		t.Error("WhoIs finds a pending peer whose TTL passed on the monotonic clock")
	}
	if ps := r.Peers(); ps[0].State != Expired {
		t.Errorf("Peers state = %s, want expired", ps[0].State)
	}
	ev, err := r.Observe(nil, clk.Now())
	if err != nil || len(ev) != 1 || ev[0].Kind != EventExpired {
		t.Errorf("Observe = %v, %v; want one expiry", ev, err)
	}
}

// TestMeshTimes: a mesh enrollment is recorded with the times the mesh gave it, so every
// gateway shows the same created and expires_at; a deadline already past changes nothing.
func TestMeshTimes(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	clk := newClock()
	r := openState(t, dir, clk)
	created, until := clk.Now().Add(-3*time.Second), clk.Now().Add(7*time.Minute)
	e := mustEnroll(t, r, Request{Name: "phone", TTL: time.Hour, Created: created, ExpiresAt: until})
	if !e.Peer.Created.Equal(created) || !e.Peer.ExpiresAt.Equal(until) {
		t.Errorf("created %v, expires %v; want %v, %v", e.Peer.Created, e.Peer.ExpiresAt, created, until)
	}
	clk.Advance(7*time.Minute - time.Second)
	if _, ok := r.WhoIs(e.Peer.IPv4); !ok {
		t.Error("pending peer dead before the mesh's deadline")
	}
	clk.Advance(time.Second)
	if _, ok := r.WhoIs(e.Peer.IPv4); ok {
		t.Error("pending peer alive at the mesh's deadline (the TTL of the request was used)")
	}
	before := len(r.Peers())
	if _, err := r.Enroll(Request{Name: "late", ExpiresAt: clk.Now().Add(-time.Second)}); err == nil {
		t.Error("enrollment with a deadline already past: no error")
	}
	if got := len(r.Peers()); got != before {
		t.Errorf("a refused enrollment changed the roster: %d peers, want %d", got, before)
	}
}
