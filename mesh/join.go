package mesh

// The join protocol (DESIGN.md "The mesh", Join): how a new machine holding a join token
// becomes a gateway of the mesh. It runs on one connection inside the tunnel, from the
// token's one-time peer to the inviter (the daemon serves it on port 7101 of its tunnel
// addresses, to pending one-time peers only):
//
//	joiner → inviter  one JoinRequest, JSON, one line: the token's one-time public key,
//	                  the new gateway's name, its own public key and its endpoint
//	inviter           ConsumeJoinToken (once, before expiry) → AddGateway (allocates its
//	                  addresses) → AddVoter (raft membership, at the address it will listen on)
//	inviter → joiner  one joinReply, JSON, one line: the JoinAnswer (prefixes, the new
//	                  gateway's addresses, the gateway list) or the refusal (code and text)
//
// Every step is idempotent for the same name and key, so a joiner that lost the answer
// asks again and gets the same one. Both messages are bounded and decoded strictly.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/printgate/printgate/enroll"
)

// MaxJoinRequest bounds a join request on the wire; a real one is under 300 bytes.
const MaxJoinRequest = 4 << 10

// MaxJoinAnswer bounds a join answer on the wire: ample for hundreds of gateways.
const MaxJoinAnswer = 1 << 20

// JoinTimeout bounds one join conversation on either side when the caller's context has no
// deadline. The inviter's writes each have the node's commit bound within it.
const JoinTimeout = 60 * time.Second

// JoinRequest is what a joining gateway sends the inviter.
type JoinRequest struct {
	// Token is the join token's one-time public key (Token.PublicKey).
	Token Key `json:"token"`
	// Name is the new gateway's name: unique in the mesh, enroll's name rules.
	Name string `json:"name"`
	// PublicKey is the new gateway's own WireGuard public key.
	PublicKey Key `json:"public_key"`
	// Endpoint is the HOST:PORT other gateways and devices dial to reach it.
	Endpoint string `json:"endpoint"`
}

// JoinAnswer is what the inviter answers a join it admitted.
type JoinAnswer struct {
	Prefix4 netip.Prefix `json:"prefix4"`
	Prefix6 netip.Prefix `json:"prefix6,omitzero"`
	// Gateway is the new gateway as the mesh recorded it, with its tunnel addresses.
	Gateway Gateway `json:"gateway"`
	// Gateways are the mesh's gateways at the time, the new one included, sorted by name.
	Gateways []Gateway `json:"gateways"`
}

// joinReply is the answer on the wire: the answer, or the refusal's code (see codes) and text.
type joinReply struct {
	Answer *JoinAnswer `json:"answer,omitempty"`
	Code   string      `json:"code,omitempty"`
	Err    string      `json:"err,omitempty"`
}

// Check validates a request's fields.
func (req JoinRequest) Check() error {
	switch {
	case req.Token.IsZero():
		return fmt.Errorf("join request: no token key: %w", ErrInvalid)
	case req.PublicKey.IsZero():
		return fmt.Errorf("join request: no gateway key: %w", ErrInvalid)
	case req.PublicKey == req.Token:
		return fmt.Errorf("join request: the gateway key is the token's one-time key: %w", ErrInvalid)
	}
	if err := validName("gateway", req.Name); err != nil {
		return fmt.Errorf("join request: %w", err)
	}
	return checkEndpoint(req.Endpoint)
}

