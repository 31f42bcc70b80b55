package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The gateway's clock. A Raspberry Pi has no real-time clock: it boots with whatever time the
// image was made with (or 1970, or 2001 on some boards) and learns the time from NTP later, if
// ever; anyone on the LAN who can answer NTP can also set it back. A TTL judged on that wall
// clock is stretched by a clock set back and cut short when a wrong clock is corrected. So:
//
//   - The registry's time, G, never goes backwards, across restarts too: the latest G seen is
//     kept in STATE/clock.json (as fake-hwclock does on a Pi), written with every roster
//     commit (before the roster), every flush interval and on Close. At Open, G starts at max(wall, floor, Epoch).
//   - While the process runs, G advances by the monotonic clock and follows the wall clock
//     only forwards: a wall clock set back does not move G; a wall clock set forward moves G.
//   - A TTL is measured on the monotonic clock alone: every pending peer has a monotonic
//     deadline, made at enrollment or at Open from its remaining life (ExpiresAt − G). A jump
//     of the wall clock either way changes no deadline. Each roster commit writes ExpiresAt
//     again as G + what is left, so the file follows the corrections.
//   - Across a restart the remaining life is ExpiresAt − G(open) when the floor was written
//     under a sane wall clock (time that passed while the gateway was off counts), and
//     ExpiresAt − floor when the wall clock was behind G then (an implausible clock, e.g. 2001
//     before NTP): the correction that comes with the reboot does not cut the TTL short.
//
// What no clock floor can know: how long the gateway was off while its wall clock was wrong.
// That time does not count against a pending enrollment (the TTL runs on gateway uptime), so
// a pending QR code lives at most its TTL of the gateway's running time: never longer on a
// clock set back, never shorter on a clock corrected.

// FileClock holds the clock floor: the latest time the registry saw.
const FileClock = "clock.json"

// Epoch is the earliest plausible wall time: printgate did not exist before it, so a clock
// that reads earlier is wrong (a Pi before NTP) and G starts here instead.
var Epoch = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// clockSlack is how far the wall clock may run ahead of G before G follows it (NTP slews, and
// the monotonic and wall clocks drift apart a little), and how far behind it may run before
// it counts as behind.
const clockSlack = 2 * time.Second

// clockFloor is the content of FileClock.
type clockFloor struct {
	Time time.Time `json:"time"`
	// WallBehind: the wall clock was behind Time when it was written (set back, or not yet
	// set): an ExpiresAt written then is in G's scale, not the wall clock's.
	WallBehind bool `json:"wall_behind"`
}

// gatewayClock is G: never backwards, monotonic between corrections. Its own lock, so that
// readers under r.mu's read lock can use it.
type gatewayClock struct {
	wall func() time.Time
	mono func() time.Duration

	mu struct {
		sync.Mutex
		base   time.Time // G = base + mono()
		behind bool      // the wall clock was behind G at the last reading
	}
}

// newGatewayClock starts G at max(wall, floor, Epoch).
func newGatewayClock(wall func() time.Time, mono func() time.Duration, floor time.Time) *gatewayClock {
	c := &gatewayClock{wall: wall, mono: mono}
	g := wall().UTC()
	if g.Before(floor) {
		g = floor
	}
	if g.Before(Epoch) {
		g = Epoch
	}
	c.mu.base = g.Add(-mono())
	c.now()
	return c
}

// now returns G and follows a wall clock that moved forward.
func (c *gatewayClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.mono()
	g := c.mu.base.Add(m)
	w := c.wall().UTC()
	if w.After(g.Add(clockSlack)) && !w.Before(Epoch) {
		c.mu.base = w.Add(-m)
		g = w
	}
	c.mu.behind = w.Before(g.Add(-clockSlack))
	return g
}

// floor is what to persist: G now and whether the wall clock is behind it.
func (c *gatewayClock) floor() clockFloor {
	g := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return clockFloor{Time: g, WallBehind: c.mu.behind}
}

