package printerd

import (
	"context"
	"encoding/json"
	"time"

	"github.com/coder/websocket"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/marlin"
)

// This file is the live push: the native push at /api/v1/push on the gateway for the web UI,
// and what it shares with OctoPrint's SockJS socket on a printer's address (sockjs.go). Both
// follow the controller's Subscribe channel and coalesce changes into at most one status
// message per interval.
//
// coder/websocket refuses a handshake whose Origin is another host than the request's, so a
// page on another site cannot open either socket in a browser inside the tunnel.

// pushInterval is the shortest interval between status messages (OctoPrint: 500 ms).
const pushInterval = 500 * time.Millisecond

// stillPeer reports whether the peer of a long-lived connection is still enrolled with at
// least role need. Revocation closes the peer's connections in the netstack too; this check
// ends push sockets and bridge sessions within one push interval even if that failed.
func (s *Server) stillPeer(q *request, need enroll.Role) bool {
	c, ok := s.cfg.Identity.WhoIs(q.remote)
	return ok && c.Name == q.caller.Name && c.Role.Includes(need)
}

func wsWrite(ctx context.Context, c *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}

// nativeJob is a job as the web UI shows it.
type nativeJob struct {
	File      string  `json:"file"`
	Size      int64   `json:"size"`
	Pos       int64   `json:"pos"`
	Progress  float64 `json:"progress"` // percent
	Elapsed   float64 `json:"elapsed"`  // seconds
	Left      float64 `json:"left"`     // seconds; 0 unknown
	Estimate  float64 `json:"estimate"` // seconds; 0 unknown
	Done      bool    `json:"done"`
	Cancelled bool    `json:"cancelled"`
	Failed    string  `json:"failed,omitempty"`
}

// nativeStatus is a printer's status as the web UI shows it.
type nativeStatus struct {
	Name     string          `json:"name"`
	State    marlin.State    `json:"state"`
	Text     string          `json:"text"`
	Error    string          `json:"error,omitempty"`
	Firmware string          `json:"firmware,omitempty"`
	Temps    marlin.Temps    `json:"temps"`
	Job      *nativeJob      `json:"job"`
	Selected string          `json:"selected"`
	Webcam   bool            `json:"webcam"`
	Snapshot bool            `json:"snapshot"`
	Limits   json.RawMessage `json:"limits,omitempty"`
	// Address and Address6 are the printer's tunnel addresses; empty: not configured.
	Address  string `json:"address,omitempty"`
	Address6 string `json:"address6,omitempty"`
}

func (p *printer) nativeStatus(st marlin.Status) nativeStatus {
	p.mu.Lock()
	sel := p.mu.selected
	p.mu.Unlock()
	ns := nativeStatus{
		Name: p.name, State: st.State, Text: octoStateText(st.State), Error: st.Error,
		Firmware: st.Firmware, Temps: st.Temps, Selected: sel,
		Webcam: p.Webcam.Stream != "", Snapshot: p.Webcam.Snapshot != "",
	}
	for _, a := range p.Addrs {
		if a.Is4() && ns.Address == "" {
			ns.Address = a.String()
		} else if a.Is6() && ns.Address6 == "" {
			ns.Address6 = a.String()
		}
	}
	if ns.Temps.Tools == nil {
		ns.Temps.Tools = []marlin.Temp{}
	}
	if j := st.Job; j != nil {
		nj := &nativeJob{File: j.File, Size: j.Size, Pos: j.Pos, Elapsed: j.Elapsed.Seconds(),
			Left: j.Left.Seconds(), Estimate: j.Estimate.Seconds(), Done: j.Done, Cancelled: j.Cancelled, Failed: j.Failed}
		if j.Size > 0 {
			nj.Progress = round2(min(100, 100*float64(j.Pos)/float64(j.Size)))
		}
		if j.Done {
			nj.Progress = 100
		}
		ns.Job = nj
	}
	if b, err := json.Marshal(p.Policy.Limits()); err == nil {
		ns.Limits = b
	}
	return ns
}

// nPush is the web UI's live channel: {"type":"status","printer":…,"status":…} at most every
// pushInterval per printer while something changes, and, for admins (the terminal),
// {"type":"log","printer":…,"line":…}.
func (s native) nPush(q *request) error {
	c, err := websocket.Accept(q.w, q.r, nil)
	if err != nil {
		return nil
	}
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(q.r.Context(), cancel)
	defer stop()
	ctx = c.CloseRead(ctx)

	type tagged struct {
		name string
		e    marlin.Event
	}
	merged := make(chan tagged, 64)
	for _, name := range s.names {
		p := s.printers[name]
		events, unsub := p.Printer.Subscribe()
		defer unsub()
		go func() {
			for {
				select {
				case e, ok := <-events:
					if !ok {
						return
					}
					select {
					case merged <- tagged{name, e}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for _, name := range s.names {
		p := s.printers[name]
		if err := wsWrite(ctx, c, map[string]any{"type": "status", "printer": name, "status": p.nativeStatus(p.Printer.Status())}); err != nil {
			return nil
		}
	}
	admin := q.role.Includes(enroll.Admin)
	dirty := map[string]bool{}
	tick := time.NewTicker(pushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			c.Close(websocket.StatusGoingAway, "")
			return nil
		case t := <-merged:
			if t.e.Kind == "log" {
				if admin {
					if err := wsWrite(ctx, c, map[string]any{"type": "log", "printer": t.name, "line": t.e.Line}); err != nil {
						return nil
					}
				}
				continue
			}
			if t.e.Kind == "alarm" {
				if err := wsWrite(ctx, c, map[string]any{"type": "alarm", "printer": t.name, "line": t.e.Line}); err != nil {
					return nil
				}
			}
			dirty[t.name] = true
		case <-tick.C:
			if !s.stillPeer(q, enroll.Viewer) {
				c.Close(websocket.StatusPolicyViolation, "device revoked")
				return nil
			}
			for name := range dirty {
				p := s.printers[name]
				if err := wsWrite(ctx, c, map[string]any{"type": "status", "printer": name, "status": p.nativeStatus(p.Printer.Status())}); err != nil {
					return nil
				}
				delete(dirty, name)
			}
		}
	}
}
