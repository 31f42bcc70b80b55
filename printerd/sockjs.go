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

// This file is OctoPrint's push: the SockJS raw websocket at /sockjs/websocket on a printer's
// address (messages connected, history, current, event, reauthRequired). push.go has what it
// shares with the native push.

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

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// octoCurrent is the payload of "current" and "history".
func (s octoprint) octoCurrent(p *printer, st marlin.Status, temps []map[string]any, logs []string) map[string]any {
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

// opSockJS serves OctoPrint's push socket for one printer.
func (s octoprint) opSockJS(q *request) error {
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
