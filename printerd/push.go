package printerd

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/marlin"
)

// This file is the live push: OctoPrint's SockJS raw websocket at /sockjs/websocket on a
// printer's address (messages connected, history, current, event, reauthRequired), and the
// native push at /api/v1/push on the gateway for the web UI. Both follow the controller's
// Subscribe channel and coalesce changes into at most one status message per interval.
//
// coder/websocket refuses a handshake whose Origin is another host than the request's, so a
// page on another site cannot open either socket in a browser inside the tunnel.

// pushInterval is the shortest interval between status messages (OctoPrint: 500 ms).
const pushInterval = 500 * time.Millisecond

// maxPushLogs caps the log lines carried by one message.
const maxPushLogs = 200

// octoEvents turns a state change into OctoPrint events.
func octoEvents(prev, cur marlin.Status) []map[string]any {
	if prev.State == cur.State {
		return nil
	}
	ev := func(typ string, payload map[string]any) map[string]any {
		return map[string]any{"type": typ, "payload": payload}
	}
	file := map[string]any{}
	if cur.Job != nil {
		file = map[string]any{"name": baseName(cur.Job.File), "path": cur.Job.File, "origin": "local", "size": cur.Job.Size}
	}
	out := []map[string]any{ev("PrinterStateChanged", map[string]any{"state_id": octoStateID(cur.State), "state_string": octoStateText(cur.State)})}
	switch {
	case prev.State == marlin.Disconnected || prev.State == marlin.Connecting:
		if operational(cur.State) {
			out = append(out, ev("Connected", map[string]any{"port": cur.Port, "baudrate": cur.Baud}))
		}
	case cur.State == marlin.Disconnected:
		out = append(out, ev("Disconnected", nil))
	}
	switch cur.State {
	case marlin.Printing:
		if prev.State == marlin.Paused {
			out = append(out, ev("PrintResumed", file))
		} else if prev.State == marlin.Operational {
			out = append(out, ev("PrintStarted", file))
		}
	case marlin.Paused:
		out = append(out, ev("PrintPaused", file))
	case marlin.Operational, marlin.Error, marlin.Halted, marlin.Disconnected:
		if jobActive(prev.State) && cur.Job != nil {
			switch {
			case cur.Job.Done:
				out = append(out, ev("PrintDone", file))
			case cur.Job.Cancelled:
				out = append(out, ev("PrintCancelled", file))
			default:
				f := map[string]any{"reason": cur.Job.Failed}
				for k, v := range file {
					f[k] = v
				}
				out = append(out, ev("PrintFailed", f))
			}
		}
	}
	return out
}