// checkEndpoint validates HOST:PORT as a gateway's endpoint: printable, at most 255 bytes,
// a host and a port from 1 to 65535.
func checkEndpoint(ep string) error {
	if ep == "" || len(ep) > 255 || strings.IndexFunc(ep, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		return fmt.Errorf("endpoint %q: want HOST:PORT, printable, at most 255 bytes: %w", ep, ErrInvalid)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil || host == "" {
		return fmt.Errorf("endpoint %q: want HOST:PORT: %w", ep, ErrInvalid)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("endpoint %q: port %q is not 1 to 65535: %w", ep, port, ErrInvalid)
	}
	return nil
}

// ParseJoinRequest decodes a join request strictly (enroll.DecodeStrict: unknown fields,
// duplicate keys and trailing data are refused) and checks it.
func ParseJoinRequest(data []byte) (JoinRequest, error) {
	if len(data) > MaxJoinRequest {
		return JoinRequest{}, fmt.Errorf("join request: %d bytes, at most %d: %w", len(data), MaxJoinRequest, ErrInvalid)
	}
	var req JoinRequest
	if err := enroll.DecodeStrict(data, &req); err != nil {
		return JoinRequest{}, fmt.Errorf("join request: %v: %w", err, ErrInvalid)
	}
	if err := req.Check(); err != nil {
		return JoinRequest{}, err
	}
	return req, nil
}

// RaftAddrFunc returns the address the mesh's nodes dial to reach gateway g's node: in the
// daemon, its tunnel address and port 7100.
type RaftAddrFunc func(g Gateway) string

// Admit lets the gateway req names into the mesh with the join token req.Token:
// ConsumeJoinToken (a second use, or a use past the expiry, is refused with ErrTokenUsed or
// ErrTokenExpired), AddGateway, AddVoter at raftAddr(gateway). A retried join by the same
// name and key gets the same answer.
//
// Raft cannot commit the membership change of a mesh of one growing to two until the new
// node runs, so there AddVoter returns without quorum; the change is in this node's
// configuration and completes when the new gateway starts. Admit then succeeds.
func (n *Node) Admit(ctx context.Context, req JoinRequest, raftAddr RaftAddrFunc) (JoinAnswer, error) {
	if err := req.Check(); err != nil {
		return JoinAnswer{}, err
	}
	if a, ok := n.admitted(req); ok {
		// A retry after the join completed: answer from the replica, so it works while the
		// mesh waits for the new gateway to run.
		return a, nil
	}
	// Refuse from the replica what the mesh would refuse, without waiting for quorum (a
	// mesh of one that just grew to two has none until the new gateway runs): a used token
	// stays used, an expired one expired. And refuse what AddGateway would refuse before the
	// token is burned; AddGateway checks again on the committed roster.
	r := n.known()
	if t, ok := r.Token(req.Token); ok {
		switch {
		case !t.Used.IsZero() && t.By != req.Name:
			return JoinAnswer{}, fmt.Errorf("join %s: join token: used at %v by %s: %w", req.Name, t.Used.UTC().Format("2006-01-02 15:04:05Z"), t.By, ErrTokenUsed)
		case t.Used.IsZero() && !n.now().Before(t.Expires):
			return JoinAnswer{}, fmt.Errorf("join %s: join token: expired at %v: %w", req.Name, t.Expires.UTC().Format("2006-01-02 15:04:05Z"), ErrTokenExpired)
		}
	}
	if old, ok := r.Gateway(req.Name); ok && old.PublicKey != req.PublicKey {
		return JoinAnswer{}, fmt.Errorf("join %s: gateway name %s is taken by another key (choose another --name): %w", req.Name, req.Name, ErrExists)
	}
	for _, g := range r.Gateways() {
		if g.PublicKey == req.PublicKey && g.Name != req.Name {
			return JoinAnswer{}, fmt.Errorf("join %s: public key is gateway %s's already: %w", req.Name, g.Name, ErrExists)
		}
	}
	if _, err := n.ConsumeJoinToken(ctx, req.Token, req.Name); err != nil {
		return JoinAnswer{}, fmt.Errorf("join %s: join token: %w", req.Name, err)
	}
	gw, err := n.AddGateway(ctx, AddGatewayCmd{Name: req.Name, PublicKey: req.PublicKey, Endpoint: req.Endpoint})
	if err != nil {
		return JoinAnswer{}, fmt.Errorf("join %s: %w", req.Name, err)
	}
	addr := raftAddr(gw)
	if err := n.AddVoter(ctx, gw.Name, addr); err != nil {
		if !errors.Is(err, ErrNoQuorum) || !n.hasServer(gw.Name, addr) {
			return JoinAnswer{}, fmt.Errorf("join %s: raft membership: %w", req.Name, err)
		}
		n.logf("mesh: gateway %s joined; the mesh waits for it to run to commit its membership (%v)", gw.Name, err)
	}
	a, ok := n.admitted(req)
	if !ok {
		// The writes committed through the leader; this replica shows them shortly.
		a = JoinAnswer{Prefix4: r.Prefix4(), Prefix6: r.Prefix6(), Gateway: gw}
		for _, o := range r.Gateways() {
			if o.Name != gw.Name {
				a.Gateways = append(a.Gateways, o)
			}
		}
		a.Gateways = append(a.Gateways, gw)
		slices.SortFunc(a.Gateways, func(x, y Gateway) int { return strings.Compare(x.Name, y.Name) })
	}
	n.logf("mesh: gateway %s (%v) joined with a token from %s", gw.Name, gw.IPv4, n.id)
	return a, nil
}

// admitted returns the answer to req from the local replica when req's join is complete
// there: the token used by req.Name, the gateway with req's key, and the node in the raft
// configuration.
func (n *Node) admitted(req JoinRequest) (JoinAnswer, bool) {
	r := n.known()
	t, ok := r.Token(req.Token)
	if !ok || t.Used.IsZero() || t.By != req.Name {
		return JoinAnswer{}, false
	}
	g, ok := r.Gateway(req.Name)
	if !ok || g.PublicKey != req.PublicKey || !n.hasServer(g.Name, "") {
		return JoinAnswer{}, false
	}
	return JoinAnswer{Prefix4: r.Prefix4(), Prefix6: r.Prefix6(), Gateway: g, Gateways: r.Gateways()}, true
}

// hasServer reports whether this node's latest raft configuration holds id (at addr, unless
// addr is empty).
func (n *Node) hasServer(id, addr string) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(id) && (addr == "" || s.Address == raft.ServerAddress(addr)) {
			return true
		}
	}
	return false
}

