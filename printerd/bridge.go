package printerd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// This file is the raw serial bridge for desktop hosts (Pronterface/printcore, Repetier-Host,
// OctoPrint on a laptop): a plain TCP port on the printer's tunnel address (BridgePort) that
// speaks Marlin's line protocol. It is not a passthrough: each line the host sends is
// unwrapped from its N<n> … *<checksum> framing, checked by the policy with the admin role,
// and sent with the controller's SendAcked (whose filter checks it again). The host gets "ok"
// only once the firmware has acknowledged the line, so the firmware's own flow control paces
// it (an M109 holds it until the hotend is hot, as on a direct link); "echo:printgate refused
// …" plus "ok" when the policy refuses a line (the way Marlin answers a command it will not
// run, so hosts log it and go on); and the firmware's own replies (temperatures, echo:,
// errors) as the controller logs them, in order, before the "ok" that follows them.
//
//	host line ─▶ strip N/checksum ─▶ M110: ok │ M112: Emergency │ else policy (admin) ─▶ SendAcked ─▶ ok
//	controller "Recv: …" log events ─▶ host (no "ok" lines: the bridge acknowledges itself; an
//	"ok T:…" poll answer is relayed as its temperatures, the rest of an ok, such as
//	ADVANCED_OK's "N5026 P15 B3", never)

// bridge is the serial bridge's face: one host connection at a time on a printer's address. Like
// the HTTP faces it is built on the shared actions and keeps the receiver name s.
type bridge struct{ actions }

// BridgePort is the TCP port the daemon should give ServeBridge on each printer's tunnel
// address (ESP3D and many serial-over-TCP bridges use it too).
const BridgePort = 8888

// maxBridgeLine caps one line from the host.
const maxBridgeLine = 4096

// ServeBridge serves the raw serial bridge of the named printer on l until Close. Only admin
// peers may use it (identity from the connection's remote address), one client at a time.
// It returns nil after Close.
func (s *Server) ServeBridge(name string, l net.Listener) error {
	p, ok := s.printers[name]
	if !ok {
		l.Close()
		return fmt.Errorf("printerd: serve bridge %q: no such printer", name)
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		l.Close()
		return fmt.Errorf("printerd: serve bridge: %w", net.ErrClosed)
	}
	s.mu.listeners = append(s.mu.listeners, l)
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("printerd: bridge %s: accept: %w", name, err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			bridge{actions{s}}.bridgeConn(p, c)
		}()
	}
}

// ackSender is a Printer that can wait for the firmware's ok (*marlin.Controller does).
// Without it the bridge answers "ok" once a line is queued.
type ackSender interface {
	SendAcked(ctx context.Context, line string) (string, error)
}

// lockedWriter serializes writes from the line loop and the reply relay.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) line(s string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := io.WriteString(w.w, s+"\n")
	return err
}

func (s bridge) bridgeConn(p *printer, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	w := &lockedWriter{w: c}
	remote := addrOf(c.RemoteAddr())
	caller, ok := s.cfg.Identity.WhoIs(remote)
	if !ok || !caller.Role.Includes(enroll.Admin) {
		w.line("printgate: the serial bridge is for admin devices only")
		return
	}
	p.bridge.Lock()
	if p.bridge.busy {
		p.bridge.Unlock()
		w.line("printgate: bridge busy: another client is connected to " + p.name)
		return
	}
	p.bridge.busy = true
	p.bridge.Unlock()
	defer func() {
		p.bridge.Lock()
		p.bridge.busy = false
		p.bridge.Unlock()
	}()
	q := &request{caller: caller, role: enroll.Admin, p: p, remote: remote}
	// The session is the action: its intent is on disk before the first line reaches the
	// printer (accepted lines are not recorded one by one). Without it only the emergency
	// stops go through.
	stopsOnly := false
	if in, err := s.begin(q, "bridge.open", nil); err != nil {
		stopsOnly = true
		w.line("printgate: the audit log cannot be written on the gateway's disk (is it full?): only M112, M108 and M410 are accepted")
	} else {
		s.end(in, nil, nil)
	}
	defer s.record(q, "bridge.close", nil, nil)
	s.logf("printerd: bridge %s: %s connected", p.name, caller.Name)

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	events, unsub := p.Printer.Subscribe()
	defer unsub()
	// The relay writes the firmware's lines; a flush request makes it write every event
	// already published first, so that they reach the host before the ok of the line
	// they answered (the controller publishes a reply before it acks the line).
	flushes := make(chan chan struct{})
	var relay sync.WaitGroup
	relay.Add(1)
	go func() {
		defer relay.Done()
		relayOne := func(e marlin.Event) bool {
			if text, ok := relayText(e); ok && w.line(text) != nil {
				cancel()
				return false
			}
			return true
		}
		for {
			select {
			case <-ctx.Done():
				return
			case done := <-flushes:
				for more := true; more; {
					select {
					case e, ok := <-events:
						if !ok || !relayOne(e) {
							close(done)
							return
						}
					default:
						more = false
					}
				}
				close(done)
			case e, ok := <-events:
				if !ok || !relayOne(e) {
					return
				}
			}
		}
	}()
	flush := func() {
		done := make(chan struct{})
		select {
		case flushes <- done:
			<-done
		case <-ctx.Done():
		}
	}
	defer relay.Wait()
	defer cancel()

	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 512), maxBridgeLine)
	for sc.Scan() {
		if !s.stillPeer(q, enroll.Admin) {
			w.line("printgate: this device is no longer an admin of this gateway")
			return
		}
		var replies []string
		if stopsOnly && !isStop(unframedCmd(sc.Text())) {
			replies = []string{"echo:printgate refused: no audit record can be written; only M112, M108 and M410 are accepted", "ok"}
		} else {
			replies = s.bridgeLine(ctx, q, sc.Text())
		}
		flush()
		for _, reply := range replies {
			if w.line(reply) != nil {
				return
			}
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		w.line("Error:line too long")
	}
}

