package enroll

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Observation is what the WireGuard device reports about one peer (the daemon converts
// tunnel.PeerStats to it).
type Observation struct {
	PublicKey     wgtypes.Key
	Endpoint      netip.AddrPort // zero: none yet
	LastHandshake time.Time      // zero: never
	Rx, Tx        int64
}

// EventKind names a life-cycle change.
type EventKind string

// What Observe reports.
const (
	EventActivated EventKind = "activated" // first handshake: pending → active
	EventExpired   EventKind = "expired"   // TTL passed without a handshake: off the device
	EventClone     EventKind = "clone"     // the key is in use from two places at once
)

// Event is one life-cycle change. After EventExpired the daemon must re-apply DevicePeers.
type Event struct {
	Kind      EventKind
	Name      string
	PublicKey wgtypes.Key
	At        time.Time
	Detail    string
}

func (e Event) String() string {
	s := fmt.Sprintf("peer %s %s", e.Name, e.Kind)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// track is the recent endpoint history of one key, for clone detection.
type track struct {
	cur, prev netip.AddrPort
	returns   []time.Time // times the endpoint went back to the one before the current
}

// note records endpoint ep seen at now and reports whether the key now looks cloned: within
// window the endpoint went back to the source before the last one at least flips times
// (A→B→A→B…). A phone roaming Wi-Fi → LTE → Wi-Fi returns once; a NAT rebinding moves to a
// new port and never returns; two devices sharing one key return with every keepalive.
func (t *track) note(ep netip.AddrPort, now time.Time, window time.Duration, flips int) bool {
	if ep.IsValid() && ep != t.cur {
		if t.cur.IsValid() && ep == t.prev {
			t.returns = append(t.returns, now)
		}
		t.prev, t.cur = t.cur, ep
	}
	keep := t.returns[:0]
	for _, at := range t.returns {
		if now.Sub(at) < window {
			keep = append(keep, at)
		}
	}
	t.returns = keep
	return len(t.returns) >= flips
}

// Observe feeds the device's per-peer statistics into the life cycle at time now:
//
//  1. a pending peer with a handshake becomes active (written at once);
//  2. a pending peer past its expiry becomes expired (written at once; the daemon must
//     re-apply DevicePeers so the device drops it);
//  3. a key whose endpoint keeps alternating between two sources is flagged Clone (written
//     at once, logged, and shown by Peers);
//  4. handshake times, endpoints and byte counters are kept in memory and written at most
//     every FlushInterval (and on Flush/Close), to spare SD cards.
//
// Observations of unknown or dead keys are ignored.
func (r *Registry) Observe(stats []Observation, now time.Time) ([]Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return nil, fmt.Errorf("observe: %w", errClosed)
	}
	now = now.UTC()
	// Observation fields change in place (they are in-memory facts either way); state
	// changes are collected and committed as one new generation, or not at all.
	type change struct {
		i    int
		kind EventKind
		hs   time.Time
		eps  []netip.AddrPort
	}
	var changes []change
	var events []Event
	activated := map[int]bool{}
	observed := false
	for _, o := range stats {
		i, ok := r.mu.byKey[o.PublicKey]
		if !ok {
			continue
		}
		p := &r.mu.peers[i]
		if p.State != Pending && p.State != Active {
			continue
		}
		if !o.LastHandshake.IsZero() {
			hs := o.LastHandshake.UTC()
			// A pending peer is on the device only while its TTL runs: a handshake seen while
			// it is live counts, whatever the wall clock says of ExpiresAt.
			if p.State == Pending && (hs.Before(p.ExpiresAt) || r.liveLocked(p, now)) && !activated[i] {
				activated[i] = true
				changes = append(changes, change{i: i, kind: EventActivated, hs: hs})
				events = append(events, Event{Kind: EventActivated, Name: p.Name, PublicKey: p.PublicKey, At: now,
					Detail: "first handshake from " + o.Endpoint.String()})
			}
			if hs.After(p.LastHandshake) {
				p.LastHandshake = hs
				observed = true
			}
		}
		if o.Endpoint.IsValid() && o.Endpoint != p.Endpoint {
			if !p.FirstEndpoint.IsValid() {
				p.FirstEndpoint = o.Endpoint
			}
			p.Endpoint = o.Endpoint
			observed = true
		}
		if o.Rx != p.RxBytes || o.Tx != p.TxBytes {
			p.RxBytes, p.TxBytes = o.Rx, o.Tx
			observed = true
		}
		t := r.mu.tracks[o.PublicKey]
		if t == nil {
			t = &track{}
			r.mu.tracks[o.PublicKey] = t
		}
		if t.note(o.Endpoint, now, r.opts.CloneWindow, r.opts.CloneFlips) && !p.Clone {
			eps := []netip.AddrPort{t.prev, t.cur}
			changes = append(changes, change{i: i, kind: EventClone, eps: eps})
			events = append(events, Event{Kind: EventClone, Name: p.Name, PublicKey: p.PublicKey, At: now,
				Detail: fmt.Sprintf("endpoint alternates between %v and %v: the same config is in use on two devices", eps[0], eps[1])})
		}
	}
	// Expiry after activation: a handshake just before the TTL ran out counts.
	for i := range r.mu.peers {
		p := &r.mu.peers[i]
		if p.State == Pending && !activated[i] && !r.liveLocked(p, now) {
			changes = append(changes, change{i: i, kind: EventExpired})
			events = append(events, Event{Kind: EventExpired, Name: p.Name, PublicKey: p.PublicKey, At: now,
				Detail: "no handshake before " + p.ExpiresAt.Format(time.RFC3339)})
		}
	}
	if observed {
		r.mu.dirty = true
	}
	switch {
	case len(changes) > 0:
		peers := r.copyPeersLocked()
		for _, c := range changes {
			p := &peers[c.i]
			switch c.kind {
			case EventActivated:
				p.State, p.FirstHandshake = Active, c.hs
			case EventClone:
				p.Clone, p.CloneAt, p.CloneEndpoints = true, now, c.eps
			case EventExpired:
				p.State = Expired
			}
		}
		if err := r.commitLocked(peers, r.mu.printers, r.mu.next); err != nil {
			// Nothing changed state; the next observation tries again.
			return nil, fmt.Errorf("observe: %w", err)
		}
		r.mu.saved = now // the flush interval runs on the caller's clock
	case r.mu.dirty && now.Sub(r.mu.saved) >= r.opts.FlushInterval:
		if err := r.flushLocked(); err != nil {
			return nil, fmt.Errorf("observe: %w", err)
		}
		r.mu.saved = now
	}
	if r.clock.mono()-r.mu.floorSaved >= r.opts.FlushInterval {
		if err := r.saveClockLocked(); err != nil {
			r.opts.Logf("enroll: %v", err)
		}
	}
	// The caller logs the events it gets back (the gateway, once each; a clone as an alarm).
	return events, nil
}

// ClearClone lowers the clone flag of the live peer named name (after a person has checked).
func (r *Registry) ClearClone(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return fmt.Errorf("clear clone flag %s: %w", name, errClosed)
	}
	now := r.clock.now()
	peers := r.copyPeersLocked()
	for i := range peers {
		p := &peers[i]
		if p.Name == name && r.liveLocked(p, now) {
			p.Clone, p.CloneAt, p.CloneEndpoints = false, time.Time{}, nil
			delete(r.mu.tracks, p.PublicKey)
			return r.commitLocked(peers, r.mu.printers, r.mu.next)
		}
	}
	return fmt.Errorf("clear clone flag %s: no pending or active peer of that name: %w", name, ErrNotFound)
}
