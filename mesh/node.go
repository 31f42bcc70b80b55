package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Config configures a Node. Fields marked required have no usable zero value.
type Config struct {
	// ID names this node in raft; the gateway's name. Required.
	ID string
	// Dir is the state directory: the node keeps raft.db (log and stable store, bolt),
	// snapshots/ and revocations.json there. Created 0700 if missing. Required.
	Dir string
	// Listener carries raft and forwarded calls from the other nodes. The Node owns it from
	// Open on: Close closes it (and so does a failing Open). Required.
	Listener net.Listener
	// Advertise is the address the other nodes dial to reach Listener. Empty means
	// Listener.Addr().String().
	Advertise string
	// Dial connects to another node's advertised address. Required.
	Dial DialFunc
	// CommitTimeout bounds a write (and a leader-confirmed read): past it the call fails with
	// an error wrapping ErrNoQuorum. Zero means 5 s.
	CommitTimeout time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot make raft take one;
	// zero means raft's default (8192).
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks whether to snapshot; zero means raft's
	// default (120 s).
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log, so a follower a little
	// behind catches up from the log; zero means raft's default (10240).
	TrailingLogs uint64
	// Logf logs the node's events and raft's warnings and errors. Nil discards them.
	Logf func(format string, args ...any)
	// Now is the clock this node stamps into the commands it proposes as leader. Nil means
	// time.Now.
	Now func() time.Time
	// Live answers another member's Live call: what this gateway alone knows of the devices
	// homed on it (handshakes, endpoints, counters), as JSON of the caller's choosing. Nil
	// answers nothing. It must be quick and must not call the node.
	Live func() json.RawMessage
}

// DefaultCommitTimeout is the bound on a write when Config.CommitTimeout is zero.
const DefaultCommitTimeout = 5 * time.Second

// electionWait bounds how long Bootstrap waits for the new mesh of one to elect itself.
const electionWait = 30 * time.Second

// retryInterval paces retries of a write while there is no leader, and of revocations
// waiting for quorum.
const retryInterval = 100 * time.Millisecond

// Node is one gateway's member of the mesh: a raft server holding the roster.
//
// Life cycle: Open starts raft on the stores in Dir (a node that was a member rejoins by
// itself); a new mesh needs Bootstrap on one node, the others are added with AddVoter from
// any member. Close stops everything; a second Close returns an error wrapping net.ErrClosed.
//
// Writes go through the leader (a follower forwards them) and fail with ErrNoQuorum when they
// cannot commit within CommitTimeout; Revoke is the exception that applies locally first.
// Roster is the local replica's view (lock-free, possibly stale); ReadConfirmed is
// linearizable.
type Node struct {
	id, advertise string
	bound         time.Duration
	logf          func(string, ...any)
	now           func() time.Time
	live          func() json.RawMessage

	fsm   *FSM
	raft  *raft.Raft
	store *raftboltdb.BoltStore
	snaps raft.SnapshotStore
	mux   *mux
	tomb  *tombstones
	dir   string
	// boot is the replica file's roster until the FSM applies past it; see replica.go.
	boot atomic.Pointer[Roster]

	// watch is closed and replaced whenever Roster's answer may have changed: see Changed.
	watch struct {
		sync.Mutex
		ch chan struct{}
	}

	kick chan struct{} // wakes the revocation retry loop
	done chan struct{} // closed by Close: the node's goroutines exit
	wg   sync.WaitGroup

	closed struct {
		sync.Mutex
		yes bool
	}
}

// Open starts the node on cfg.Dir. A directory with raft state rejoins its mesh; an empty one
// waits for Bootstrap or to be added by a member. When Open fails, it has closed
// cfg.Listener.
func Open(cfg Config) (*Node, error) {
	n, err := open(cfg)
	if err != nil && cfg.Listener != nil {
		cfg.Listener.Close()
	}
	return n, err
}

