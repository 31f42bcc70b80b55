//go:build linux

package marlinsim

// The simulator on a pseudo-terminal (see "The pty" in the package doc):
//
//  1. open: a pty pair; the slave is put in raw mode and our descriptor of it closed.
//  2. watch: inotify counts every open and close of the slave, by any process; the count is
//     read on demand, taking every event the kernel has queued first, so it is exact for
//     whatever happened before the read.
//  3. serveHosts: when the first descriptor opens, reset and Serve on the master ("start");
//     when the last one closes, the session ends (a reopen, however quick, resets again).
//     Without a reset (Config.NoReset) one session runs on, and what the firmware prints
//     while no descriptor is open is dropped.
//  4. After an injected disconnect: close the master, wait ReplugAfter, back to 1.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// resetTime is how long after the host opens the pty the firmware starts.
const resetTime = 100 * time.Millisecond

// PTY is a Sim served on a pseudo-terminal.
type PTY struct {
	// Sim is the simulated printer (its record and Inject).
	Sim *Sim

	cfg    Config
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why run ended; read after done

	// cur is the pty in use.
	cur struct {
		sync.Mutex
		path   string
		master *os.File
		watch  *watcher
		opens  int // opens seen by earlier watchers (before a replug)
		plugs  int
	}
	closed sync.Once
}

// OpenPTY starts a simulator with cfg on a new pty and returns once the slave path exists.
// The simulator runs until ctx is done or Close is called.
func OpenPTY(ctx context.Context, cfg Config) (*PTY, error) {
	p := &PTY{Sim: New(cfg), cfg: cfg, done: make(chan struct{})}
	if err := p.open(); err != nil {
		return nil, err
	}
	ctx, p.cancel = context.WithCancel(ctx)
	go func() {
		defer close(p.done)
		p.err = p.run(ctx)
	}()
	return p, nil
}

// Path returns the slave device path a host opens; it changes after an injected disconnect
// (Config.Link, if set, always points at it).
func (p *PTY) Path() string {
	p.cur.Lock()
	defer p.cur.Unlock()
	return p.cur.path
}

// Opens returns how many times a host has opened the port (a first descriptor of the slave
// was opened), up to now.
func (p *PTY) Opens() int {
	p.cur.Lock()
	defer p.cur.Unlock()
	n := p.cur.opens
	if p.cur.watch != nil {
		st, _ := p.cur.watch.state()
		n += st.opens
	}
	return n
}

// Plugs returns how many times the port has appeared: 1, plus one per injected disconnect
// that was followed by a replug.
func (p *PTY) Plugs() int {
	p.cur.Lock()
	defer p.cur.Unlock()
	return p.cur.plugs
}

// Close stops the simulator, closes the pty and removes the link. A second Close returns an
// error wrapping net.ErrClosed.
func (p *PTY) Close() error {
	first := false
	p.closed.Do(func() { first = true })
	if !first {
		return fmt.Errorf("marlinsim: close pty: %w", net.ErrClosed)
	}
	p.cancel()
	<-p.done
	p.cur.Lock()
	defer p.cur.Unlock()
	if w := p.cur.watch; w != nil {
		w.close()
		st, _ := w.state()
		p.cur.opens += st.opens
		p.cur.watch = nil
	}
	if p.cur.master != nil {
		p.cur.master.Close()
		p.cur.master = nil
	}
	if p.cfg.Link != "" {
		os.Remove(p.cfg.Link)
	}
	return nil
}

