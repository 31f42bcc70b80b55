package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// One listener carries two kinds of stream, told apart by their first byte:
//
//	'R'  raft's own RPCs (hashicorp/raft's NetworkTransport speaks on it)
//	'F'  one forwarded call: a follower's write or read-index request to the leader
//
// The listener is the caller's: in the daemon a netstack listener on the gateway's tunnel
// address, so only WireGuard peers reach it and the peer is authenticated by its key; in
// tests loopback TCP. The mux itself authenticates nobody.
const (
	streamRaft    byte = 'R'
	streamForward byte = 'F'
)

// helloTimeout bounds how long an accepted stream may take to send its first byte.
const helloTimeout = 10 * time.Second

// DialFunc connects to another node's advertised address.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// mux accepts on the listener and sorts streams by their first byte. Its accept loop is
// owned by the Node: started in Open, ended by close (which closes the listener).
type mux struct {
	ln        net.Listener
	advertise string
	dial      DialFunc
	logf      func(string, ...any)

	// dials is canceled by stopDials: a dial hanging on an unreachable peer (a WireGuard
	// peer drops packets, it does not refuse) must not hold up Close.
	dials     context.Context
	stopDials context.CancelFunc

	raftCh    chan net.Conn
	forwardCh chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	// conns are the streams open through the mux, both ways: close cuts them all, so no
	// goroutine of raft's transport waits on a peer that never hangs up.
	conns struct {
		sync.Mutex
		m      map[*muxConn]bool
		closed bool
	}
}

// muxConn is a stream the mux tracks until it is closed.
type muxConn struct {
	net.Conn
	m    *mux
	once sync.Once
}

func (c *muxConn) Close() error {
	c.once.Do(func() {
		c.m.conns.Lock()
		delete(c.m.conns.m, c)
		c.m.conns.Unlock()
	})
	return c.Conn.Close()
}

// track registers c; after close it is closed at once.
func (m *mux) track(c net.Conn) (net.Conn, error) {
	m.conns.Lock()
	defer m.conns.Unlock()
	if m.conns.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	mc := &muxConn{Conn: c, m: m}
	m.conns.m[mc] = true
	return mc, nil
}

func newMux(ln net.Listener, advertise string, dial DialFunc, logf func(string, ...any)) *mux {
	m := &mux{ln: ln, advertise: advertise, dial: dial, logf: logf,
		raftCh: make(chan net.Conn), forwardCh: make(chan net.Conn), done: make(chan struct{})}
	m.conns.m = map[*muxConn]bool{}
	m.dials, m.stopDials = context.WithCancel(context.Background())
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.logf("mesh: accept: %v; listener stops", err)
			return
		}
		tc, err := m.track(c)
		if err != nil {
			return
		}
		m.wg.Add(1)
		go m.sort(tc)
	}
}

// sort reads c's first byte and hands it to whoever takes that kind.
func (m *mux) sort(c net.Conn) {
	defer m.wg.Done()
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	if _, err := c.Read(b[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	var ch chan net.Conn
	switch b[0] {
	case streamRaft:
		ch = m.raftCh
	case streamForward:
		ch = m.forwardCh
	default:
		m.logf("mesh: stream from %v opens with %#x: dropped", c.RemoteAddr(), b[0])
		c.Close()
		return
	}
	select {
	case ch <- c:
	case <-m.done:
		c.Close()
	}
}

// open dials addr and announces the kind of stream.
func (m *mux) open(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.dials, cancel)()
	c, err := m.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if c, err = m.track(c); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(dl)
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// interrupt makes every read and write in progress on the open streams fail now, without
// closing them: raft's Shutdown waits for its in-flight calls (a pre-vote to a gateway that
// is gone reads until raft's network timeout), and this ends them at once.
func (m *mux) interrupt() {
	m.conns.Lock()
	defer m.conns.Unlock()
	past := time.Unix(1, 0)
	for c := range m.conns.m {
		c.SetDeadline(past)
	}
}

// shutdownRaft shuts raft down, interrupting the streams' calls in flight until it is done:
// an RPC raft starts meanwhile sets its own deadline again.
func (n *Node) shutdownRaft() error {
	f := n.raft.Shutdown()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		n.mux.interrupt()
		select {
		case err := <-done:
			return err
		case <-t.C:
		}
	}
}

// close stops accepting and waits for the mux's goroutines.
func (m *mux) close() {
	m.closeOnce.Do(func() {
		m.stopDials()
		close(m.done)
		m.ln.Close()
		m.conns.Lock()
		m.conns.closed = true
		open := m.conns.m
		m.conns.m = nil
		m.conns.Unlock()
		for c := range open {
			c.Conn.Close()
		}
	})
	m.wg.Wait()
}

// streamLayer is the raft side of the mux.
type streamLayer struct{ m *mux }

var _ raft.StreamLayer = streamLayer{}

func (s streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftCh:
		return c, nil
	case <-s.m.done:
		return nil, net.ErrClosed
	}
}

// Close is raft's transport shutting down; the Node closes the mux itself after raft.
func (s streamLayer) Close() error { return nil }

func (s streamLayer) Addr() net.Addr { return advertAddr(s.m.advertise) }

func (s streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := s.m.open(ctx, string(addr), streamRaft)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

// advertAddr is the address other nodes dial, as raft wants it from Addr.
type advertAddr string

func (a advertAddr) Network() string { return "mesh" }
func (a advertAddr) String() string  { return string(a) }
