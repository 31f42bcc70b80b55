package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/mesh/meshtest"
)

// eventually is the bound on anything a test waits for: generous, for a loaded 2-core
// machine under -race. Tests never assert how fast something happens, only that it does.
const eventually = 90 * time.Second

// testLogf is t.Logf that falls silent once the test is over.
func testLogf(t testing.TB) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(format, args...)
		}
	}
}

type testNode struct {
	id, dir, addr string
	key           Key
	*Node
}

type cluster struct {
	t     testing.TB
	net   *meshtest.Net
	tune  func(*Config)
	nodes []*testNode
}

// newCluster starts size nodes: the first bootstraps the mesh, the others are added as
// gateways and voters through it.
func newCluster(t testing.TB, size int, tune func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, net: meshtest.New(), tune: tune}
	base := t.TempDir()
	for i := 1; i <= size; i++ {
		tn := &testNode{id: fmt.Sprintf("gw%d", i), dir: filepath.Join(base, fmt.Sprintf("gw%d", i)), key: newKey(t)}
		c.nodes = append(c.nodes, tn)
		c.start(tn)
	}
	ctx := context.Background()
	first := c.nodes[0]
	c.retry("bootstrap", func() error {
		_, err := first.Bootstrap(ctx, InitCmd{Prefix4: netip.MustParsePrefix("10.77.0.0/20"), Prefix6: netip.MustParsePrefix("fd77::/64"),
			Gateway: AddGatewayCmd{Name: first.id, PublicKey: first.key, Endpoint: first.addr}})
		return err
	})
	for _, tn := range c.nodes[1:] {
		c.retry("add gateway "+tn.id, func() error {
			_, err := first.AddGateway(ctx, AddGatewayCmd{Name: tn.id, PublicKey: tn.key, Endpoint: tn.addr})
			return err
		})
		c.retry("add voter "+tn.id, func() error { return first.AddVoter(ctx, tn.id, tn.addr) })
	}
	c.converged()
	return c
}

