package mesh

// Membership as a gateway reports it for `printgate mesh status`: the raft state, the
// configuration, and a ping of every member.

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Status is a node's view of the mesh's raft membership.
type Status struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// State is "leader", "follower", "candidate" or "shutdown".
	State      string `json:"state"`
	Leader     string `json:"leader"` // empty when none is known
	LeaderAddr string `json:"leader_address"`
	// Quorum is true when this node leads, or heard from a leader within quorumContact:
	// writes can commit. (A leader that loses its majority steps down within raft's lease.)
	Quorum  bool     `json:"quorum"`
	Servers []Server `json:"servers"`
	// Index is the raft index of the last roster command this replica applied.
	Index uint64 `json:"index"`
	// PendingRevocations are revocations applied here and not yet seen committed.
	PendingRevocations []string `json:"pending_revocations"`
}

// quorumContact is how recently a follower must have heard from its leader for Status to
// report quorum: a few of raft's default heartbeat timeouts (1 s).
const quorumContact = 3 * time.Second

// Server is one member of the raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Status reports the node's raft state and membership.
func (n *Node) Status() Status {
	addr, id := n.raft.LeaderWithID()
	s := Status{ID: n.id, Address: n.advertise, State: strings.ToLower(n.raft.State().String()),
		Leader: string(id), LeaderAddr: string(addr), Index: n.fsm.Roster().Index(), Servers: []Server{}, PendingRevocations: []string{}}
	s.Quorum = n.isLeader() || id != "" && time.Since(n.raft.LastContact()) < quorumContact
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, sv := range f.Configuration().Servers {
			s.Servers = append(s.Servers, Server{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
		}
	}
	for _, v := range n.tomb.list() {
		s.PendingRevocations = append(s.PendingRevocations, v.Name)
	}
	return s
}

// Member is one raft server as this node sees it.
type Member struct {
	Server
	Leader bool `json:"leader"`
	// Reachable is true when the member answered a ping (always for this node).
	Reachable bool `json:"reachable"`
	// Index is the last roster command its replica applied, when it answered.
	Index uint64 `json:"index"`
}

// Members pings every member of the raft configuration in parallel, each within ctx, and
// reports who answered: what `mesh status` shows per gateway.
func (n *Node) Members(ctx context.Context) []Member {
	st := n.Status()
	out := make([]Member, len(st.Servers))
	var wg sync.WaitGroup
	for i, sv := range st.Servers {
		out[i] = Member{Server: sv, Leader: sv.ID == st.Leader}
		if sv.ID == n.id {
			out[i].Reachable, out[i].Index = true, st.Index
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := n.forward(ctx, sv.Address, fwdRequest{Op: opPing})
			out[i].Reachable, out[i].Index = err == nil, resp.Index
		}()
	}
	wg.Wait()
	return out
}

// Live asks every other member of the raft configuration, in parallel and each within ctx,
// for its Config.Live answer, and returns the answers by member ID. A member that does not
// answer in time is left out: the caller shows its replica's facts alone.
func (n *Node) Live(ctx context.Context) map[string]json.RawMessage {
	st := n.Status()
	var mu sync.Mutex
	out := map[string]json.RawMessage{}
	var wg sync.WaitGroup
	for _, sv := range st.Servers {
		if sv.ID == n.id {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := n.forward(ctx, sv.Address, fwdRequest{Op: opLive})
			if err != nil || resp.Live == nil {
				return
			}
			mu.Lock()
			out[sv.ID] = resp.Live
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