// readClockFloor reads FileClock. A missing file (a state directory from before the clock
// floor) is the zero floor; a damaged one is reported and then treated as missing: the floor
// guards TTLs, and a lost floor only loses that guard for one restart.
func readClockFloor(dir string) (clockFloor, error) {
	data, err := os.ReadFile(filepath.Join(dir, FileClock))
	if errors.Is(err, fs.ErrNotExist) {
		return clockFloor{}, nil
	}
	if err != nil {
		return clockFloor{}, fmt.Errorf("read clock floor: %w", err)
	}
	var f clockFloor
	if err := DecodeStrict(data, &f); err != nil {
		return clockFloor{}, fmt.Errorf("read clock floor %s: %w", FileClock, err)
	}
	return f, nil
}

// writeFloorLocked persists G as the floor; r.mu held for writing.
func (r *Registry) writeFloorLocked() error {
	f := r.clock.floor()
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(r.dir, FileClock, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write clock floor: %w", err)
	}
	r.mu.floorSaved = r.clock.mono()
	return nil
}

// saveClockLocked persists the floor; when a wall clock correction since the last commit left
// a pending expiry on disk on the old scale, it commits the roster (which writes the floor
// first) so that the two agree. r.mu held for writing.
func (r *Registry) saveClockLocked() error {
	g := r.clock.now()
	for i := range r.mu.peers {
		p := &r.mu.peers[i]
		if p.State == Pending && r.expiresLocked(p, g).Sub(p.ExpiresAt).Abs() > clockSlack {
			return r.commitLocked(r.copyPeersLocked(), r.mu.printers, r.mu.next)
		}
	}
	return r.writeFloorLocked()
}

// startClock reads the floor, starts G and gives every pending peer its monotonic deadline
// from its remaining life. Called once by OpenWith after load.
func (r *Registry) startClock() {
	f, err := readClockFloor(r.dir)
	if err != nil {
		r.opts.Logf("enroll: %v; the clock floor starts again", err)
	}
	r.clock = newGatewayClock(r.opts.Now, r.opts.Monotonic, f.Time)
	g := r.clock.now()
	from := g // the wall clock was sane when the floor was written: downtime counts
	if f.WallBehind && f.Time.Before(g) {
		from = f.Time // it was not: what was left then is left now
	}
	m := r.clock.mono()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.mu.peers {
		if p.State == Pending {
			// No pending peer lives longer than MaxTTL from here, whatever the files say.
			r.mu.deadline[p.PublicKey] = m + min(p.ExpiresAt.Sub(from), MaxTTL)
		}
	}
	if err := r.writeFloorLocked(); err != nil {
		r.opts.Logf("enroll: %v", err)
	}
}

// expiresLocked is a pending p's expiry on the scale of clock t (G, or the wall clock): t
// plus what is left of its monotonic deadline. r.mu held.
func (r *Registry) expiresLocked(p *Peer, t time.Time) time.Time {
	if d, ok := r.mu.deadline[p.PublicKey]; ok && p.State == Pending {
		return t.Add(d - r.clock.mono())
	}
	return p.ExpiresAt
}

// viewLocked is the copy of p handed out: a pending peer's ExpiresAt is on the wall clock's
// scale now (what a person reading it compares it with; Peer.Live on the wall clock agrees
// with the registry until the wall clock jumps). Within clockSlack the recorded ExpiresAt is
// kept, so the time shown does not jitter from one look to the next (every gateway of a mesh
// shows the one the mesh recorded). r.mu held.
func (r *Registry) viewLocked(p *Peer) Peer {
	c := p.clone()
	if c.State == Pending {
		if e := r.expiresLocked(p, r.opts.Now().UTC()); e.Sub(c.ExpiresAt).Abs() > clockSlack {
			c.ExpiresAt = e
		}
	}
	return c
}

// Now is the registry's clock: never earlier than any time it saw before, in this process
// or an earlier one (see FileClock).
func (r *Registry) Now() time.Time { return r.clock.now() }
