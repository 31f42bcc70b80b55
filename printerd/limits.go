package printerd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// Bounded resources. One device must not be able to take the gateway's memory, file handles
// or upload slots from the others (issue 15: 13,414 slow uploads from one phone took a Pi's
// RSS from 18 MB to 1.15 GB). Three bounds, each per device (identity = WhoIs of the remote
// address; an address no peer owns counts as a device of its own) and for the whole server:
//
//  1. connections: a listener wrapper counts open connections; one over a cap is answered
//     "429 Too Many Requests" with the reason, best effort, and closed at once, before any
//     HTTP is read, so that it costs neither a goroutine nor a buffer;
//  2. uploads: a slot per upload in progress, taken before the body is read; over a cap the
//     upload is answered 429;
//  3. request bodies: every body is read under an idle timeout (no byte for BodyIdle) and a
//     minimum rate (MinBodyRate, averaged from the first read, checked after BodyIdle); a
//     slower body ends the request with 408 and the connection is closed.
//
// And memory: a flood of refused connections makes garbage (the stack's endpoints, buffers)
// faster than the heap goal brings a collection, and the goal is high: the WireGuard
// device's batch buffers count as live heap though few of their pages are ever touched. So
// while connections are refused, the heap is collected and returned to the system every
// trimEvery (debug.FreeOSMemory, a few milliseconds of CPU), and after the last refusal until
// the flood's own connections are gone: the daemon's memory comes back near its idle size
// within seconds of a flood.
//
// The headers are bounded by http.Server's ReadHeaderTimeout and MaxHeaderBytes.

// Defaults of the Config fields of the same names.
const (
	DefaultMaxConnsPerDevice   = 32
	DefaultMaxConns            = 512
	DefaultMaxUploadsPerDevice = 2
	DefaultMaxUploads          = 16
	DefaultMinBodyRate         = 1024 // bytes per second
	DefaultBodyIdle            = 20 * time.Second
)

// limits counts connections and uploads per device and in all.
type limits struct {
	conns   *counter
	uploads *counter

	trim struct {
		sync.Mutex
		timer    *time.Timer // armed while connections are refused; nil otherwise
		refused  bool        // a refusal since the last trim
		before   int         // open connections when the refusals began
		last     time.Time   // the last refusal
		stopped  bool        // Close: no more trims
		collects int         // trims so far (tests)
	}
}

// trimEvery is how often memory is returned to the system while connections are refused;
// trimAfter how long after the last refusal at most.
const (
	trimEvery = time.Second
	trimAfter = time.Minute
)

// pressure notes a refusal and arms the trim.
func (l *limits) pressure() {
	l.trim.Lock()
	defer l.trim.Unlock()
	l.trim.refused = true
	l.trim.last = time.Now()
	if l.trim.timer == nil && !l.trim.stopped {
		_, l.trim.before = l.conns.open("")
		l.trim.timer = time.AfterFunc(trimEvery, l.trimMemory)
	}
}

// trimMemory collects the heap and returns its free pages to the system. It stays armed while
// refusals go on and, for at most trimAfter after the last, until the connections the flood
// left open (those within the caps, cut by the body rate) are gone.
func (l *limits) trimMemory() {
	debug.FreeOSMemory()
	l.trim.Lock()
	defer l.trim.Unlock()
	l.trim.collects++
	_, open := l.conns.open("")
	busy := open > l.trim.before && time.Since(l.trim.last) < trimAfter
	if (l.trim.refused || busy) && !l.trim.stopped {
		l.trim.refused = false
		l.trim.timer.Reset(trimEvery)
		return
	}
	l.trim.timer = nil
}

// stop disarms the trim for good.
func (l *limits) stop() {
	l.trim.Lock()
	defer l.trim.Unlock()
	l.trim.stopped = true
	if l.trim.timer != nil {
		l.trim.timer.Stop()
		l.trim.timer = nil
	}
}

// counter is a per-key and total count under caps.
type counter struct {
	perKey, total int
	what          string // "connections", "uploads"

	mu struct {
		sync.Mutex
		n     int
		byKey map[string]int
	}
}

