package mesh

// A gateway joins the mesh as a non-voting member and becomes a voter once it runs and has
// caught up. Admitting it as a voter at once would change the quorum before the new machine
// is even started: a mesh of one that invites a second gateway would then need both for
// every write, and stay stuck if the new one never ran (or ran with a wrong endpoint). As a
// non-voter it receives the log and snapshots but counts toward no majority; its own node
// asks the leader to promote it (raft's AddVoter on a non-voter changes its suffrage) as soon
// as its replica shows its own gateway entry, that is, once it applied the roster up to its
// admission.

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// promoteInterval paces the non-voter's check of its own promotion.
const promoteInterval = time.Second

// AddNonvoter makes the node id at addr a non-voting member (through the leader): it
// replicates the roster but counts toward no quorum until promoted with AddVoter.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, n.bound)
	defer cancel()
	_, err := n.do(ctx, "add non-voter "+id, fwdRequest{Op: opAddNonvoter, ID: id, Addr: addr})
	return err
}

// suffrage returns this node's place in the latest raft configuration it knows: found false
// when it is not a member (yet, or any more).
func (n *Node) suffrage() (s raft.ServerSuffrage, addr string, found bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0, "", false
	}
	for _, sv := range f.Configuration().Servers {
		if sv.ID == raft.ServerID(n.id) {
			return sv.Suffrage, string(sv.Address), true
		}
	}
	return 0, "", false
}

// promoteSelf asks the leader to make this node a voter while it is a non-voter whose
// replica has caught up with its own admission. Owned by the Node; exits on Close.
func (n *Node) promoteSelf() {
	defer n.wg.Done()
	t := time.NewTicker(promoteInterval)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		case <-n.fsm.next():
		}
		s, addr, ok := n.suffrage()
		if !ok || s != raft.Nonvoter {
			continue
		}
		if _, caughtUp := n.fsm.Roster().Gateway(n.id); !caughtUp {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-n.done:
			case <-ctx.Done():
			}
			cancel()
		}()
		err := n.AddVoter(ctx, n.id, addr)
		cancel()
		if err != nil {
			n.logf("mesh: %s caught up; promotion to voter: %v (trying again)", n.id, err)
			continue
		}
		n.logf("mesh: %s caught up and is a voter now", n.id)
	}
}
