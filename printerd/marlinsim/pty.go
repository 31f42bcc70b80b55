//go:build linux

package marlinsim

// The simulator on a pseudo-terminal (see "The pty" in the package doc):
//
//  1. open: a pty pair; the slave is put in raw mode and our descriptor of it closed.
//  2. watch: inotify reports every open and close of the slave, by any process.
//  3. serveHosts: when the first descriptor opens, reset and Serve on the master ("start");
//     when the last one closes, the session ends (a reopen, however quick, resets again).
//  4. After an injected disconnect: close the master, wait ReplugAfter, back to 1.

import (
	"context"
	"errors"
	"fmt"
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
		opens  int
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

// Opens returns how many times a host has opened the port.
func (p *PTY) Opens() int {
	p.cur.Lock()
	defer p.cur.Unlock()
	return p.cur.opens
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
	if p.cur.watch != nil {
		p.cur.watch.close()
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
		p.cur.Lock()
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
	holders := 0
	for {
		for holders <= 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case ev, ok := <-w.events:
				if !ok {
					return fmt.Errorf("marlinsim: watch pty: %w", w.err)
				}
				holders = max(0, holders+ev) // (a close of a descriptor opened before the watch)
			}
		}
		p.cur.Lock()
		p.cur.opens++
		p.cur.Unlock()
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
			case ev, ok := <-w.events:
				if !ok {
					cancel()
					<-done
					return fmt.Errorf("marlinsim: watch pty: %w", w.err)
				}
				if holders += ev; holders <= 0 {
					cancel() // the host closed the port
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
		if serr == nil && holders > 0 {
			// Serve saw the host close (EIO) before inotify said so: wait for the close,
			// so that only a real reopen starts the next session.
			for holders > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case ev, ok := <-w.events:
					if !ok {
						return fmt.Errorf("marlinsim: watch pty: %w", w.err)
					}
					holders += ev
				}
			}
		}
	}
}

// serveNoReset runs one firmware session from the first open of the slave until the session
// ends by itself (an injected disconnect) or ctx is done: hosts closing and reopening the port
// do not reset it (Config.NoReset). While no host holds the port, reads wait and what the
// firmware prints is dropped.
func (p *PTY) serveNoReset(ctx context.Context, master *os.File, w *watcher) error {
	holders := 0
	events := func(ev int, ok bool) error {
		if !ok {
			return fmt.Errorf("marlinsim: watch pty: %w", w.err)
		}
		was := holders
		holders = max(0, holders+ev)
		if was == 0 && holders > 0 {
			p.cur.Lock()
			p.cur.opens++
			p.cur.Unlock()
		}
		return nil
	}
	for holders <= 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.events:
			if err := events(ev, ok); err != nil {
				return err
			}
		}
	}
	host := &hostGate{}
	host.set(true)
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
		done <- p.Sim.Serve(sctx, ptyStream{f: master, host: host})
	}()
	for {
		select {
		case ev, ok := <-w.events:
			if err := events(ev, ok); err != nil {
				cancel()
				<-done
				return err
			}
			host.set(holders > 0)
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

// hostGate says whether a host holds the port, for a board that does not reset.
type hostGate struct {
	mu   sync.Mutex
	open bool
}

func (g *hostGate) set(open bool) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
}

func (g *hostGate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
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

// watcher reports opens (+1) and closes (-1) of the pty slave by any process, from inotify:
// unlike POLLHUP on the master, it sees a close and reopen however quickly they follow.
type watcher struct {
	f      *os.File
	events chan int
	err    error // set before events is closed
	done   chan struct{}
	once   sync.Once
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
	w := &watcher{f: os.NewFile(uintptr(fd), "inotify"), events: make(chan int, 64), done: make(chan struct{})}
	go w.loop()
	return w, nil
}

func (w *watcher) loop() {
	defer close(w.events)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			w.err = err
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			var d int
			switch {
			case ev.Mask&unix.IN_OPEN != 0:
				d = 1
			case ev.Mask&unix.IN_CLOSE != 0:
				d = -1
			default:
				continue
			}
			select {
			case w.events <- d:
			case <-w.done:
				return
			}
		}
	}
}

func (w *watcher) close() {
	w.once.Do(func() {
		close(w.done)
		w.f.Close()
		for range w.events {
		}
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
	host *hostGate // nil: a host closing the port ends the stream
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
	if s.host != nil && !s.host.isOpen() {
		return len(b), nil
	}
	return s.f.Write(b)
}

func (s ptyStream) Close() error { return s.f.SetDeadline(time.Now()) }