func open(cfg Config) (*Node, error) {
	switch {
	case cfg.ID == "":
		return nil, fmt.Errorf("open mesh node: no ID: %w", ErrInvalid)
	case cfg.Dir == "":
		return nil, fmt.Errorf("open mesh node %s: no state directory: %w", cfg.ID, ErrInvalid)
	case cfg.Listener == nil || cfg.Dial == nil:
		return nil, fmt.Errorf("open mesh node %s: need a listener and a dial function: %w", cfg.ID, ErrInvalid)
	}
	n := &Node{id: cfg.ID, advertise: cfg.Advertise, bound: cfg.CommitTimeout, logf: cfg.Logf, now: cfg.Now, live: cfg.Live,
		fsm: NewFSM(), kick: make(chan struct{}, 1), done: make(chan struct{})}
	n.watch.ch = make(chan struct{})
	n.fsm.onPublish = n.changed
	if n.advertise == "" {
		n.advertise = cfg.Listener.Addr().String()
	}
	if n.bound <= 0 {
		n.bound = DefaultCommitTimeout
	}
	if n.logf == nil {
		n.logf = func(string, ...any) {}
	}
	if n.now == nil {
		n.now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open mesh node %s: %w", cfg.ID, err)
	}
	n.dir = cfg.Dir
	var err error
	if n.tomb, err = loadTombstones(cfg.Dir); err != nil {
		return nil, fmt.Errorf("open mesh node %s: %w", cfg.ID, err)
	}
	boot, err := loadReplica(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open mesh node %s: %w", cfg.ID, err)
	}
	n.boot.Store(boot)
	logOut := io.Writer(io.Discard)
	level := hclog.Off
	if cfg.Logf != nil {
		logOut, level = logfWriter(cfg.Logf), hclog.Warn
	}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft " + cfg.ID, Level: level, Output: logOut})

	n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open mesh node %s: raft store: %w", cfg.ID, err)
	}
	logs, err := raft.NewLogCache(512, n.store)
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("open mesh node %s: %w", cfg.ID, err)
	}
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl)
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("open mesh node %s: snapshots: %w", cfg.ID, err)
	}
	n.mux = newMux(cfg.Listener, n.advertise, cfg.Dial, n.logf)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: streamLayer{n.mux}, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hl
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, logs, n.store, n.snaps, trans)
	if err != nil {
		n.mux.close()
		trans.Close()
		n.store.Close()
		return nil, fmt.Errorf("open mesh node %s: %w", cfg.ID, err)
	}
	n.wg.Add(4)
	go n.serveForward()
	go n.retryRevocations()
	go n.keepReplica()
	go n.promoteSelf()
	n.logf("mesh: node %s up at %s", n.id, n.advertise)
	return n, nil
}

// Close stops the node: its goroutines, raft, the listener and the stores. The state
// directory keeps everything; Open on it rejoins the mesh.
func (n *Node) Close() error {
	n.closed.Lock()
	defer n.closed.Unlock()
	if n.closed.yes {
		return fmt.Errorf("close mesh node %s: %w", n.id, net.ErrClosed)
	}
	n.closed.yes = true
	close(n.done)
	n.mux.stopDials()
	err := n.shutdownRaft()
	n.mux.close()
	n.wg.Wait()
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	n.logf("mesh: node %s closed", n.id)
	return err
}

// ID is the node's raft server ID.
func (n *Node) ID() string { return n.id }

// Address is the node's advertised address.
func (n *Node) Address() string { return n.advertise }

// Bootstrap makes this node a mesh of one and creates the roster with init (its first
// gateway is this node's). It fails on a directory that is a mesh's member already; after a
// failure (no quorum within the bounds) it can be called again with the same init.
func (n *Node) Bootstrap(ctx context.Context, init InitCmd) (Gateway, error) {
	has, err := raft.HasExistingState(n.store, n.store, n.snaps)
	if err != nil {
		return Gateway{}, fmt.Errorf("bootstrap mesh: %w", err)
	}
	switch {
	case has && n.known().Initialized():
		return Gateway{}, fmt.Errorf("bootstrap mesh: %s is a member of a mesh already: %w", n.id, ErrExists)
	case !has:
		cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.advertise)}}}
		if err := n.raft.BootstrapCluster(cfg).Error(); err != nil {
			return Gateway{}, fmt.Errorf("bootstrap mesh: %w", err)
		}
	}
	// has, not initialized: a bootstrap whose init did not commit, resumed.
	// A mesh of one elects itself after an election timeout; wait for that (not counted
	// against the write's bound), at most electionWait.
	wctx, cancel := context.WithTimeout(ctx, electionWait)
	defer cancel()
	for !n.isLeader() {
		select {
		case <-wctx.Done():
			return Gateway{}, &quorumError{op: "bootstrap mesh", bound: electionWait, cause: errNoLeader}
		case <-time.After(retryInterval):
		}
	}
	res, err := n.Apply(ctx, Command{Init: &init})
	if err != nil {
		return Gateway{}, err
	}
	return *res.Gateway, nil
}

