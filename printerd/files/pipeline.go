package files

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"unsafe"
)

// This file is Put's body path: three stages that overlap, joined by bounded channels.
//
//	receive (the caller's goroutine)  check (one goroutine)       store (one goroutine)
//	body → free chunk ──toCheck──▶  Check reads the chunk ──toStore──▶ SHA-256, estimate,
//	                                                                   write; chunk → free
//
// At most chunksPerPut chunks of chunkSize exist per upload, so one upload holds at most
// chunksPerPut*chunkSize bytes in memory however fast the network is and however slow the
// disk. A chunk reaches the store stage only after Check has read all of it, the file is
// fsynced once at the end, and Put renames it to its name only after Check returned nil for
// the whole body: nothing unchecked is ever listed.

const (
	chunkSize    = 128 << 10
	chunksPerPut = 4
)

// chunkPool holds chunk buffers aligned to directAlign, as O_DIRECT writes need.
var chunkPool = sync.Pool{New: func() any {
	raw := make([]byte, chunkSize+directAlign)
	off := int(directAlign - uintptr(unsafe.Pointer(&raw[0]))%directAlign)
	b := raw[off : off+chunkSize : off+chunkSize]
	return &b
}}

// chunk is a filled part of a pooled buffer.
type chunk struct {
	buf *[]byte
	n   int
}

func (c chunk) bytes() []byte { return (*c.buf)[:c.n] }

// errStopped ends the body for Check when a later stage failed; Put reports that failure.
var errStopped = errors.New("upload stopped")

// pipe is one upload in flight.
type pipe struct {
	free    chan *[]byte  // empty buffers, chunksPerPut at most
	toCheck chan chunk    // filled chunks, in order; closed after the last
	toStore chan chunk    // checked chunks, in order; closed after the last
	stop    chan struct{} // closed when a stage fails: receive stops reading
	stopped sync.Once

	readErr error // set by receive before it closes toCheck; nil for a clean end

	// Results of the store stage, read after it ends.
	h        hash.Hash
	est      estimator
	disk     *diskWriter
	room     func(n int64) error // ErrNoSpace when n more bytes would eat into the reserve
	writeErr error
}

// runPipe passes body through check and into f, and returns the pipe with its hash and
// estimate, and the check's verdict or the store stage's write error. body's own error, if
// any, is in p.readErr (and reached check as a read error). room is asked before every chunk
// is written (Put's spaceWatch decides when to look at the disk); its error stops the upload
// as a write error does.
func runPipe(body io.Reader, f *os.File, check func(r io.Reader) error, room func(n int64) error) (*pipe, error) {
	p := &pipe{
		free:    make(chan *[]byte, chunksPerPut),
		toCheck: make(chan chunk, chunksPerPut),
		toStore: make(chan chunk, chunksPerPut),
		stop:    make(chan struct{}),
		h:       sha256.New(),
		disk:    newDiskWriter(f),
		room:    room,
	}
	bufs := make([]*[]byte, chunksPerPut)
	for i := range bufs {
		bufs[i] = chunkPool.Get().(*[]byte)
		p.free <- bufs[i]
	}
	checkDone := make(chan error, 1)
	go func() { checkDone <- p.check(check) }()
	storeDone := make(chan struct{})
	go func() { p.store(); close(storeDone) }()

	p.receive(body)
	err := <-checkDone
	<-storeDone
	for _, b := range bufs { // every stage has ended: no chunk is in use
		chunkPool.Put(b)
	}
	if p.writeErr != nil && (err == nil || errors.Is(err, errStopped)) {
		err = p.writeErr
	}
	return p, err
}

func (p *pipe) halt() { p.stopped.Do(func() { close(p.stop) }) }

func (p *pipe) halted() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// receive fills free buffers from body and passes them on, until body ends or a stage stops.
func (p *pipe) receive(body io.Reader) {
	defer close(p.toCheck)
	for {
		var buf *[]byte
		select {
		case buf = <-p.free:
		case <-p.stop:
			p.readErr = errStopped
			return
		}
		b := *buf
		n := 0
		var err error
		for n < len(b) && err == nil {
			if p.halted() {
				err = errStopped
				break
			}
			var m int
			m, err = body.Read(b[n:])
			n += m
		}
		if n > 0 {
			p.toCheck <- chunk{buf, n} // never blocks: the channel holds every buffer there is
		} else {
			p.free <- buf
		}
		if err != nil {
			if err != io.EOF {
				p.readErr = err
			}
			return
		}
	}
}

// check runs the Check function over the chunks as one reader and hands each chunk on once
// Check has read all of it. A Check that returns nil must have read to the end.
func (p *pipe) check(check func(r io.Reader) error) (err error) {
	cr := &chunkReader{p: p}
	defer func() {
		// net/http would have recovered a panic in the handler's goroutine; this one is ours.
		if r := recover(); r != nil {
			err = fmt.Errorf("check failed: %v", r)
			p.halt()
		}
		cr.pass()
		close(p.toStore)
	}()
	err = check(cr)
	if err == nil {
		// Check promised to read to the end; make sure, so nothing unchecked is stored.
		if n, rerr := io.Copy(io.Discard, cr); n > 0 || rerr != nil {
			err = fmt.Errorf("check stopped %d bytes before the end: %v", n, rerr)
		}
	}
	if err != nil {
		p.halt()
	}
	return err
}

// chunkReader is the body as the Check function reads it.
type chunkReader struct {
	p    *pipe
	cur  chunk // the chunk being read; buf nil when none
	off  int
	done bool
}

// next passes the current chunk on and takes the next; false at the end of the body.
func (c *chunkReader) next() bool {
	c.pass()
	ch, ok := <-c.p.toCheck
	if !ok {
		c.done = true
		return false
	}
	c.cur, c.off = ch, 0
	return true
}

// pass hands the current chunk, fully read, to the store stage.
func (c *chunkReader) pass() {
	if c.cur.buf != nil {
		c.p.toStore <- c.cur
		c.cur = chunk{}
	}
}

func (c *chunkReader) end() error {
	if c.p.readErr != nil {
		return c.p.readErr
	}
	return io.EOF
}

func (c *chunkReader) Read(b []byte) (int, error) {
	for c.cur.buf == nil || c.off == c.cur.n {
		if c.done || !c.next() {
			return 0, c.end()
		}
	}
	n := copy(b, c.cur.bytes()[c.off:])
	c.off += n
	return n, nil
}

// WriteTo hands the Check function the chunks themselves (policy.CheckFile uses it): no
// copy. It returns w's error, or the body's error, or nil at a clean end.
func (c *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if c.cur.buf != nil && c.off < c.cur.n {
			n, err := w.Write(c.cur.bytes()[c.off:])
			total += int64(n)
			c.off = c.cur.n
			if err != nil {
				return total, err
			}
		}
		if c.done || !c.next() {
			err := c.end()
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
	}
}

// store hashes, scans and writes each checked chunk, then frees its buffer.
func (p *pipe) store() {
	defer func() {
		if r := recover(); r != nil {
			p.writeErr = fmt.Errorf("store failed: %v", r)
			p.halt()
			for range p.toStore { // let check finish; its chunks are dropped
			}
		}
	}()
	for ch := range p.toStore {
		b := ch.bytes()
		if p.writeErr == nil {
			p.h.Write(b)
			p.est.Write(b)
			err := error(nil)
			if p.room != nil {
				err = p.room(int64(len(b)))
			}
			if err == nil {
				err = p.disk.write(b)
			}
			if err != nil {
				p.writeErr = err
				p.halt()
			}
		}
		p.free <- ch.buf
	}
}