// stillPeer reports whether the peer of a long-lived connection is still enrolled with at
// least role need. Revocation closes the peer's connections in the netstack too; this check
// ends push sockets and bridge sessions within one push interval even if that failed.
func (s *Server) stillPeer(q *request, need enroll.Role) bool {
	c, ok := s.cfg.Identity.WhoIs(q.remote)
	return ok && c.Name == q.caller.Name && c.Role.Includes(need)
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// octoCurrent is the payload of "current" and "history".
func (s *Server) octoCurrent(p *printer, st marlin.Status, temps []map[string]any, logs []string) map[string]any {
	j := p.jobOf(st)
	if logs == nil {
		logs = []string{}
	}
	if temps == nil {
		temps = []map[string]any{}
	}
	return map[string]any{
		"state":      stateOf(st),
		"job":        j.Job,
		"progress":   j.Progress,
		"currentZ":   nil,
		"offsets":    map[string]any{},
		"temps":      temps,
		"logs":       logs,
		"messages":   []string{},
		"busyFiles":  []any{},
		"resends":    map[string]any{"count": 0, "transmitted": 0, "ratio": 0},
		"serverTime": float64(s.now().UnixMilli()) / 1000,
	}
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

// opSockJS serves OctoPrint's push socket for one printer.
func (s *Server) opSockJS(q *request) error {
	c, err := websocket.Accept(q.w, q.r, nil)
	if err != nil {
		return nil // Accept wrote the response
	}
	defer c.CloseNow()
	c.SetReadLimit(64 << 10)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(q.r.Context(), cancel)
	defer stop()

	p := q.p
	events, unsub := p.Printer.Subscribe()
	defer unsub()

	// Reader: auth, throttle and subscribe messages. Identity is the tunnel peer already; an
	// auth message naming another user or an unknown session gets reauthRequired.
	type clientMsg struct {
		Auth     *string         `json:"auth"`
		Throttle *int            `json:"throttle"`
		Sub      json.RawMessage `json:"subscribe"`
	}
	msgs := make(chan clientMsg, 4)
	go func() {
		defer cancel()
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m clientMsg
			if json.Unmarshal(b, &m) != nil {
				continue
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	perms := octoPermissions(q.role)
	permObjs := make([]map[string]any, len(perms))
	for i, n := range perms {
		permObjs[i] = map[string]any{"key": n, "name": n}
	}
	if err := wsWrite(ctx, c, map[string]any{"connected": map[string]any{
		"version": octoServerVersion, "display_version": octoServerVersion, "branch": "",
		"plugin_hash": "printgate", "config_hash": "printgate", "debug": false,
		"safe_mode": false, "online": false, "permissions": permObjs,
		"apikey": nil,
	}}); err != nil {
		return nil
	}
	// The status shown in history is also the base for events: the subscription is older
	// than this snapshot, so every later change arrives as an event against it, and none
	// falls between the two.
	sendHistory := func(st marlin.Status) error {
		var temps []map[string]any
		for _, t := range p.Printer.History() {
			temps = append(temps, historyEntry(t))
		}
		return wsWrite(ctx, c, map[string]any{"history": s.octoCurrent(p, st, temps, nil)})
	}
	prev := p.Printer.Status()
	if err := sendHistory(prev); err != nil {
		return nil
	}
	throttle := 1
	tick := time.NewTicker(pushInterval)
	defer tick.Stop()
	ticks := 0
	dirty := false
	var logs []string
	var temps []map[string]any
	for {
		select {
		case <-ctx.Done():
			c.Close(websocket.StatusGoingAway, "")
			return nil
		case m := <-msgs:
			if m.Throttle != nil && *m.Throttle >= 1 && *m.Throttle <= 100 {
				throttle = *m.Throttle
			}
			if m.Auth != nil {
				name, session, _ := strings.Cut(*m.Auth, ":")
				if name != q.caller.Name || !s.sessions.valid(name, session) {
					if err := wsWrite(ctx, c, map[string]any{"reauthRequired": map[string]any{"reason": "unauthorized"}}); err != nil {
						return nil
					}
					continue
				}
				if err := sendHistory(p.Printer.Status()); err != nil {
					return nil
				}
			}
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			dirty = true
			switch e.Kind {
			case "log":
				if len(logs) < maxPushLogs {
					logs = append(logs, e.Line)
				}
			case "temps":
				temps = append(temps, historyEntry(e.Status.Temps))
			}
			for _, ev := range octoEvents(prev, e.Status) {
				if err := wsWrite(ctx, c, map[string]any{"event": ev}); err != nil {
					return nil
				}
			}
			prev = e.Status
		case <-tick.C:
			if !s.stillPeer(q, enroll.Viewer) {
				c.Close(websocket.StatusPolicyViolation, "device revoked")
				return nil
			}
			ticks++
			if !dirty || ticks < throttle {
				continue
			}
			ticks, dirty = 0, false
			if err := wsWrite(ctx, c, map[string]any{"current": s.octoCurrent(p, p.Printer.Status(), temps, logs)}); err != nil {
				return nil
			}
			logs, temps = nil, nil
		}
	}
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
func (s *Server) nPush(q *request) error {
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