// ServeJoin answers the one join request on c. from is the one-time key the connection is
// authenticated as (the WireGuard peer it arrived from); a request naming another token is
// refused. It does not close c. The error is the refusal sent, or why nothing could be.
func (n *Node) ServeJoin(ctx context.Context, c net.Conn, from Key, raftAddr RaftAddrFunc) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, JoinTimeout)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	var raw json.RawMessage
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(c, MaxJoinRequest)))
	var a JoinAnswer
	err := dec.Decode(&raw)
	if err != nil {
		err = fmt.Errorf("join request: %v (at most %d bytes of JSON): %w", err, MaxJoinRequest, ErrInvalid)
	}
	var req JoinRequest
	if err == nil {
		req, err = ParseJoinRequest(raw)
	}
	if err == nil && req.Token != from {
		err = fmt.Errorf("join request: names a token other than the one-time peer it came from: %w", ErrInvalid)
	}
	if err == nil {
		a, err = n.Admit(ctx, req, raftAddr)
	}
	var rep joinReply
	if err != nil {
		rep.Code, rep.Err = codeOf(err), err.Error()
		n.logf("mesh: join refused: %v", err)
	} else {
		rep.Answer = &a
	}
	if werr := json.NewEncoder(c).Encode(rep); werr != nil && err == nil {
		return fmt.Errorf("join %s: send answer: %w", req.Name, werr)
	}
	return err
}

// Join is the joining side: it sends req on c and returns the inviter's answer. A refusal
// comes back as an error wrapping the inviter's sentinel (ErrTokenUsed, ErrTokenExpired,
// ErrNoQuorum, ...). It does not close c.
func Join(ctx context.Context, c net.Conn, req JoinRequest) (JoinAnswer, error) {
	if err := req.Check(); err != nil {
		return JoinAnswer{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, JoinTimeout)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return JoinAnswer{}, fmt.Errorf("join: send request: %w", err)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(bufio.NewReader(io.LimitReader(c, MaxJoinAnswer))).Decode(&raw); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return JoinAnswer{}, fmt.Errorf("join: no answer from the inviter: %w", err)
	}
	return parseJoinReply(raw, req)
}

// parseJoinReply decodes the inviter's reply to req strictly: a refusal comes back as an
// error wrapping the inviter's sentinel, an answer only when it fits req (check).
func parseJoinReply(raw []byte, req JoinRequest) (JoinAnswer, error) {
	if len(raw) > MaxJoinAnswer {
		return JoinAnswer{}, fmt.Errorf("join: answer from the inviter: %d bytes, at most %d: %w", len(raw), MaxJoinAnswer, ErrInvalid)
	}
	var rep joinReply
	if err := enroll.DecodeStrict(raw, &rep); err != nil {
		return JoinAnswer{}, fmt.Errorf("join: answer from the inviter: %v: %w", err, ErrInvalid)
	}
	if rep.Err != "" {
		return JoinAnswer{}, fmt.Errorf("join refused by the inviter: %w", decodeError(rep.Code, rep.Err))
	}
	if rep.Answer == nil {
		return JoinAnswer{}, fmt.Errorf("join: the inviter answered nothing: %w", ErrInvalid)
	}
	if err := rep.Answer.check(req); err != nil {
		return JoinAnswer{}, err
	}
	return *rep.Answer, nil
}

// check validates an answer to req: prefixes the mesh would accept, the gateway req asked
// for with addresses inside them, and in the list.
func (a JoinAnswer) check(req JoinRequest) error {
	if err := checkPrefixes(a.Prefix4, a.Prefix6); err != nil {
		return fmt.Errorf("join: answer: %w", err)
	}
	g := a.Gateway
	switch {
	case g.Name != req.Name || g.PublicKey != req.PublicKey:
		return fmt.Errorf("join: answer is for gateway %s, not %s with this key: %w", g.Name, req.Name, ErrInvalid)
	case !a.Prefix4.Contains(g.IPv4):
		return fmt.Errorf("join: answer: address %v outside %v: %w", g.IPv4, a.Prefix4, ErrInvalid)
	case a.Prefix6.IsValid() != g.IPv6.IsValid() || g.IPv6.IsValid() && !a.Prefix6.Contains(g.IPv6):
		return fmt.Errorf("join: answer: address %v does not fit prefix %v: %w", g.IPv6, a.Prefix6, ErrInvalid)
	}
	for _, o := range a.Gateways {
		if o.Name == g.Name && o.PublicKey == g.PublicKey {
			return nil
		}
	}
	return fmt.Errorf("join: answer: gateway %s missing from the list: %w", g.Name, ErrInvalid)
}
