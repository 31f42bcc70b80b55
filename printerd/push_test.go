package printerd

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/printgate/printgate/printerd/marlin"
)

// wsClient reads JSON messages from a websocket.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

func dialWS(t *testing.T, addr, host, path string, header http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+path, &websocket.DialOptions{Host: host, HTTPHeader: header})
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { c.CloseNow() })
	return &wsClient{t, c}, resp, nil
}

// next returns the next message whose top-level key (or "type" value) is want.
func (w *wsClient) next(want string) map[string]any {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, b, err := w.c.Read(ctx)
		if err != nil {
			w.t.Fatalf("waiting for %q: %v", want, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			w.t.Fatalf("message %q: %v", b, err)
		}
		if m["type"] == want {
			return m
		}
		if v, ok := m[want]; ok && m["type"] == nil {
			if mm, ok := v.(map[string]any); ok {
				return mm
			}
			return m
		}
	}
}

func (w *wsClient) send(v any) {
	w.t.Helper()
	b, _ := json.Marshal(v)
	if err := w.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

func TestSockJSPush(t *testing.T) {
	h := newHarness(t)
	addr := h.serveAs(viewerAddr, printerAddr, func(l net.Listener) error { return h.s.ServePrinter("mk3", l) })
	ws, _, err := dialWS(t, addr, "10.99.0.11", "/sockjs/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	connected := ws.next("connected")
	has(t, "connected", connected, "version", "display_version", "plugin_hash", "config_hash", "safe_mode", "permissions")
	hist := ws.next("history")
	has(t, "history", hist, "state.text", "state.flags.operational", "job.file", "progress.completion", "temps", "logs", "offsets", "serverTime")
	if temps := hist["temps"].([]any); len(temps) != 5 {
		t.Errorf("history temps = %d entries, want the printer's 5", len(temps))
	}

	// A print starts and the temperature climbs: the client sees both.
	waitFor(t, "subscription", func() bool { return h.pr.subscribers() == 1 })
	h.pr.setState(marlin.Printing)
	ev := ws.next("event")
	if ev["type"] != "PrinterStateChanged" || ev["payload"].(map[string]any)["state_id"] != "PRINTING" {
		t.Errorf("event = %v, want PrinterStateChanged PRINTING", ev)
	}
	h.pr.setTemps(180.5, 210)
	h.pr.recv("T:180.5 /210.0 B:21.5 /0.0")
	for {
		cur := ws.next("current")
		has(t, "current", cur, "state.text", "state.flags", "job", "progress", "temps", "logs", "offsets", "messages", "currentZ")
		temps := cur["temps"].([]any)
		if len(temps) == 0 {
			continue
		}
		tool := temps[len(temps)-1].(map[string]any)["tool0"].(map[string]any)
		if cur["state"].(map[string]any)["text"] != "Printing" || tool["actual"] != 180.5 || tool["target"] != 210.0 {
			t.Fatalf("current = %v", cur)
		}
		if logs := cur["logs"].([]any); len(logs) == 0 || !strings.Contains(logs[len(logs)-1].(string), "T:180.5") {
			// Logs may arrive in the next message; wait for them.
			cur = ws.next("current")
			if logs := cur["logs"].([]any); len(logs) == 0 {
				t.Errorf("no logs in current: %v", cur)
			}
		}
		break
	}

	// Auth message: a bad session gets reauthRequired, a session from passive login history.
	ws.send(map[string]any{"auth": "vera:nonsense"})
	if r := ws.next("reauthRequired"); r["reason"] == nil {
		t.Errorf("reauthRequired = %v", r)
	}
	w := h.do(req{method: "POST", target: "/api/login", from: viewerAddr, body: `{"passive":true}`})
	login := decode(t, w)
	ws.send(map[string]any{"auth": login["name"].(string) + ":" + login["session"].(string)})
	ws.next("history")

	h.s.Close()
	waitFor(t, "unsubscribe", func() bool { return h.pr.subscribers() == 0 })
}

func TestNativePush(t *testing.T) {
	h := newHarness(t)
	addr := h.serveAs(adminAddr, gwAddr, h.s.ServeGateway)
	ws, _, err := dialWS(t, addr, "10.99.0.1", "/api/v1/push", http.Header{"Origin": {"http://10.99.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	st := ws.next("status")
	if st["printer"] != "mk3" {
		t.Fatalf("status = %v", st)
	}
	has(t, "native status", st["status"].(map[string]any), "name", "state", "text", "temps.tools", "job", "selected", "webcam")
	waitFor(t, "subscription", func() bool { return h.pr.subscribers() == 1 })
	h.pr.recv("echo:busy: processing")
	if l := ws.next("log"); l["line"] != "Recv: echo:busy: processing" {
		t.Errorf("log = %v", l)
	}
	h.pr.setState(marlin.Paused)
	for {
		st := ws.next("status")
		if st["status"].(map[string]any)["state"] == "paused" {
			break
		}
	}
}

// TestPushOrigin: a page on another site cannot open the push sockets in a browser.
func TestPushOrigin(t *testing.T) {
	h := newHarness(t)
	gw := h.serveAs(adminAddr, gwAddr, h.s.ServeGateway)
	if _, resp, err := dialWS(t, gw, "10.99.0.1", "/api/v1/push", http.Header{"Origin": {"http://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin push dial: err %v, want a 403 refusal", err)
	}
	if _, _, err := dialWS(t, gw, "evil.example", "/api/v1/push", nil); err == nil {
		t.Errorf("push dial with a foreign Host succeeded")
	}
	stranger := newHarness(t)
	sa := stranger.serveAs(strangerAddr, printerAddr, func(l net.Listener) error { return stranger.s.ServePrinter("mk3", l) })
	if _, resp, err := dialWS(t, sa, "10.99.0.11", "/sockjs/websocket", nil); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("stranger sockjs dial: err %v, want 403", err)
	}
}

// TestRevokedPeerLosesLiveConnections: a push socket or bridge session of a device that is
// revoked ends within a push interval, even if the tunnel did not close it.
func TestRevokedPeerLosesLiveConnections(t *testing.T) {
	h := newHarness(t)
	gw := h.serveAs(adminAddr, gwAddr, h.s.ServeGateway)
	pa := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServePrinter("mk3", l) })
	br := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
	native, _, err := dialWS(t, gw, "10.99.0.1", "/api/v1/push", nil)
	if err != nil {
		t.Fatal(err)
	}
	native.next("status")
	sock, _, err := dialWS(t, pa, "10.99.0.11", "/sockjs/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	sock.next("history")
	b := dialBridge(t, br)
	b.send("M105")
	b.line()

	h.id.mu.Lock()
	delete(h.id.peers, adminAddr)
	h.id.mu.Unlock()

	for _, ws := range []*wsClient{native, sock} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for {
			if _, _, err := ws.c.Read(ctx); err != nil {
				if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
					t.Errorf("socket ended with %v, want a policy-violation close", err)
				}
				break
			}
		}
		cancel()
	}
	sent := len(h.pr.lines())
	b.send("G28")
	if got := b.line(); !strings.Contains(got, "no longer") {
		t.Errorf("bridge after revocation said %q", got)
	}
	if len(h.pr.lines()) != sent {
		t.Errorf("a revoked device's bridge line reached the printer: %q", h.pr.lines())
	}
}