// relayText is what the host sees of a controller event: the firmware's lines, except the
// oks, which the bridge answers itself. An "ok T:..." (the controller's temperature poll)
// keeps its report; the rest of any other ok (ADVANCED_OK's "N5026 P15 B3") is dropped.
func relayText(e marlin.Event) (string, bool) {
	if e.Kind != "log" {
		return "", false
	}
	text, ok := strings.CutPrefix(e.Line, "Recv: ")
	if !ok {
		return "", false
	}
	if r := marlin.ParseReply(text); r.Kind == marlin.ReplyOK {
		if r.Temps == nil {
			return "", false
		}
		return strings.TrimSpace(strings.TrimSpace(text)[2:]), true
	}
	return text, true
}

// unframe removes a host's "N<n> " prefix and "*<checksum>" suffix. ok is false when the
// checksum does not match; n is the line number (-1 when none).
func unframe(line string) (cmd string, n int64, ok bool) {
	line = strings.TrimSpace(line)
	n = -1
	if len(line) > 1 && (line[0] == 'N' || line[0] == 'n') && line[1] >= '0' && line[1] <= '9' {
		if star := strings.LastIndexByte(line, '*'); star >= 0 {
			want, err := strconv.Atoi(strings.TrimSpace(line[star+1:]))
			if err != nil || want != int(gcode.Checksum(line[:star])) {
				i := 1
				for i < len(line) && line[i] >= '0' && line[i] <= '9' {
					i++
				}
				n, _ = strconv.ParseInt(line[1:i], 10, 64)
				return "", n, false
			}
			line = line[:star]
		}
		i := 1
		for i < len(line) && line[i] >= '0' && line[i] <= '9' {
			i++
		}
		n, _ = strconv.ParseInt(line[1:i], 10, 64)
		line = strings.TrimSpace(line[i:])
	}
	return line, n, true
}

// unframedCmd is a host line without its line number and checksum ("" when the checksum is
// wrong).
func unframedCmd(line string) string {
	cmd, _, _ := unframe(line)
	return cmd
}

// bridgeLine handles one host line and returns the replies.
func (s bridge) bridgeLine(ctx context.Context, q *request, raw string) []string {
	cmd, n, ok := unframe(raw)
	if !ok {
		return []string{"Error:checksum mismatch, Last Line: " + strconv.FormatInt(n-1, 10), "Resend: " + strconv.FormatInt(n, 10), "ok"}
	}
	// One command per line, before any special case: "M112 M997" or "M112\x00" is refused
	// here, as everywhere, rather than taken for an emergency stop.
	parsed, perr := policy.Parse(cmd)
	cmd = strings.TrimSpace(gcode.StripComment(cmd))
	if perr != nil {
		s.refused(q, cmd, perr)
		return []string{"echo:printgate refused: " + oneLine(perr.Error()), "ok"}
	}
	if parsed.Word == "" {
		return []string{"ok"}
	}
	p := q.p
	switch parsed.Word {
	case "M110":
		return []string{"ok"} // the gateway numbers lines itself
	case "M112":
		if err := s.emergency(q); err != nil {
			return []string{"Error:" + err.Error(), "ok"}
		}
		return []string{"ok"}
	}
	l, err := p.Policy.CheckLine(policy.Admin, cmd, p.Printer.Status())
	ack := "ok"
	if err == nil {
		if as, paced := p.Printer.(ackSender); paced {
			var reply string
			reply, err = as.SendAcked(ctx, l.Raw)
			if r := marlin.ParseReply(reply); err == nil && r.Kind == marlin.ReplyOK && r.Temps != nil {
				ack = strings.TrimSpace(reply) // M105: the host reads its temperatures here
			}
		} else {
			err = p.Printer.Send(ctx, l.Raw)
		}
	}
	if err != nil {
		if errors.Is(err, policy.ErrRefused) {
			s.refused(q, cmd, err)
			return []string{"echo:printgate refused: " + oneLine(err.Error()), "ok"}
		}
		return []string{"Error:printgate: " + oneLine(err.Error()), "ok"}
	}
	// Accepted lines are not audited one by one: a host streams whole prints through here.
	// The session (bridge.open/close) and every refusal are.
	return []string{ack}
}

func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }
