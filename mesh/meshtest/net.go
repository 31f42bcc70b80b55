// Package meshtest is test support for the mesh: a loopback network of mesh nodes that a
// test can partition and heal.
package meshtest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Net is loopback TCP between mesh nodes, with partitions. A partitioned address behaves
// like a gateway whose WireGuard packets are dropped: its open connections are cut, and dials
// to or from it hang until their deadline (or the heal) instead of failing at once.
type Net struct {
	mu     sync.Mutex
	cut    map[string]bool
	healed chan struct{} // closed and replaced by every Heal
	conns  map[*conn]bool
}

// New returns a network with nothing partitioned.
func New() *Net {
	return &Net{cut: map[string]bool{}, conns: map[*conn]bool{}, healed: make(chan struct{})}
}

type conn struct {
	net.Conn
	n      *Net
	ends   [2]string // the node addresses at either end ("?" for the dialing side of an accepted one)
	closed sync.Once
}

func (c *conn) Close() error {
	c.closed.Do(func() {
		c.n.mu.Lock()
		delete(c.n.conns, c)
		c.n.mu.Unlock()
	})
	return c.Conn.Close()
}

func (n *Net) track(c net.Conn, a, b string) (net.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut[a] || n.cut[b] {
		c.Close()
		return nil, fmt.Errorf("%s to %s: partitioned", a, b)
	}
	tc := &conn{Conn: c, n: n, ends: [2]string{a, b}}
	n.conns[tc] = true
	return tc, nil
}

// Partition cuts addr off from every other node until Heal.
func (n *Net) Partition(addr string) {
	n.mu.Lock()
	n.cut[addr] = true
	var cut []*conn
	for c := range n.conns {
		if c.ends[0] == addr || c.ends[1] == addr {
			cut = append(cut, c)
		}
	}
	n.mu.Unlock()
	for _, c := range cut {
		c.Conn.Close()
	}
}

// Heal joins addr to the network again.
func (n *Net) Heal(addr string) {
	n.mu.Lock()
	delete(n.cut, addr)
	close(n.healed)
	n.healed = make(chan struct{})
	n.mu.Unlock()
}

type listener struct {
	net.Listener
	n    *Net
	addr string
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, err := l.n.track(c, l.addr, "?"); err == nil {
			return tc, nil
		}
	}
}

// Listen listens on addr (a loopback host:port; empty picks a free port). Listening again on
// the address of a node that just closed waits for the port to come free.
func (n *Net) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(time.Minute); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &listener{Listener: ln, n: n, addr: ln.Addr().String()}
}

// Dialer returns the dial function of the node listening at from (a mesh.DialFunc).
func (n *Net) Dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		for {
			n.mu.Lock()
			cut, healed := n.cut[from] || n.cut[addr], n.healed
			n.mu.Unlock()
			if !cut {
				break
			}
			select { // dropped packets: the dial hangs
			case <-ctx.Done():
				return nil, fmt.Errorf("dial %s from %s: partitioned: %w", addr, from, ctx.Err())
			case <-healed:
			}
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return n.track(c, from, addr)
	}
}
