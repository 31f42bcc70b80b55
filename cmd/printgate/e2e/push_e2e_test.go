package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// uiPushMsg is one message of OctoPrint's push socket, the parts the tests read.
type uiPushMsg struct {
	Connected *map[string]any `json:"connected"`
	History   *uiPushCurrent  `json:"history"`
	Current   *uiPushCurrent  `json:"current"`
	Event     *struct {
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
	} `json:"event"`
	ReauthRequired *map[string]any `json:"reauthRequired"`
}

type uiPushCurrent struct {
	State struct {
		Text  string          `json:"text"`
		Flags map[string]bool `json:"flags"`
	} `json:"state"`
	Progress struct {
		Completion *float64 `json:"completion"`
	} `json:"progress"`
	Temps []struct {
		Time  int64 `json:"time"`
		Tool0 *struct {
			Actual float64  `json:"actual"`
			Target *float64 `json:"target"`
		} `json:"tool0"`
		Bed *struct {
			Actual float64  `json:"actual"`
			Target *float64 `json:"target"`
		} `json:"bed"`
	} `json:"temps"`
	Logs []string `json:"logs"`
}

// uiWS dials a websocket from p's namespace, through its wg-quick interface.
func uiWS(t *testing.T, ctx context.Context, p *uiPeer, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: uiNSClient(p.ns)})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("websocket %s from %s: %v (HTTP %d)", url, p.name, err, code)
	}
	c.SetReadLimit(4 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// uiPushTest: a client on /sockjs/websocket (the operator's device, as FDM Monster and OctoPod
// connect) sees the connected and history messages, then, during a print it starts, the
// state changes (Printing, Paused, Operational after the cancel; events and current
// messages) and temperatures that change from what they were before the print.
func uiPushTest(t *testing.T, u *uiLab) {
	op := u.operator
	base := "http://" + u.pr
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := uiWS(t, ctx, op, "ws://"+u.pr+"/sockjs/websocket")

	msgs := make(chan uiPushMsg, 1024)
	readErr := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			var m uiPushMsg
			if err := json.Unmarshal(b, &m); err != nil {
				readErr <- fmt.Errorf("push message %q: %v", uiClip(b), err)
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	next := func(what string) uiPushMsg {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("push socket closed waiting for %s: %v", what, <-readErr)
			}
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("no push message for 30 s waiting for %s", what)
		}
		return uiPushMsg{}
	}
	if m := next("connected"); m.Connected == nil {
		t.Fatalf("first push message is not connected: %+v", m)
	}
	if m := next("history"); m.History == nil {
		t.Fatalf("second push message is not history: %+v", m)
	} else if m.History.State.Text == "" {
		t.Errorf("history has no state.text")
	}

	// A passive login gives a session; the auth message with it is accepted (a history
	// again), one naming another session gets reauthRequired.
	r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+op.key, "-H", "Content-Type: application/json", "--data-binary", `{"passive":true}`, base+"/api/login")
	login := r.json()
	name, _ := login["name"].(string)
	session, _ := login["session"].(string)
	if r.code != 200 || name == "" || session == "" {
		t.Fatalf("POST /api/login passive = %v, want 200 with name and session", r)
	}
	auth := func(s string) {
		b, _ := json.Marshal(map[string]string{"auth": s})
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatalf("push write auth: %v", err)
		}
	}
	auth(name + ":not-a-session")
	auth(name + ":" + session)

	// The last temperatures before the print, from the history message and any current.
	var before string
	sample := func(c *uiPushCurrent) (last string) {
		for _, tp := range c.Temps {
			if tp.Tool0 != nil && tp.Bed != nil && tp.Tool0.Target != nil && tp.Bed.Target != nil {
				last = fmt.Sprintf("tool0 %.1f/%.0f bed %.1f/%.0f", tp.Tool0.Actual, *tp.Tool0.Target, tp.Bed.Actual, *tp.Bed.Target)
			}
		}
		return last
	}

	// The job: many tiny moves after heating to 180/50. It is paused as soon as it starts,
	// watched while paused (temperatures are reported every 2 s of wall time, however fast
	// the simulator moves), then cancelled: the printer is idle again at the end. A warm
	// keep-alive connection makes the pause one round trip.
	hc := uiNSClient(op.ns)
	defer hc.CloseIdleConnections()
	jobReq := func(body string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/job", strings.NewReader(body))
		req.Header.Set("X-Api-Key", op.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if _, err := jobReq(`{"command":"nothing"}`); err != nil { // warms the connection; 400
		t.Fatalf("POST /api/job: %v", err)
	}

	// Before the print: the answers to the two auth messages, and a temperature sample.
	var reauth bool
	histories := 0
	settle := time.After(20 * time.Second)
	for !reauth || histories == 0 || before == "" {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("push socket closed: %v", <-readErr)
			}
			switch {
			case m.ReauthRequired != nil:
				reauth = true
			case m.History != nil:
				histories++
				if s := sample(m.History); s != "" {
					before = s
				}
			case m.Current != nil:
				if s := sample(m.Current); s != "" {
					before = s
				}
			}
		case <-settle:
			t.Fatalf("push before the print: reauthRequired %v, history messages after auth %d, temperature sample %q; want all three within 20 s", reauth, histories, before)
		}
	}
	f := uiLongGcode(t, t.TempDir(), "push.gcode", 20000)
	upload := make(chan uiResp, 1)
	go func() {
		r, err := uiCurl(op.ns, "-H", "X-Api-Key: "+op.key, "-F", "file=@"+f, "-F", "path=", "-F", "print=true", base+"/api/files/local")
		if err != nil {
			r.body = []byte(err.Error())
		}
		upload <- r
	}()

	var (
		events   []string
		states   = map[string]bool{}
		during   = map[string]bool{} // distinct temperature samples while the job is active
		phase    = "before"          // before → printing → paused → cancelled
		pausedAt time.Time
		endAt    <-chan time.Time
		start    = time.Now()
	)
	deadline := time.After(2 * time.Minute)