// Apply commits c through the leader and returns its result. Command.At is set by the
// leader. Errors wrap the sentinels of command.go; ErrNoQuorum when it did not commit within
// the bound (it may still commit later: every command is idempotent when retried as is).
func (n *Node) Apply(ctx context.Context, c Command) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, n.bound)
	defer cancel()
	resp, err := n.do(ctx, c.op(), fwdRequest{Op: opApply, Command: &c})
	return resp.Result, err
}

// AddVoter makes the node id at addr a voting member (through the leader).
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, n.bound)
	defer cancel()
	_, err := n.do(ctx, "add voter "+id, fwdRequest{Op: opAddVoter, ID: id, Addr: addr})
	return err
}

// RemoveServer removes the node id from raft membership (through the leader).
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, n.bound)
	defer cancel()
	_, err := n.do(ctx, "remove server "+id, fwdRequest{Op: opRemoveServer, ID: id})
	return err
}

// Roster returns this node's replica of the roster, with its uncommitted revocations shown:
// it may be behind the mesh, but never shows a device active after Revoke ran here.
func (n *Node) Roster() *Roster {
	local := n.tomb.names() // before the FSM's roster: see tombstone.go
	r := n.known()
	if local == nil {
		return r
	}
	c := *r
	c.local = local
	return &c
}

// ReadConfirmed returns a committed roster at least as new as every write that completed
// before the call (linearizable): the leader confirms its leadership with a barrier, and this
// node waits until its replica has applied as far. Uncommitted local revocations are not
// shown. Fails with ErrNoQuorum when that cannot happen within the bound.
func (n *Node) ReadConfirmed(ctx context.Context) (*Roster, error) {
	ctx, cancel := context.WithTimeout(ctx, n.bound)
	defer cancel()
	resp, err := n.do(ctx, "confirmed read", fwdRequest{Op: opReadIndex})
	if err != nil {
		return nil, err
	}
	for {
		ch := n.fsm.next()
		if r := n.fsm.Roster(); r.Index() >= resp.Index {
			return r, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, &quorumError{op: "confirmed read", bound: n.bound, cause: fmt.Errorf("replica not caught up to index %d", resp.Index)}
		}
	}
}

// Revoke revokes the device named name for good. It is applied to this node's Roster at
// once and kept on disk, then committed through the leader; without quorum it returns
// committed false and no error, and the node keeps submitting it until it commits.
func (n *Node) Revoke(ctx context.Context, name string) (committed bool, err error) {
	d, ok := n.known().devices[name]
	if !ok {
		// Not in this replica (it may be behind): only the leader can say. Once it has, the
		// device shows revoked here too, before the replica catches up with its enrollment.
		res, err := n.Apply(ctx, Command{Revoke: &RevokeCmd{Name: name}})
		if err != nil {
			return false, err
		}
		if err := n.tomb.add(revocation{Name: name, PublicKey: res.Device.PublicKey, At: n.now()}); err != nil {
			return true, fmt.Errorf("revoke %s: %w", name, err)
		}
		n.changed()
		n.wake()
		return true, nil
	}
	if d.State == Revoked {
		return true, nil
	}
	if err := n.tomb.add(revocation{Name: name, PublicKey: d.PublicKey, At: n.now()}); err != nil {
		return false, fmt.Errorf("revoke %s: %w", name, err)
	}
	n.changed() // every gateway's daemon closes the device's connections from here
	_, err = n.Apply(ctx, Command{Revoke: &RevokeCmd{Name: name, PublicKey: d.PublicKey}})
	switch {
	case err == nil:
		n.wake()
		return true, nil
	case errors.Is(err, ErrNoQuorum) || ctx.Err() != nil:
		n.logf("mesh: revoke %s applied here, pending until quorum: %v", name, err)
		n.wake()
		return false, nil
	}
	return false, err
}