func (c *cluster) start(tn *testNode) {
	c.t.Helper()
	ln := c.net.Listen(c.t, tn.addr)
	tn.addr = ln.Addr().String()
	cfg := Config{ID: tn.id, Dir: tn.dir, Listener: ln, Dial: c.net.Dialer(tn.addr)}
	if _, bench := c.t.(*testing.B); !bench {
		cfg.Logf = testLogf(c.t)
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	n, err := Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	tn.Node = n
	c.t.Cleanup(func() { n.Close() })
}

func (c *cluster) stop(tn *testNode) {
	c.t.Helper()
	if err := tn.Close(); err != nil {
		c.t.Fatalf("close %s: %v", tn.id, err)
	}
}

// running are the nodes not closed.
func (c *cluster) running() []*testNode {
	var out []*testNode
	for _, tn := range c.nodes {
		tn.closed.Lock()
		up := !tn.closed.yes
		tn.closed.Unlock()
		if up {
			out = append(out, tn)
		}
	}
	return out
}

// unsettled reports whether err says only that the mesh could not decide: no quorum within
// the bound (an election on a loaded machine) or a raft-level refusal, not the roster's answer.
func unsettled(err error) bool {
	return errors.Is(err, ErrNoQuorum) || codeOf(err) == ""
}

// retry runs f until it succeeds, sending it again while the mesh is unsettled (every
// command is idempotent when retried as is). The roster's refusals fail the test.
func (c *cluster) retry(what string, f func() error) {
	c.t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		err := f()
		if err == nil {
			return
		}
		if !unsettled(err) || time.Now().After(deadline) {
			c.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expect runs f, again while the mesh is unsettled, and returns its answer.
func (c *cluster) expect(f func() error) error {
	c.t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		err := f()
		if err == nil || !unsettled(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond until it holds.
func (c *cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(eventually)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader waits for a leader among the given nodes (the running ones when none are given).
func (c *cluster) leader(among ...*testNode) *testNode {
	c.t.Helper()
	if len(among) == 0 {
		among = c.running()
	}
	var l *testNode
	c.waitFor("a leader", func() bool {
		for _, tn := range among {
			if tn.isLeader() {
				l = tn
				return true
			}
		}
		return false
	})
	return l
}

func (c *cluster) follower(among ...*testNode) *testNode {
	c.t.Helper()
	l := c.leader(among...)
	if len(among) == 0 {
		among = c.running()
	}
	for _, tn := range among {
		if tn != l {
			return tn
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// converged waits until the given nodes (the running ones when none are given) hold the
// same committed roster at the same index, and returns it.
func (c *cluster) converged(among ...*testNode) *Roster {
	c.t.Helper()
	if len(among) == 0 {
		among = c.running()
	}
	var r *Roster
	c.waitFor("replicas to converge", func() bool {
		r = among[0].fsm.Roster()
		for _, tn := range among[1:] {
			o := tn.fsm.Roster()
			if o.Index() != r.Index() || !o.Equal(r) {
				return false
			}
		}
		return r.Index() > 0
	})
	return r
}

func (c *cluster) enroll(via *testNode, name string) Device {
	c.t.Helper()
	var d Device
	k := newKey(c.t) // one key for every attempt: a retried enrollment is the same one
	c.retry("enroll "+name, func() error {
		var err error
		d, err = via.Enroll(context.Background(), EnrollCmd{Name: name, Role: Operator, PublicKey: k, Home: via.id})
		return err
	})
	return d
}

func TestClusterEnrollOnFollowerIsForwarded(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	f := c.follower()
	var d Device
	k := newKey(t)
	c.retry("enroll on follower "+f.id, func() error {
		var err error
		d, err = f.Enroll(context.Background(), EnrollCmd{Name: "phone", Role: Viewer, PublicKey: k, Home: f.id})
		return err
	})
	if !d.Created.After(time.Time{}) || d.Home != f.id {
		t.Errorf("enrolled %v created %v", d, d.Created)
	}
	r := c.converged()
	for _, tn := range c.nodes {
		got, ok := tn.Roster().WhoIs(d.IPv4)
		if !ok || got.Name != "phone" || got.State != Active {
			t.Errorf("%s: WhoIs(%v) = %v, %v; want phone active", tn.id, d.IPv4, got, ok)
		}
	}
	if len(r.Gateways()) != 3 {
		t.Errorf("roster has %d gateways, want 3", len(r.Gateways()))
	}
	// A refusal from the leader arrives on the follower as the same error.
	if err := c.expect(func() error {
		_, err := f.Enroll(context.Background(), EnrollCmd{Name: "phone", Role: Viewer, PublicKey: newKey(t), Home: f.id})
		return err
	}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate enroll on follower = %v, want ErrExists", err)
	}
	c.retry("add printer", func() error { _, err := f.AddPrinter(context.Background(), "mk4", f.id); return err })
	other := c.nodes[0]
	if other == f {
		other = c.nodes[1]
	}
	if err := c.expect(func() error {
		_, err := other.AddPrinter(context.Background(), "mk4", other.id)
		return err
	}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate printer on another gateway = %v, want ErrExists", err)
	}
	// Leader-confirmed reads on every node see the device.
	for _, tn := range c.nodes {
		var r *Roster
		c.retry(tn.id+": confirmed read", func() error {
			var err error
			r, err = tn.ReadConfirmed(context.Background())
			return err
		})
		if _, ok := r.Device("phone"); !ok {
			t.Errorf("%s: confirmed read misses phone", tn.id)
		}
	}
}

func TestClusterLeaderKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	before := c.enroll(c.nodes[0], "before")
	old := c.leader()
	c.stop(old)
	survivors := c.running()
	nl := c.leader(survivors...)
	if nl == old {
		t.Fatal("the stopped node still leads")
	}
	for _, tn := range survivors {
		d := c.enroll(tn, "after-"+tn.id)
		if d.IPv4 == before.IPv4 {
			t.Errorf("address %v handed out twice", d.IPv4)
		}
	}
	c.converged(survivors...)
	// The old leader comes back and catches up.
	c.start(old)
	r := c.converged()
	if len(r.Devices()) != 3 {
		t.Errorf("after the old leader rejoined: %d devices, want 3", len(r.Devices()))
	}
}

func TestClusterPartitionedNode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) { cfg.CommitTimeout = 2 * time.Second })
	victim := c.enroll(c.nodes[0], "victim")
	c.converged()
	p := c.follower()
	c.net.Partition(p.addr)

	_, err := p.Enroll(context.Background(), EnrollCmd{Name: "newcomer", Role: Viewer, PublicKey: newKey(t), Home: p.id})
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "quorum") {
		t.Fatalf("enroll on a partitioned node = %v, want an error about quorum", err)
	}
	t.Logf("refusal reads: %v", err)

	committed, err := p.Revoke(context.Background(), "victim")
	if err != nil || committed {
		t.Fatalf("revoke on a partitioned node = %v, %v; want applied locally, not committed", committed, err)
	}
	if d, _ := p.Roster().WhoIs(victim.IPv4); d.State != Revoked {
		t.Errorf("partitioned node shows victim %s after revoking it", d.State)
	}
	c.waitFor("the partitioned node to see it has no quorum", func() bool { return !p.Status().Quorum })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	for _, m := range p.Members(ctx) {
		if m.Reachable != (m.ID == p.id) {
			t.Errorf("partitioned %s: member %s reachable = %v", p.id, m.ID, m.Reachable)
		}
	}
	cancel()
	if st := p.Status(); len(st.PendingRevocations) != 1 {
		t.Errorf("pending revocations = %v, want [victim]", st.PendingRevocations)
	}
	// The majority still writes.
	var majority []*testNode
	for _, tn := range c.nodes {
		if tn != p {
			majority = append(majority, tn)
		}
	}
	c.enroll(c.leader(majority...), "during")

	c.net.Heal(p.addr)
	c.waitFor("the revocation to reach every node", func() bool {
		for _, tn := range c.nodes {
			if d, _ := tn.fsm.Roster().Device("victim"); d.State != Revoked {
				return false
			}
		}
		return len(p.Status().PendingRevocations) == 0
	})
	r := c.converged()
	c.waitFor("the healed node to report quorum", func() bool { return p.Status().Quorum })
	c.waitFor("every member to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		leaders := 0
		for _, m := range p.Members(ctx) {
			if !m.Reachable {
				return false
			}
			if m.Leader {
				leaders++
			}
		}
		return leaders == 1
	})
	if _, ok := r.Device("during"); !ok {
		t.Error("the healed node misses what the majority wrote")
	}
}

func TestLocalRevocationSurvivesRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) { cfg.CommitTimeout = time.Second })
	c.enroll(c.nodes[0], "victim")
	c.enroll(c.nodes[0], "bystander")
	c.converged()
	p := c.follower()
	c.net.Partition(p.addr)
	if committed, err := p.Revoke(context.Background(), "victim"); err != nil || committed {
		t.Fatalf("revoke = %v, %v", committed, err)
	}
	c.stop(p)
	c.start(p) // still partitioned: no leader will tell it anything

	if d, _ := p.Roster().Device("victim"); d.State != Revoked {
		t.Fatalf("after restart the partitioned node shows victim %q", d.State)
	}
	// Without quorum raft replays nothing: the devices it knew come from the replica file.
	if d, _ := p.Roster().Device("bystander"); d.State != Active {
		t.Errorf("after restart without quorum the node shows bystander %q, want active", d.State)
	}
	c.net.Heal(p.addr)
	c.waitFor("the revocation to commit", func() bool {
		d, _ := c.leader().fsm.Roster().Device("victim")
		return d.State == Revoked
	})
}

