package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A forwarded call is one request and one response, JSON, on its own 'F' stream to the
// leader's advertised address. The leader answers errNotLeader when it no longer is; the
// follower then asks again whoever leads now, until its bound runs out.

// maxForward bounds a forwarded request or response; maxLive an answer to opLive (a few
// hundred bytes per device that ever connected).
const (
	maxForward = 1 << 20
	maxLive    = 16 << 20
)

// The forwarded operations. All but opPing and opLive are answered by the leader only.
const (
	opApply        = "apply"
	opReadIndex    = "read_index"
	opAddVoter     = "add_voter"
	opAddNonvoter  = "add_nonvoter"
	opRemoveServer = "remove_server"
	opPing         = "ping"
	opLive         = "live"
)

type fwdRequest struct {
	Op      string   `json:"op"`
	Command *Command `json:"command,omitempty"`
	ID      string   `json:"id,omitempty"`
	Addr    string   `json:"addr,omitempty"`
}

type fwdResponse struct {
	Result Result `json:"result"`
	Index  uint64 `json:"index,omitempty"`
	Code   string `json:"code,omitempty"`
	Err    string `json:"err,omitempty"`
	// Live is a member's answer to opLive (Config.Live).
	Live json.RawMessage `json:"live,omitempty"`
}

// errNotLeader is the leader's answer when it is not (or no longer) the leader.
var errNotLeader = errors.New("not the leader")

// serveForward answers forwarded calls until the Node closes. Owned by the Node.
func (n *Node) serveForward() {
	defer n.wg.Done()
	for {
		select {
		case c := <-n.mux.forwardCh:
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.answer(c)
			}()
		case <-n.done:
			return
		}
	}
}

// answer handles one forwarded call on c.
func (n *Node) answer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(n.bound + helloTimeout))
	var req fwdRequest
	if err := json.NewDecoder(io.LimitReader(c, maxForward)).Decode(&req); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.bound)
	defer cancel()
	var resp fwdResponse
	var err error
	switch req.Op {
	case opPing:
		// Any member answers a ping, with how far its replica has applied.
		json.NewEncoder(c).Encode(fwdResponse{Index: n.fsm.Roster().Index()})
		return
	case opLive:
		resp := fwdResponse{Index: n.fsm.Roster().Index()}
		if n.live != nil {
			resp.Live = n.live()
		}
		json.NewEncoder(c).Encode(resp)
		return
	}
	if !n.isLeader() {
		err = errNotLeader
	} else {
		resp, err = n.leaderDo(ctx, req)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = &quorumError{op: req.Op, bound: n.bound, cause: err}
		}
		resp.Code, resp.Err = codeOf(err), err.Error()
	}
	json.NewEncoder(c).Encode(resp)
}

// forward sends req to the leader at addr and returns its answer, the leader's error
// decoded so that errors.Is works.
func (n *Node) forward(ctx context.Context, addr string, req fwdRequest) (fwdResponse, error) {
	c, err := n.mux.open(ctx, addr, streamForward)
	if err != nil {
		return fwdResponse{}, fmt.Errorf("reach leader %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl.Add(time.Second)) // the leader answers at its own bound first
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fwdResponse{}, fmt.Errorf("send to leader %s: %w", addr, err)
	}
	limit := int64(maxForward)
	if req.Op == opLive {
		limit = maxLive
	}
	var resp fwdResponse
	if err := json.NewDecoder(io.LimitReader(c, limit)).Decode(&resp); err != nil {
		return fwdResponse{}, fmt.Errorf("answer from leader %s: %w", addr, err)
	}
	return resp, decodeError(resp.Code, resp.Err)
}
