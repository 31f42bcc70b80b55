package marlinsim

// The wire, both directions:
//
//  1. readLoop reads what the host wrote and, in receive, gives every byte an arrival time:
//     one byte time (10 bits at Baud) after the previous byte, and never before it was
//     written. Numbered lines are held until their line break so noise can pick a byte.
//  2. The firmware's pump moves bytes whose arrival time has come into the receive ring,
//     running the emergency parser on each and dropping those that find the ring full.
//  3. print queues a line at the firmware's current time; writeLoop puts it on the wire
//     OKLatency later, paced at Baud, never before its last byte would have arrived.

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// errHostClosed ends a connection because the host closed its end.
var errHostClosed = errors.New("marlinsim: host closed the link")

// outLine is one line printed by the firmware, at firmware time at.
type outLine struct {
	b  []byte
	at int64
}

// conn is one connection: from a reset to the end of the link. The firmware state (fw.go) is
// owned by the goroutine running run; in and out are shared with the reader and writer.
type conn struct {
	s      *Sim
	cfg    *Config
	rw     io.ReadWriter
	epoch  time.Time
	byteNS int64 // wire time of one byte; 0 when unpaced

	// in holds bytes the host wrote, with their arrival times, until the firmware pumps them.
	in struct {
		sync.Mutex
		pend    []byte
		pendAt  []int64
		head    int
		eolAt   []int64 // arrival times of line breaks not yet pumped
		eolHead int
		last    int64  // arrival time of the last released byte
		held    []byte // a numbered line held for noise until its line break
		heldAt  int64
		err     error // the read error that ended the reader
	}
	wake chan struct{} // signalled when the reader has news

	// out is the firmware's transmit queue.
	out struct {
		sync.Mutex
		q []outLine
	}
	outWake chan struct{}

	fw // firmware state
}

func newConn(s *Sim, rw io.ReadWriter) *conn {
	c := &conn{
		s:       s,
		cfg:     &s.cfg,
		rw:      rw,
		epoch:   time.Now(),
		wake:    make(chan struct{}, 1),
		outWake: make(chan struct{}, 1),
	}
	if s.cfg.Baud > 0 {
		c.byteNS = int64(10 * time.Second / time.Duration(s.cfg.Baud))
	}
	c.fw.init(c)
	return c
}

// wallNS is the wall clock as nanoseconds since the connection began.
func (c *conn) wallNS() int64 { return int64(time.Since(c.epoch)) }

// wall converts a connection time to wall time.
func (c *conn) wall(t int64) time.Time { return c.epoch.Add(time.Duration(t)) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// readLoop reads the host's bytes until the stream fails.
func (c *conn) readLoop() {
	buf := make([]byte, 4096)
	for {
		n, err := c.rw.Read(buf)
		if n > 0 {
			c.receive(buf[:n], c.wallNS())
		}
		if err != nil {
			c.in.Lock()
			c.in.err = err
			c.in.Unlock()
			signal(c.wake)
			return
		}
	}
}

// receive timestamps bytes read at time t.
func (c *conn) receive(b []byte, t int64) {
	c.in.Lock()
	defer c.in.Unlock()
	for _, x := range b {
		if len(c.in.held) == 0 {
			c.in.heldAt = t
		}
		c.in.held = append(c.in.held, x)
		if x == '\n' || x == '\r' {
			c.releaseLocked(true)
		}
	}
	// Hold back only a numbered line that noise may still hit.
	if len(c.in.held) > 0 && (c.cfg.Noise <= 0 || !numberedStart(c.in.held) || len(c.in.held) > 512) {
		c.releaseLocked(false)
	}
	signal(c.wake)
}

// numberedStart reports whether a (partial) line's first non-space byte is 'N'.
func numberedStart(b []byte) bool {
	for _, x := range b {
		if x != ' ' {
			return x == 'N'
		}
	}
	return false
}

// releaseLocked puts the held bytes on the wire. c.in must be held.
func (c *conn) releaseLocked(noisy bool) {
	line := c.in.held
	if noisy && c.cfg.Noise > 0 && numberedStart(line) {
		c.corrupt(line)
	}
	start := max(c.in.last, c.in.heldAt)
	for i, x := range line {
		at := start + int64(i+1)*c.byteNS
		c.in.pend = append(c.in.pend, x)
		c.in.pendAt = append(c.in.pendAt, at)
		if x == '\n' || x == '\r' {
			c.in.eolAt = append(c.in.eolAt, at)
		}
	}
	c.in.last = start + int64(len(line))*c.byteNS
	c.s.stat(func(st *Stats) { st.RXBytes += int64(len(line)) })
	c.in.held = c.in.held[:0]
}

// corrupt maybe flips one bit of one byte of a numbered line, never the first non-space byte
// nor the line break, and never into a line break or backspace (see the package doc).
func (c *conn) corrupt(line []byte) {
	rng := c.s.noise
	if rng.Float64() >= c.cfg.Noise {
		return
	}
	first := 0
	for first < len(line) && line[first] == ' ' {
		first++
	}
	lo, hi := first+1, len(line)
	if hi > 0 && (line[hi-1] == '\n' || line[hi-1] == '\r') {
		hi--
	}
	if hi <= lo {
		return
	}
	for {
		i := lo + rng.IntN(hi-lo)
		b := line[i] ^ (1 << rng.IntN(8))
		if b == '\n' || b == '\r' || b == 0x08 {
			continue
		}
		line[i] = b
		break
	}
	c.s.stat(func(st *Stats) { st.NoisyLines++ })
}

// print queues one line for the host at the firmware's current time.
func (c *conn) print(line string) {
	if c.silent {
		return
	}
	b := make([]byte, 0, len(line)+1)
	b = append(b, line...)
	b = append(b, '\n')
	c.out.Lock()
	c.out.q = append(c.out.q, outLine{b: b, at: c.now})
	c.out.Unlock()
	isOK := len(line) >= 2 && line[:2] == "ok"
	c.s.stat(func(st *Stats) {
		st.TXBytes += int64(len(b))
		if isOK {
			st.OKs++
		}
	})
	signal(c.outWake)
}

// writeLoop paces the firmware's output onto the wire until ctx is done.
func (c *conn) writeLoop(ctx context.Context) {
	latency := int64(c.cfg.OKLatency)
	var free int64 // when the wire is next free
	failed := false
	var batch []byte
	flush := func() {
		if len(batch) > 0 && !failed {
			if _, err := c.rw.Write(batch); err != nil {
				failed = true
			}
		}
		batch = batch[:0]
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.out.Lock()
		q := c.out.q
		c.out.q = nil
		c.out.Unlock()
		if len(q) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-c.outWake:
			}
			continue
		}
		for _, l := range q {
			start := max(l.at+latency, free)
			end := start + int64(len(l.b))*c.byteNS
			free = end
			if d := end - c.wallNS(); d > 0 && (latency > 0 || c.byteNS > 0) {
				flush()
				timer.Reset(time.Duration(d))
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
			batch = append(batch, l.b...)
		}
		flush()
	}
}

// hostGone reports whether a read error means the host closed its end.
func hostGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EIO)
}