// open makes a new pty pair and points the link at its slave.
func (p *PTY) open() error {
	m, s, err := pty.Open()
	if err != nil {
		return fmt.Errorf("marlinsim: open pty: %w", err)
	}
	path := s.Name()
	if err := makeRaw(s); err != nil {
		m.Close()
		s.Close()
		return fmt.Errorf("marlinsim: raw mode on %s: %w", path, err)
	}
	s.Close()
	// A non-blocking descriptor lets the Go poller serve the master, with deadlines.
	fd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err != nil {
		return fmt.Errorf("marlinsim: dup pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("marlinsim: pty master non-blocking: %w", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	w, err := watch(path)
	if err != nil {
		master.Close()
		return err
	}
	if p.cfg.Link != "" {
		tmp := p.cfg.Link + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(path, tmp); err != nil {
			w.close()
			master.Close()
			return fmt.Errorf("marlinsim: link %s: %w", p.cfg.Link, err)
		}
		if err := os.Rename(tmp, p.cfg.Link); err != nil {
			os.Remove(tmp)
			w.close()
			master.Close()
			return fmt.Errorf("marlinsim: link %s: %w", p.cfg.Link, err)
		}
	}
	p.cur.Lock()
	p.cur.path, p.cur.master, p.cur.watch = path, master, w
	p.cur.plugs++
	p.cur.Unlock()
	p.Sim.logf("marlinsim: pty %s", path)
	return nil
}

// makeRaw is cfmakeraw() on the slave, 8N1, so bytes pass untouched until the host sets its
// own mode.
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// run serves the pty until ctx is done, replugging after injected disconnects.
func (p *PTY) run(ctx context.Context) error {
	for {
		p.cur.Lock()
		master, w := p.cur.master, p.cur.watch
		p.cur.Unlock()
		err := p.serveHosts(ctx, master, w)
		w.close()
		st, _ := w.state()
		p.cur.Lock()
		p.cur.opens += st.opens
		p.cur.watch = nil
		p.cur.Unlock()
		if !errors.Is(err, ErrDisconnected) {
			return err
		}
		// The cable is pulled: the host's reads fail; later the port comes back.
		p.cur.Lock()
		master.Close()
		p.cur.master = nil
		if p.cfg.Link != "" {
			os.Remove(p.cfg.Link)
		}
		p.cur.Unlock()
		if err := pause(ctx, p.Sim.cfg.ReplugAfter); err != nil {
			return err
		}
		if err := p.open(); err != nil {
			return err
		}
	}
}

// serveHosts runs one firmware session per host open of the slave: a session starts when the
// first descriptor of the slave is opened and ends when the last one is closed (or the
// session ends by itself). It returns ErrDisconnected or ctx's error.
func (p *PTY) serveHosts(ctx context.Context, master *os.File, w *watcher) error {
	if p.cfg.NoReset {
		return p.serveNoReset(ctx, master, w)
	}
	for {
		st, err := w.waitHost(ctx)
		if err != nil {
			return err
		}
		closes := st.closes
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			// The reset takes a moment (a bootloader takes longer), and the host is still
			// setting the port up: go.bug.st/serial and pyserial configure it after open,
			// and a banner sent at once could be flushed.
			if err := pause(sctx, resetTime); err != nil {
				done <- err
				return
			}
			master.SetDeadline(time.Time{})
			flush(master)
			done <- p.Sim.Serve(sctx, ptyStream{f: master})
		}()
		var serr error
	session:
		for {
			select {
			case <-w.changed:
				st, err := w.state()
				if err != nil {
					cancel()
					<-done
					return err
				}
				if st.closes != closes {
					cancel() // the host closed the port (and may have opened it again)
					serr = <-done
					break session
				}
			case serr = <-done:
				break session
			}
		}
		cancel()
		if errors.Is(serr, ErrDisconnected) || ctx.Err() != nil {
			return cmpOr(serr, ctx.Err())
		}
		if serr != nil && !errors.Is(serr, context.Canceled) {
			p.Sim.logf("marlinsim: pty session: %v", serr)
		}
		// Serve saw the host close (EIO) before the close was counted: wait for it, so that
		// only a real reopen starts the next session.
		for serr == nil {
			st, err := w.state()
			if err != nil {
				return err
			}
			if st.closes != closes {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-w.changed:
			}
		}
	}
}

// serveNoReset runs one firmware session from the first open of the slave until the session
// ends by itself (an injected disconnect) or ctx is done: hosts closing and reopening the port
// do not reset it (Config.NoReset). While no host holds the port, reads wait and what the
// firmware prints is dropped. Whether a host holds it is asked at each write, from the
// watcher's exact count: a host's open comes before its first line, so before any answer.
func (p *PTY) serveNoReset(ctx context.Context, master *os.File, w *watcher) error {
	if _, err := w.waitHost(ctx); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		if err := pause(sctx, resetTime); err != nil { // power-up
			done <- err
			return
		}
		master.SetDeadline(time.Time{})
		flush(master)
		done <- p.Sim.Serve(sctx, ptyStream{f: master, host: w})
	}()
	for {
		select {
		case <-w.changed:
			if _, err := w.state(); err != nil {
				cancel()
				<-done
				return err
			}
		case serr := <-done:
			if errors.Is(serr, ErrDisconnected) || ctx.Err() != nil {
				return cmpOr(serr, ctx.Err())
			}
			if serr == nil {
				serr = errors.New("marlinsim: session ended")
			}
			return serr
		}
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// flush discards what the previous host left unread in both directions (a reset loses it).
func flush(master *os.File) {
	rc, err := master.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.IoctlSetInt(int(fd), unix.TCFLSH, unix.TCIOFLUSH)
	})
}

