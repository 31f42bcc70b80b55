package mesh

// What the gateway's own process needs of its Node beyond reads and writes: a notification
// when the roster it reads changes, and a transport for a node opened with no network (the
// CLI working on a state directory while no daemon runs).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
)

// Changed returns a channel closed at the next change of what Roster returns: every command
// the replica applies (a snapshot restored included) and every revocation applied here
// before it commits. The daemon's loop takes the channel first, then reads Roster, and
// reacts to the difference (WireGuard peers, connections of revoked devices).
func (n *Node) Changed() <-chan struct{} {
	n.watch.Lock()
	defer n.watch.Unlock()
	return n.watch.ch
}

// changed closes the current Changed channel.
func (n *Node) changed() {
	n.watch.Lock()
	close(n.watch.ch)
	n.watch.ch = make(chan struct{})
	n.watch.Unlock()
}

// ErrOffline is what OfflineDial answers: the node was opened without a network.
var ErrOffline = errors.New("opened offline: no other gateway is reachable from this process")

// OfflineListener returns a listener that never accepts a connection, advertised as addr:
// with it and OfflineDial a Node runs alone. A mesh of one elects itself and commits; a mesh
// of several cannot reach a majority, so its writes fail with ErrNoQuorum, while Revoke is
// applied locally (and committed by the daemon once it runs).
func OfflineListener(addr string) net.Listener {
	return &offlineListener{addr: advertAddr(addr), done: make(chan struct{})}
}

// OfflineDial is the dial function of an offline node: every dial fails with ErrOffline.
func OfflineDial(_ context.Context, addr string) (net.Conn, error) {
	return nil, fmt.Errorf("dial %s: %w", addr, ErrOffline)
}

type offlineListener struct {
	addr advertAddr
	once sync.Once
	done chan struct{}
}

func (l *offlineListener) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

func (l *offlineListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *offlineListener) Addr() net.Addr { return l.addr }

// logfWriter adapts Logf to the io.Writer hclog writes lines to.
type logfWriter func(string, ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