loop:
	for {
		var m uiPushMsg
		var ok bool
		select {
		case m, ok = <-msgs:
			if !ok {
				t.Fatalf("push socket closed during the print: %v", <-readErr)
			}
		case <-deadline:
			t.Fatalf("push: no end of the job within 2 minutes; phase %s, events %v, states %v", phase, events, uiKeys(states))
		case <-endAt:
			break loop
		}
		switch {
		case m.Event != nil:
			events = append(events, m.Event.Type)
			if s, _ := m.Event.Payload["state_string"].(string); s != "" {
				states[s] = true
			}
			switch m.Event.Type {
			case "PrintStarted":
				phase = "printing"
				code, err := jobReq(`{"command":"pause","action":"pause"}`)
				if err != nil || code != 204 {
					t.Fatalf("pause right after PrintStarted = %d %v, want 204 (a job of 20000 lines ended before the pause came: the simulator is too fast to watch a print)", code, err)
				}
			case "PrintPaused":
				phase, pausedAt = "paused", time.Now()
			case "PrintCancelled", "PrintDone", "PrintFailed":
				if m.Event.Type != "PrintCancelled" {
					t.Errorf("push event %s %v, want PrintCancelled after the cancel", m.Event.Type, m.Event.Payload)
				}
				phase = "cancelled"
				endAt = time.After(1500 * time.Millisecond) // the last current messages
			}
		case m.Current != nil:
			states[m.Current.State.Text] = true
			s := sample(m.Current)
			switch {
			case phase == "before" && s != "":
				before = s
			case phase == "printing" || phase == "paused":
				if s != "" {
					during[s] = true
				}
			}
		}
		// Watched long enough while paused: a sample that differs from before the print,
		// and at least 3 s of reports. Then cancel.
		if phase == "paused" && !pausedAt.IsZero() && time.Since(pausedAt) > 3*time.Second && uiChanged(before, during) {
			if code, err := jobReq(`{"command":"cancel"}`); err != nil || code != 204 {
				t.Fatalf("cancel = %d %v, want 204", code, err)
			}
			pausedAt = time.Time{}
		}
		if phase == "paused" && !pausedAt.IsZero() && time.Since(pausedAt) > 30*time.Second {
			t.Fatalf("push: temperatures did not change during the paused print for 30 s: before %q, during %v", before, uiKeys(during))
		}
	}
	r = <-upload
	uiCheckUpload(t, r, u.pr, "push.gcode", true)
	t.Logf("push: events %v; states %v; temperatures before the print %q, during it %v; %v in all",
		events, uiKeys(states), before, uiKeys(during), time.Since(start).Round(100*time.Millisecond))
	for _, want := range []string{"PrinterStateChanged", "PrintStarted", "PrintPaused", "PrintCancelled"} {
		if !uiContains(events, want) {
			t.Errorf("push events %v: no %s", events, want)
		}
	}
	if !states["Printing"] || !states["Paused"] || !states["Operational"] {
		t.Errorf("push states seen %v, want Printing, Paused and Operational", uiKeys(states))
	}
	if !uiChanged(before, during) {
		t.Errorf("push temperatures during the print %v never differ from before it (%q): the job sets M104 S180 and M140 S50", uiKeys(during), before)
	}
	c.Close(websocket.StatusNormalClosure, "")
	uiWaitIdle(t, u)
}

// uiChanged reports whether some sample in during differs from before.
func uiChanged(before string, during map[string]bool) bool {
	for s := range during {
		if s != before {
			return true
		}
	}
	return false
}

func uiKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func uiContains(s []string, v string) bool {
	for _, x := range s {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}
