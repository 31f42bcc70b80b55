package connect

import (
	"io"
	"net"
	"sync"
)

// connSet tracks the open client connections of one listener: their count for the status
// lines, and all of them to close at the end (an HTTP server forgets hijacked ones, such as
// a websocket).
type connSet struct {
	mu     sync.Mutex
	m      map[*trackedConn]bool
	total  int64
	closed bool
}

// listener wraps a listener so that every accepted connection is tracked by s.
type listener struct {
	net.Listener
	s *connSet
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	if !l.s.add(tc) {
		c.Close()
		return nil, net.ErrClosed
	}
	return tc, nil
}

func (s *connSet) add(c *trackedConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.m == nil {
		s.m = map[*trackedConn]bool{}
	}
	s.m[c] = true
	s.total++
	return true
}

func (s *connSet) remove(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, c)
}

// counts returns the open and the total connections.
func (s *connSet) counts() (open int, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m), s.total
}

// closeAll closes every open connection and refuses new ones.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*trackedConn, 0, len(s.m))
	for c := range s.m {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	s    *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.s.remove(c) })
	return c.Conn.Close()
}

// CloseWrite half-closes when the underlying connection can.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// splice copies both ways between a and b until both directions end, passing each EOF on as
// a half-close, then closes both. An error either way closes both at once.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	one := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		cw, ok := dst.(interface{ CloseWrite() error })
		if err != nil || !ok || cw.CloseWrite() != nil {
			// A reset, or no half-close: nothing more will flow either way.
			a.Close()
			b.Close()
		}
	}
	wg.Add(2)
	go one(a, b)
	go one(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
