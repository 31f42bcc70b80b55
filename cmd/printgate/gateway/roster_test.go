package gateway

import (
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// TestIdentityWithoutLocks: while a write (or a slow stats round) holds the gateway's write
// lock, requests are still identified, API keys still checked, and listings still answer;
// the roster they see changes only when the next apply publishes it.
func TestIdentityWithoutLocks(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	en, err := g.Enroll(enroll.Request{Name: "phone", Role: enroll.Operator})
	if err != nil {
		t.Fatal(err)
	}
	id := identity{g}

	g.reg.Lock() // a stats round or an enrollment in progress
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, ok := id.WhoIs(en.Peer.IPv4); !ok || c.Name != "phone" || c.Role != enroll.Operator {
			t.Errorf("WhoIs(%v) = %+v, %v; want phone, operator", en.Peer.IPv4, c, ok)
		}
		if role, ok := id.CheckAPIKey("phone", en.APIKey); !ok || role != enroll.Operator {
			t.Errorf("CheckAPIKey(phone) = %v, %v; want operator", role, ok)
		}
		if _, ok := id.CheckAPIKey("someone-else", en.APIKey); ok {
			t.Error("CheckAPIKey accepted phone's key for another peer")
		}
		if ps := g.Peers(); len(ps) != 1 || ps[0].Name != "phone" {
			t.Errorf("Peers() = %+v", ps)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second): // a guard against a hang, not a speed check
		t.Error("identity lookups blocked on the gateway's write lock")
	}
	g.reg.Unlock()
	<-done

	// A revocation publishes a roster without the peer before it returns.
	if _, err := g.Revoke("phone"); err != nil {
		t.Fatal(err)
	}
	if c, ok := id.WhoIs(en.Peer.IPv4); ok {
		t.Errorf("WhoIs after revoke = %+v, want nobody", c)
	}
	if _, ok := id.CheckAPIKey("phone", en.APIKey); ok {
		t.Error("revoked peer's API key still accepted")
	}
}

// BenchmarkWhoIs measures a request's identity lookup under parallel load.
func BenchmarkWhoIs(b *testing.B) {
	dir := newState(b)
	g, err := Start(b.Context(), Config{StateDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	en, err := g.Enroll(enroll.Request{Name: "phone"})
	if err != nil {
		b.Fatal(err)
	}
	id := identity{g}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := id.WhoIs(en.Peer.IPv4); !ok {
				b.Error("WhoIs failed")
				return
			}
		}
	})
}