func newCounter(what string, perKey, total int) *counter {
	c := &counter{perKey: perKey, total: total, what: what}
	c.mu.byKey = map[string]int{}
	return c
}

// acquire takes one for key, or returns why not.
func (c *counter) acquire(key string) (release func(), refused error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.byKey[key] >= c.perKey {
		return nil, &httpError{code: http.StatusTooManyRequests,
			msg: fmt.Sprintf("too many %s from this device: at most %d at a time", c.what, c.perKey)}
	}
	if c.mu.n >= c.total {
		return nil, &httpError{code: http.StatusTooManyRequests,
			msg: fmt.Sprintf("too many %s on this gateway: at most %d at a time; try again shortly", c.what, c.total)}
	}
	c.mu.byKey[key]++
	c.mu.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.mu.n--
			if c.mu.byKey[key]--; c.mu.byKey[key] <= 0 {
				delete(c.mu.byKey, key)
			}
		})
	}, nil
}

// open returns the count for key and in all.
func (c *counter) open(key string) (byKey, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.byKey[key], c.mu.n
}

// deviceKey is the key of the device behind a, for the caps.
func (s *Server) deviceKey(a netip.Addr) string {
	if c, ok := s.cfg.Identity.WhoIs(a); ok {
		return "peer " + c.Name
	}
	return "address " + a.String()
}

// limitListener caps the open connections of l per device and in all.
type limitListener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection within the caps; one over a cap is refused and closed
// here, and Accept goes on to the next.
func (l limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := l.s.deviceKey(addrOf(c.RemoteAddr()))
		release, refused := l.s.limits.conns.acquire(key)
		if refused != nil {
			l.s.metrics.refusedConn()
			l.s.limits.pressure()
			refuseConn(c, refused.Error())
			continue
		}
		return &limitConn{Conn: c, release: release}, nil
	}
}

// refuseConn answers 429 with the reason, without reading the request, and closes c. The
// write cannot block long (a new connection's send buffer is empty); a client that already
// sent its request may see a reset instead of the answer.
func refuseConn(c net.Conn, reason string) {
	body := `{"error":` + strconv.Quote(reason) + "}\n"
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	io.WriteString(c, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json; charset=utf-8\r\n"+
		"Retry-After: 5\r\nConnection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	c.Close()
}

// limitConn gives its slot back when closed.
type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// slowBody reads a request body under the idle timeout and the minimum rate.
type slowBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	idle    time.Duration
	minRate int64 // bytes per second
	start   time.Time
	n       int64
	eof     bool
	err     error
}

// errSlowBody is the 408 of a body that stalled or crawled.
func errSlowBody(why string) error {
	return &httpError{code: http.StatusRequestTimeout, msg: "request body too slow: " + why}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	now := time.Now()
	if b.start.IsZero() {
		b.start = now
	}
	b.rc.SetReadDeadline(now.Add(b.idle)) // not supported (a test recorder): no idle bound
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.eof = true
		b.rc.SetReadDeadline(time.Time{}) // the server's background read must not time out
	case err != nil:
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			b.err = errSlowBody(fmt.Sprintf("no data for %v", b.idle))
			return n, b.err
		}
	default:
		if el := time.Since(b.start); el > b.idle && float64(b.n) < float64(b.minRate)*el.Seconds() {
			b.err = errSlowBody(fmt.Sprintf("%d bytes in %v, under the minimum of %d bytes/s", b.n, el.Round(time.Second), b.minRate))
			b.rc.SetReadDeadline(now) // nothing more is read from this connection
			return n, b.err
		}
	}
	return n, err
}

// finish is called when the handler is done. net/http then reads what is left of the body
// (up to 256 KiB, to keep the connection) with no deadline of its own: it gets half a second,
// enough for what a client already sent, not for a body that trickles; after that the
// connection is closed after the response.
func (b *slowBody) finish() {
	if !b.eof {
		b.rc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	}
}

// boundBody puts r's body, if it has one, under the idle timeout and the minimum rate; nil
// when it has none.
func (s *Server) boundBody(w http.ResponseWriter, r *http.Request) *slowBody {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	b := &slowBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: s.cfg.BodyIdle, minRate: s.cfg.MinBodyRate}
	r.Body = b
	return b
}