func TestClusterCatchUpFromSnapshot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold, cfg.TrailingLogs = 16, 4
	})
	away := c.follower()
	c.stop(away)
	l := c.leader(c.running()...)
	for i := range 60 {
		c.enroll(l, fmt.Sprintf("d%02d", i))
	}
	c.converged(c.running()...)
	// Both members compact their logs: whichever leads when the away node returns has only
	// a snapshot for it.
	for _, tn := range c.running() {
		if err := tn.raft.Snapshot().Error(); err != nil {
			t.Fatalf("%s: snapshot: %v", tn.id, err)
		}
		first, err := tn.store.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		if first <= away.raft.LastIndex()+1 {
			t.Fatalf("%s's log starts at %d, not past the away node's %d: the test would not need a snapshot", tn.id, first, away.raft.LastIndex())
		}
	}
	c.start(away)
	r := c.converged()
	if len(r.Devices()) != 60 {
		t.Errorf("%d devices after catching up, want 60", len(r.Devices()))
	}
	if got := away.raft.Stats()["last_snapshot_index"]; got == "0" {
		t.Errorf("the away node holds no snapshot (last_snapshot_index %s): it did not catch up from one", got)
	}
}

func TestClusterRestartAll(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	for i, tn := range c.nodes {
		c.enroll(tn, fmt.Sprintf("dev%d", i))
	}
	c.retry("printer", func() error { _, err := c.nodes[1].AddPrinter(context.Background(), "mk4", "gw2"); return err })
	before := c.converged()
	for _, tn := range c.nodes {
		c.stop(tn)
	}
	for _, tn := range c.nodes {
		c.start(tn)
	}
	c.leader()
	after := c.converged()
	if !after.Equal(before) {
		t.Errorf("roster after restarting every node differs:\n got %s\nwant %s", mustJSON(mustMarshal(after)), mustJSON(mustMarshal(before)))
	}
	c.enroll(c.nodes[2], "after-restart")
}