// watcher counts the descriptors of the pty slave open in any process, from inotify: unlike
// POLLHUP on the master, it sees a close and reopen however quickly they follow. The count is
// read on demand: state takes every event the kernel has queued before it answers, so it is
// exact for anything that happened before the call. (A count kept by a goroutine forwarding
// events lags: a firmware answering a host's first line could find the host not there yet,
// or the host before it still there.) changed is signalled after events were taken, and on
// an error.
type watcher struct {
	f       *os.File
	rc      syscall.RawConn
	changed chan struct{} // capacity 1
	ended   chan struct{} // closed when loop returns
	once    sync.Once

	mu  sync.Mutex
	st  watchState
	err error // the inotify descriptor failed or was closed
	buf []byte
}

// watchState is what the watcher counted.
type watchState struct {
	holders int // descriptors of the slave open now
	opens   int // times holders went from 0 to 1
	closes  int // times holders went back to 0
}

func watch(path string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("marlinsim: inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN|unix.IN_CLOSE); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("marlinsim: inotify watch %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("marlinsim: inotify: %w", err)
	}
	w := &watcher{
		f: f, rc: rc,
		changed: make(chan struct{}, 1),
		ended:   make(chan struct{}),
		buf:     make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1)),
	}
	go w.loop()
	return w, nil
}

// loop takes events as the kernel queues them, so that waiters learn of them.
func (w *watcher) loop() {
	defer close(w.ended)
	for {
		err := w.rc.Read(func(fd uintptr) bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.takeLocked(fd) // false: nothing queued, wait until readable
		})
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err // closed
		}
		failed := w.err != nil
		w.mu.Unlock()
		w.signal()
		if failed {
			return
		}
	}
}

// takeLocked reads and counts every event queued on fd; w.mu is held. It reports whether
// anything happened (events, or an error, which it records).
func (w *watcher) takeLocked(fd uintptr) bool {
	took := false
	for w.err == nil {
		n, err := unix.Read(int(fd), w.buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return took
		}
		if err != nil || n <= 0 {
			w.err = cmpOr(err, io.ErrUnexpectedEOF)
			return true
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			switch {
			case ev.Mask&unix.IN_OPEN != 0:
				if w.st.holders++; w.st.holders == 1 {
					w.st.opens++
				}
			case ev.Mask&unix.IN_CLOSE != 0:
				// (A close of a descriptor opened before the watch is not counted.)
				if w.st.holders > 0 {
					if w.st.holders--; w.st.holders == 0 {
						w.st.closes++
					}
				}
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				w.err = errors.New("inotify queue overflow")
			}
		}
		took = true
	}
	return true
}

// state takes the events queued now and returns the count.
func (w *watcher) state() (watchState, error) {
	w.mu.Lock()
	took := false
	if w.err == nil {
		if err := w.rc.Control(func(fd uintptr) { took = w.takeLocked(fd) }); err != nil {
			w.err = err
		}
	}
	st, err := w.st, w.err
	w.mu.Unlock()
	if took {
		w.signal()
	}
	if err != nil {
		return st, fmt.Errorf("marlinsim: watch pty: %w", err)
	}
	return st, nil
}

// holding reports whether a host holds the port now.
func (w *watcher) holding() bool {
	st, err := w.state()
	return err == nil && st.holders > 0
}

// waitHost waits until a host holds the port.
func (w *watcher) waitHost(ctx context.Context) (watchState, error) {
	for {
		st, err := w.state()
		if err != nil || st.holders > 0 {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-w.changed:
		}
	}
}

func (w *watcher) signal() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// close stops the watch; the count stays readable (state then returns an error with it).
func (w *watcher) close() {
	w.once.Do(func() {
		w.f.Close()
		<-w.ended
	})
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ptyStream is the master as Serve's stream. Close only interrupts pending reads and writes
// (the master outlives a session). With a host gate (Config.NoReset) the stream outlives the
// hosts too: a read while no host holds the slave (EIO) waits for the next one, and writes
// are dropped meanwhile.
type ptyStream struct {
	f    *os.File
	host *watcher // nil: a host closing the port ends the stream
}

// hostPoll is how often a read looks again for a host while none holds the port.
const hostPoll = 10 * time.Millisecond

func (s ptyStream) Read(b []byte) (int, error) {
	for {
		n, err := s.f.Read(b)
		if s.host == nil || n > 0 || !errors.Is(err, syscall.EIO) {
			return n, err
		}
		time.Sleep(hostPoll) // a Close sets the deadline: the next Read fails with it
	}
}

func (s ptyStream) Write(b []byte) (int, error) {
	if s.host != nil && !s.host.holding() {
		return len(b), nil
	}
	return s.f.Write(b)
}

func (s ptyStream) Close() error { return s.f.SetDeadline(time.Now()) }
