package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/printgate/printgate/enroll"
)

// The control socket: how the CLI on the gateway's own machine talks to the running daemon.
//
// One Unix stream socket, STATE/control.sock, mode 0600 inside the 0700 state directory, and
// peer credentials checked on every connection (only root and the daemon's own user). One JSON
// Request per connection, one JSON Response back, then the connection closes. There is no
// network listener: this socket and WireGuard's UDP port are the daemon's only sockets.

// ControlSocketName is the control socket's file name inside the state directory.
const ControlSocketName = "control.sock"

// ControlPath returns the control socket path of a state directory.
func ControlPath(stateDir string) string { return filepath.Join(stateDir, ControlSocketName) }

// Operations of the control protocol.
const (
	OpEnroll = "enroll"
	OpRevoke = "revoke"
	OpPeers  = "peers"
	OpStatus = "status"
)

// maxControlMessage bounds a request or response (a response with 1,000 peers is ~500 KiB).
const maxControlMessage = 4 << 20

// Request is one control call.
type Request struct {
	Op string `json:"op"`
	// Name is the peer for enroll and revoke.
	Name string `json:"name,omitempty"`
	// Role, PublicKey (base64) and TTL are enroll's options; empty means the defaults.
	Role      string `json:"role,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
	TTL       string `json:"ttl,omitempty"`
}

// Response is the answer to one Request; Error is set when it failed.
type Response struct {
	Error      string        `json:"error,omitempty"`
	Enrollment *EnrollResult `json:"enrollment,omitempty"`
	Revoked    *RevokeResult `json:"revoked,omitempty"`
	Peers      []PeerInfo    `json:"peers,omitempty"`
	Status     *Status       `json:"status,omitempty"`
}

// EnrollResult is an enrollment as the control socket carries it to the CLI, once: the device
// config (with the device's private key unless it brought its own) and the API key.
type EnrollResult struct {
	Peer   PeerInfo `json:"peer"`
	Config string   `json:"config"`
	APIKey string   `json:"api_key"`
}

// EnrollResultFrom copies what the CLI shows out of an enrollment.
func EnrollResultFrom(e *enroll.Enrollment, now time.Time) EnrollResult {
	return EnrollResult{Peer: PeerInfoFrom(e.Peer, nil, now), Config: e.Config, APIKey: e.APIKey}
}

// RevokeResult reports one revocation.
type RevokeResult struct {
	Peer PeerInfo `json:"peer"`
	// AppliedSeconds is the time from the command's arrival to the peer being off the device
	// with its connections closed.
	AppliedSeconds float64 `json:"applied_seconds"`
	// ClosedConns is how many open TCP connections of the peer were aborted.
	ClosedConns int `json:"closed_conns"`
}

// ErrNoDaemon means no daemon answers on the state directory's control socket.
var ErrNoDaemon = errors.New("no running gateway")

// Call sends one request to the daemon of stateDir. It returns an error wrapping ErrNoDaemon
// when no daemon listens there, so the caller can open the state directory itself.
func Call(ctx context.Context, stateDir string, req Request) (*Response, error) {
	path := ControlPath(stateDir)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("control %s: %w", path, ErrNoDaemon)
		}
		return nil, fmt.Errorf("control %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("control %s: send: %w", req.Op, err)
	}
	var resp Response
	dec := json.NewDecoder(io.LimitReader(c, maxControlMessage))
	if err := dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("control %s: read reply: %w", req.Op, err)
	}
	if resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// controlServer serves the control socket for one Gateway.
type controlServer struct {
	g    *Gateway
	path string
	ln   *net.UnixListener
	wg   sync.WaitGroup // the accept loop and every connection

	conns struct {
		sync.Mutex
		m      map[net.Conn]bool
		closed bool
	}
}

// listenControl creates the control socket. The caller holds the state directory's lock, so a
// socket file already there is stale (a crashed daemon's) and is replaced.
func listenControl(g *Gateway, stateDir string) (*controlServer, error) {
	path := ControlPath(stateDir)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: remove stale: %w", path, err)
	}
	// The umask makes the socket 0600 from its creation; Chmod below makes sure of it.
	old := umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	s := &controlServer{g: g, path: path, ln: ln}
	s.conns.m = map[net.Conn]bool{}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *controlServer) acceptLoop() {
	defer s.wg.Done()
	s.g.logf("control: serving %s", s.path)
	defer s.g.logf("control: stopped")
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		if !s.track(c, true) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			defer c.Close()
			s.serve(c)
		}()
	}
}

func (s *controlServer) track(c net.Conn, add bool) bool {
	s.conns.Lock()
	defer s.conns.Unlock()
	if !add {
		delete(s.conns.m, c)
		return true
	}
	if s.conns.closed {
		return false
	}
	s.conns.m[c] = true
	return true
}

// allowed checks the caller's credentials: root or the daemon's own user.
func allowed(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var uid int
	var cerr error
	if err := raw.Control(func(fd uintptr) { uid, cerr = peerUID(fd) }); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if uid != 0 && uid != os.Getuid() {
		return fmt.Errorf("uid %d may not use the control socket", uid)
	}
	return nil
}

func (s *controlServer) serve(c *net.UnixConn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	enc := json.NewEncoder(c)
	if err := allowed(c); err != nil {
		s.g.logf("control: refused: %v", err)
		enc.Encode(Response{Error: "control: " + err.Error()})
		return
	}
	var req Request
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(c, maxControlMessage)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		enc.Encode(Response{Error: fmt.Sprintf("control: bad request: %v", err)})
		return
	}
	resp := s.g.handle(req)
	if err := enc.Encode(resp); err != nil {
		s.g.logf("control: %s: write reply: %v", req.Op, err)
	}
}

// Close stops accepting, closes open connections, waits for them and removes the socket.
func (s *controlServer) Close() {
	s.ln.Close() // unlinks the socket file
	s.conns.Lock()
	s.conns.closed = true
	for c := range s.conns.m {
		c.Close()
	}
	s.conns.Unlock()
	s.wg.Wait()
}

// handle runs one control request against the gateway.
func (g *Gateway) handle(req Request) Response {
	switch req.Op {
	case OpEnroll:
		r, err := RequestToEnroll(req)
		if err != nil {
			return Response{Error: err.Error()}
		}
		e, err := g.Enroll(r)
		if err != nil {
			return Response{Error: err.Error()}
		}
		res := EnrollResultFrom(e, g.now())
		e.Forget()
		return Response{Enrollment: &res}
	case OpRevoke:
		res, err := g.Revoke(req.Name)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{Revoked: &res}
	case OpPeers:
		p := g.Peers()
		if p == nil {
			p = []PeerInfo{}
		}
		return Response{Peers: p}
	case OpStatus:
		st := g.Status()
		return Response{Status: &st}
	default:
		return Response{Error: fmt.Sprintf("control: unknown operation %q", req.Op)}
	}
}

// RequestToEnroll validates a control request's enroll options into an enroll.Request.
func RequestToEnroll(req Request) (enroll.Request, error) {
	if err := enroll.ValidateName(req.Name); err != nil {
		return enroll.Request{}, err
	}
	r := enroll.Request{Name: req.Name, Role: enroll.Viewer}
	if req.Role != "" {
		role, err := enroll.ParseRole(req.Role)
		if err != nil {
			return enroll.Request{}, err
		}
		r.Role = role
	}
	if req.PublicKey != "" {
		k, err := enroll.ParsePublicKey(req.PublicKey)
		if err != nil {
			return enroll.Request{}, err
		}
		r.PublicKey = &k
	}
	if req.TTL != "" {
		d, err := enroll.ParseTTL(req.TTL)
		if err != nil {
			return enroll.Request{}, err
		}
		r.TTL = d
	}
	return r, nil
}