func (n *Node) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// retryRevocations submits local revocations until they commit, and drops them once this
// replica shows them. Owned by the Node; exits on Close.
func (n *Node) retryRevocations() {
	defer n.wg.Done()
	t := time.NewTicker(retryInterval * 10)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-n.kick:
		case <-t.C:
		case <-n.fsm.next():
		}
		pending := n.tomb.list()
		if len(pending) == 0 {
			continue
		}
		r := n.known()
		if err := n.tomb.drop(func(v revocation) bool {
			d, ok := r.devices[v.Name]
			return ok && d.State == Revoked
		}); err != nil {
			n.logf("mesh: revocations: %v", err)
		}
		for _, v := range n.tomb.list() {
			// Apply gives up on Close by itself.
			_, err := n.Apply(context.Background(), Command{Revoke: &RevokeCmd{Name: v.Name, PublicKey: v.PublicKey}})
			if err != nil {
				if !errors.Is(err, ErrNoQuorum) && !errors.Is(err, net.ErrClosed) {
					n.logf("mesh: revoke %s: %v", v.Name, err)
				}
				break // try again at the next tick
			}
		}
	}
}

func (n *Node) isLeader() bool { return n.raft.State() == raft.Leader }

// do runs req on the leader: here if this node leads, else forwarded. It retries while the
// leadership is unsettled and ctx allows, then fails with a quorumError.
func (n *Node) do(ctx context.Context, op string, req fwdRequest) (fwdResponse, error) {
	var last error = errNoLeader
	for {
		var resp fwdResponse
		var err error
		if n.isLeader() {
			resp, err = n.leaderDo(ctx, req)
		} else if addr, _ := n.raft.LeaderWithID(); addr != "" {
			resp, err = n.forward(ctx, string(addr), req)
		} else {
			err = errNoLeader
		}
		if err == nil {
			return resp, nil
		}
		switch {
		case errors.Is(err, raft.ErrRaftShutdown):
			return resp, fmt.Errorf("%s: %w", op, net.ErrClosed)
		case errors.Is(err, ErrNoQuorum):
			return resp, &quorumError{op: op, bound: n.bound, cause: err}
		case codeOf(err) != "" && !errors.Is(err, errNotLeader):
			return resp, err // the roster's answer
		}
		last = err
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return resp, fmt.Errorf("%s: %w", op, ctx.Err())
			}
			return resp, &quorumError{op: op, bound: n.bound, cause: last}
		case <-n.done:
			return resp, fmt.Errorf("%s: %w", op, net.ErrClosed)
		case <-time.After(retryInterval):
		}
	}
}

// leaderDo runs req on this node as leader.
func (n *Node) leaderDo(ctx context.Context, req fwdRequest) (fwdResponse, error) {
	remaining := n.bound
	if dl, ok := ctx.Deadline(); ok {
		remaining = time.Until(dl)
	}
	if remaining <= 0 {
		return fwdResponse{}, context.DeadlineExceeded
	}
	switch req.Op {
	case opApply:
		if req.Command == nil {
			return fwdResponse{}, fmt.Errorf("apply without a command: %w", ErrInvalid)
		}
		c := *req.Command
		c.At = n.now()
		data, err := json.Marshal(c)
		if err != nil {
			return fwdResponse{}, fmt.Errorf("%s: %v: %w", c.op(), err, ErrInvalid)
		}
		f := n.raft.Apply(data, remaining)
		if err := wait(ctx, f); err != nil {
			return fwdResponse{}, err
		}
		res, ok := f.Response().(applyResult)
		if !ok {
			return fwdResponse{}, fmt.Errorf("%s: unexpected apply response %T", c.op(), f.Response())
		}
		return fwdResponse{Result: res.Result, Index: f.Index()}, res.err
	case opReadIndex:
		if err := wait(ctx, n.raft.Barrier(remaining)); err != nil {
			return fwdResponse{}, err
		}
		return fwdResponse{Index: n.fsm.Roster().Index()}, nil
	case opAddVoter:
		return fwdResponse{}, wait(ctx, n.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, remaining))
	case opAddNonvoter:
		return fwdResponse{}, wait(ctx, n.raft.AddNonvoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, remaining))
	case opRemoveServer:
		return fwdResponse{}, wait(ctx, n.raft.RemoveServer(raft.ServerID(req.ID), 0, remaining))
	}
	return fwdResponse{}, fmt.Errorf("forwarded op %q unknown: %w", req.Op, ErrInvalid)
}

// wait waits for f or ctx. While raft runs it answers every future (commit, lost leadership,
// or a follower's refusal), so the goroutine left behind on ctx's expiry ends too; a future
// still queued when raft shuts down is never answered, and its goroutine stays until the
// process exits (hashicorp/raft v1.7.2; TestCloseLeavesNoGoroutines names it).
func wait(ctx context.Context, f raft.Future) error {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		if errors.Is(err, raft.ErrNotLeader) {
			return errNotLeader
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