func TestCluster1000Enrollments(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 enrollments: not in -short")
	}
	c := newCluster(t, 3, nil)
	const total, workers = 1000, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			via := c.nodes[w%3]
			for i := w; i < total; i += workers {
				// A loaded machine can miss heartbeats and hold an election: a write that
				// found no quorum is sent again, as it is (the same enrollment).
				e := EnrollCmd{Name: fmt.Sprintf("dev%04d", i), Role: Viewer, PublicKey: newKey(t), Home: via.id}
				deadline := time.Now().Add(eventually)
				for {
					_, err := via.Enroll(context.Background(), e)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrNoQuorum) || time.Now().After(deadline) {
						errs <- fmt.Errorf("enroll %s via %s: %w", e.Name, via.id, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r := c.converged()
	t.Logf("%d enrollments through 3 nodes in %v", total, time.Since(start))
	seen := map[netip.Addr]bool{}
	for _, d := range r.Devices() {
		if seen[d.IPv4] {
			t.Errorf("address %v twice", d.IPv4)
		}
		seen[d.IPv4] = true
	}
	if len(seen) != total {
		t.Errorf("%d devices, want %d", len(seen), total)
	}
}

func TestClusterJoinAndRemove(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	inviter := c.nodes[0]
	gw, _ := inviter.Roster().Gateway(inviter.id)
	tok, err := NewToken(time.Now().Add(15*time.Minute), netip.MustParseAddr("10.77.15.250"), gw.PublicKey, gw.IPv4, gw.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c.retry("add join token", func() error {
		_, err := inviter.AddJoinToken(ctx, AddTokenCmd{PublicKey: tok.PublicKey(), Inviter: inviter.id, Expires: tok.Expires})
		return err
	})

	// The new machine parses the token and, through the inviter, uses it once.
	parsed, err := ParseToken(tok.Encode())
	if err != nil {
		t.Fatal(err)
	}
	newbie := &testNode{id: "gw4", dir: filepath.Join(t.TempDir(), "gw4"), key: newKey(t)}
	c.nodes = append(c.nodes, newbie)
	c.start(newbie)
	c.retry("use join token", func() error { _, err := inviter.ConsumeJoinToken(ctx, parsed.PublicKey(), newbie.id); return err })
	if err := c.expect(func() error { _, err := c.nodes[1].ConsumeJoinToken(ctx, parsed.PublicKey(), "gw5"); return err }); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("second use of the token = %v, want ErrTokenUsed", err)
	}
	c.retry("add gateway", func() error {
		_, err := inviter.AddGateway(ctx, AddGatewayCmd{Name: newbie.id, PublicKey: newbie.key, Endpoint: newbie.addr})
		return err
	})
	c.retry("add voter", func() error { return inviter.AddVoter(ctx, newbie.id, newbie.addr) })
	c.converged()
	if st := c.leader().Status(); len(st.Servers) != 4 {
		t.Errorf("raft has %d servers after the join, want 4: %+v", len(st.Servers), st.Servers)
	}
	d := c.enroll(newbie, "homed-on-gw4")

	err = c.expect(func() error { return inviter.RemoveGateway(ctx, newbie.id) })
	if !errors.Is(err, ErrHomed) || !strings.Contains(err.Error(), "homed-on-gw4") {
		t.Fatalf("remove gw4 with a device homed there = %v, want ErrHomed naming homed-on-gw4", err)
	}
	c.retry("revoke", func() error {
		committed, err := inviter.Revoke(ctx, d.Name)
		if err == nil && !committed {
			err = ErrNoQuorum
		}
		return err
	})
	c.retry("remove gw4", func() error { return inviter.RemoveGateway(ctx, newbie.id) })
	c.retry("remove server gw4", func() error { return inviter.RemoveServer(ctx, newbie.id) })
	c.stop(newbie)
	rest := c.running()
	c.enroll(rest[1], "after-remove")
	r := c.converged(rest...)
	if _, ok := r.Gateway("gw4"); ok || len(r.Gateways()) != 3 {
		t.Errorf("gateways after removing gw4: %v", r.Gateways())
	}
	if st := c.leader(rest...).Status(); len(st.Servers) != 3 {
		t.Errorf("raft has %d servers after the removal, want 3", len(st.Servers))
	}
}

func TestClusterPartitionedLeader(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) { cfg.CommitTimeout = 2 * time.Second })
	victim := c.enroll(c.nodes[1], "victim")
	old := c.leader()
	c.net.Partition(old.addr)
	_, err := old.Enroll(context.Background(), EnrollCmd{Name: "newcomer", Role: Viewer, PublicKey: newKey(t), Home: old.id})
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "quorum") {
		t.Fatalf("enroll on a partitioned leader = %v, want an error about quorum", err)
	}
	if committed, err := old.Revoke(context.Background(), victim.Name); err != nil || committed {
		t.Fatalf("revoke on a partitioned leader = %v, %v; want applied locally, not committed", committed, err)
	}
	if d, _ := old.Roster().WhoIs(victim.IPv4); d.State != Revoked {
		t.Errorf("partitioned leader shows victim %s after revoking it", d.State)
	}
	var majority []*testNode
	for _, tn := range c.nodes {
		if tn != old {
			majority = append(majority, tn)
		}
	}
	nl := c.leader(majority...)
	c.enroll(nl, "during")
	c.net.Heal(old.addr)
	c.waitFor("the revocation to commit", func() bool {
		for _, tn := range c.nodes {
			if d, _ := tn.fsm.Roster().Device("victim"); d.State != Revoked {
				return false
			}
		}
		return true
	})
	r := c.converged()
	if _, ok := r.Device("newcomer"); ok {
		// The refused enrollment may have stayed in the old leader's log, but it never
		// committed: the new leader's term overwrote it.
		t.Error("an enrollment refused for want of quorum committed after all")
	}
}

func TestClusterOfEight(t *testing.T) {
	if testing.Short() {
		t.Skip("8 nodes: not in -short")
	}
	t.Parallel()
	c := newCluster(t, 8, nil)
	for _, tn := range c.nodes {
		c.enroll(tn, "dev-"+tn.id)
	}
	r := c.converged()
	if len(r.Gateways()) != 8 || len(r.Devices()) != 8 {
		t.Fatalf("8-node mesh holds %d gateways and %d devices, want 8 and 8", len(r.Gateways()), len(r.Devices()))
	}
	// It holds a failure: with one node down the other seven still write.
	c.stop(c.leader())
	c.enroll(c.running()[0], "after-failure")
	c.converged()
}

// TestClusterLive: a member asks the others for what only they know (Config.Live); one
// that is partitioned away is left out, within the caller's bound.
func TestClusterLive(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) {
		id := cfg.ID
		cfg.Live = func() json.RawMessage { return json.RawMessage(strconv.Quote("live of " + id)) }
	})
	ask := func(from *testNode) map[string]string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		out := map[string]string{}
		for id, raw := range from.Live(ctx) {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("answer of %s: %v", id, err)
			}
			out[id] = s
		}
		return out
	}
	a, b, x := c.nodes[0], c.nodes[1], c.nodes[2]
	c.waitFor("both others to answer", func() bool { return len(ask(a)) == 2 })
	if got := ask(a); got[b.id] != "live of "+b.id || got[x.id] != "live of "+x.id {
		t.Errorf("answers = %v, want each member's own", got)
	}
	c.net.Partition(x.addr)
	if got := ask(a); len(got) != 1 || got[b.id] == "" {
		t.Errorf("with %s partitioned: answers = %v, want %s's alone", x.id, got, b.id)
	}
	if got := ask(x); len(got) != 0 {
		t.Errorf("the partitioned node got answers: %v", got)
	}
	c.net.Heal(x.addr)
}
