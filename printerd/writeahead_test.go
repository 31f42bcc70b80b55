package printerd

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/marlin"
)

// fullAudit is an audit log on a full disk.
type fullAudit struct{ memAudit }

func (a *fullAudit) Append(context.Context, audit.Record) error { return syscall.ENOSPC }

// TestDevicesWriteAhead: enroll and revoke write their intent before they change the roster,
// and are refused with 507, changing nothing, when it cannot be written.
func TestDevicesWriteAhead(t *testing.T) {
	h := newHarness(t)
	w := h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"newphone","role":"viewer"}`})
	if w.Code != http.StatusCreated {
		t.Fatalf("enroll = %d (%s)", w.Code, w.Body)
	}
	w = h.do(req{method: "DELETE", target: "/api/v1/devices/newphone", from: adminAddr, to: gwAddr})
	if w.Code/100 != 2 {
		t.Fatalf("revoke = %d (%s)", w.Code, w.Body)
	}
	recs, _ := h.audit.Tail(10)
	var got []string
	for _, r := range recs {
		got = append(got, r.Action+":"+r.Result)
	}
	if want := "enroll:intent enroll:ok revoke:intent revoke:ok"; strings.Join(got, " ") != want {
		t.Errorf("audit = %q, want %q", got, want)
	}

	full := &fullAudit{}
	h = newHarness(t, func(c *Config) { c.Audit = full })
	before := len(h.devices.Peers())
	w = h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"newphone","role":"viewer"}`})
	if w.Code != http.StatusInsufficientStorage || !strings.Contains(w.Body.String(), "disk") {
		t.Errorf("enroll on a full disk = %d (%s), want 507 naming the disk", w.Code, w.Body)
	}
	if n := len(h.devices.Peers()); n != before {
		t.Errorf("enroll on a full disk changed the roster: %d devices, want %d", n, before)
	}
	w = h.do(req{method: "DELETE", target: "/api/v1/devices/oscar", from: adminAddr, to: gwAddr})
	if w.Code != http.StatusInsufficientStorage {
		t.Errorf("revoke on a full disk = %d (%s), want 507", w.Code, w.Body)
	}
	for _, p := range h.devices.Peers() {
		if p.Name == "oscar" && p.State != enroll.Active {
			t.Errorf("revoke on a full disk changed oscar to %s", p.State)
		}
	}
}

// switchAudit is an audit log whose disk can fill up mid-test; seen notes, for each record,
// how many lines the printer had been sent when it was appended.
type switchAudit struct {
	memAudit
	full atomic.Bool
	pr   *fakePrinter
	seen []int
}

func (a *switchAudit) Append(ctx context.Context, r audit.Record) error {
	if a.full.Load() {
		return syscall.ENOSPC
	}
	if a.pr != nil {
		n := len(a.pr.lines())
		a.mu.Lock()
		a.seen = append(a.seen, n)
		a.mu.Unlock()
	}
	return a.memAudit.Append(ctx, r)
}

// TestPrinterActionsWriteAhead: a printer action's intent is on record before the printer
// sees it, and its outcome after.
func TestPrinterActionsWriteAhead(t *testing.T) {
	sa := &switchAudit{}
	h := newHarness(t, func(c *Config) { c.Audit = sa })
	sa.pr = h.pr
	w := h.do(req{method: "POST", target: "/api/printer/command", from: adminAddr, body: `{"command":"M104 S190"}`})
	if w.Code != http.StatusNoContent {
		t.Fatalf("M104 S190 = %d (%s)", w.Code, w.Body)
	}
	recs, _ := sa.Tail(10)
	if len(recs) != 2 || recs[0].Result != audit.ResultIntent || recs[1].Result != "ok" || recs[0].Args[audit.ArgIntent] != recs[1].Args[audit.ArgIntent] {
		t.Fatalf("audit = %+v, want the intent and its outcome", recs)
	}
	if sa.seen[0] != 0 || sa.seen[1] != 1 {
		t.Errorf("the printer had %d lines when the intent was written and %d at the outcome, want 0 and 1", sa.seen[0], sa.seen[1])
	}
	if recs[0].Args["printer"] != "mk3" || recs[0].Peer != "alice" {
		t.Errorf("intent = %+v, want printer mk3 and peer alice", recs[0])
	}
}

// TestPrinterActionsFullDisk: with an audit log that cannot be written, every printer and
// file action is refused with 507 naming the disk and changes nothing, while the emergency
// stops still go through (and their unrecorded record is logged at the error level).
func TestPrinterActionsFullDisk(t *testing.T) {
	type check struct {
		name  string
		r     req
		state marlin.State // the printer's state before; "" Operational
	}
	up := func(from netip.Addr, target, name string) req {
		return uploadReq(from, target, []formPart{{name: "file", filename: name, value: goodGcode}}, true)
	}
	checks := []check{
		{name: "terminal", r: req{method: "POST", target: "/api/printer/command", from: adminAddr, body: `{"command":"M104 S190"}`}},
		{name: "native terminal", r: req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: adminAddr, to: gwAddr, body: `{"command":"M104 S190"}`}},
		{name: "native temperature", r: req{method: "POST", target: "/api/v1/printers/mk3/temperature", from: operatorAddr, to: gwAddr, body: `{"heater":"tool0","target":190}`}},
		{name: "bed", r: req{method: "POST", target: "/api/printer/bed", from: operatorAddr, body: `{"command":"target","target":60}`}},
		{name: "tool", r: req{method: "POST", target: "/api/printer/tool", from: operatorAddr, body: `{"command":"target","targets":{"tool0":190}}`}},
		{name: "extrude", r: req{method: "POST", target: "/api/printer/tool", from: operatorAddr, body: `{"command":"extrude","amount":5}`}},
		{name: "flowrate", r: req{method: "POST", target: "/api/printer/tool", from: operatorAddr, body: `{"command":"flowrate","factor":95}`}},
		{name: "jog", r: req{method: "POST", target: "/api/printer/printhead", from: operatorAddr, body: `{"command":"jog","x":10}`}},
		{name: "home", r: req{method: "POST", target: "/api/v1/printers/mk3/home", from: operatorAddr, to: gwAddr, body: `{"axes":["x"]}`}},
		{name: "feedrate", r: req{method: "POST", target: "/api/printer/printhead", from: operatorAddr, body: `{"command":"feedrate","factor":90}`}},
		{name: "disconnect", r: req{method: "POST", target: "/api/connection", from: operatorAddr, body: `{"command":"disconnect"}`}},
		{name: "connect", r: req{method: "POST", target: "/api/v1/printers/mk3/connection", from: operatorAddr, to: gwAddr, body: `{"action":"connect"}`}, state: marlin.Disconnected},
		{name: "upload", r: up(operatorAddr, "/api/files/local", "b.gcode")},
		{name: "native upload", r: toGateway(up(operatorAddr, "/api/v1/printers/mk3/files", "c.gcode"))},
		{name: "delete", r: req{method: "DELETE", target: "/api/files/local/a.gcode", from: operatorAddr}},
		{name: "native delete", r: req{method: "DELETE", target: "/api/v1/printers/mk3/files/a.gcode", from: operatorAddr, to: gwAddr}},
		{name: "print", r: req{method: "POST", target: "/api/v1/printers/mk3/print", from: operatorAddr, to: gwAddr, body: `{"path":"a.gcode"}`}},
		{name: "select and print", r: req{method: "POST", target: "/api/files/local/a.gcode", from: operatorAddr, body: `{"command":"select","print":true}`}},
		{name: "pause", r: req{method: "POST", target: "/api/job", from: operatorAddr, body: `{"command":"pause","action":"pause"}`}, state: marlin.Printing},
		{name: "cancel", r: req{method: "POST", target: "/api/job", from: operatorAddr, body: `{"command":"cancel"}`}, state: marlin.Printing},
		{name: "native resume", r: req{method: "POST", target: "/api/v1/printers/mk3/job", from: operatorAddr, to: gwAddr, body: `{"action":"resume"}`}, state: marlin.Paused},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			sa := &switchAudit{}
			h := newHarness(t, func(cfg *Config) { cfg.Audit = sa })
			if w := h.do(up(operatorAddr, "/api/files/local", "a.gcode")); w.Code != http.StatusCreated {
				t.Fatalf("upload a.gcode = %d (%s)", w.Code, w.Body)
			}
			if c.state != "" {
				h.pr.setState(c.state)
			}
			sa.full.Store(true)
			w := h.do(c.r)
			if w.Code != http.StatusInsufficientStorage || !strings.Contains(w.Body.String(), "disk") {
				t.Errorf("%s on a full disk = %d (%s), want 507 naming the disk", c.name, w.Code, w.Body)
			}
			if got := h.pr.lines(); len(got) > 0 {
				t.Errorf("%s on a full disk sent %q", c.name, got)
			}
			want := c.state
			if want == "" {
				want = marlin.Operational
			}
			if st := h.pr.Status().State; st != want {
				t.Errorf("%s on a full disk changed the state to %s", c.name, st)
			}
			list, _ := h.store.List("", true)
			if len(list) != 1 || list[0].Path != "a.gcode" {
				t.Errorf("%s on a full disk left the files %v, want a.gcode alone", c.name, list)
			}
		})
	}

	stops := []struct {
		name  string
		r     req
		sent  string
		code  int
		state marlin.State
	}{
		{"M112", req{method: "POST", target: "/api/printer/command", from: adminAddr, body: `{"command":"M112"}`}, "M112", http.StatusNoContent, marlin.Operational},
		{"viewer M108", req{method: "POST", target: "/api/printer/command", from: viewerAddr, body: `{"command":"M108"}`}, "M108", http.StatusNoContent, marlin.Operational},
		{"native M410", req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: adminAddr, to: gwAddr, body: `{"command":"M410"}`}, "M410", http.StatusNoContent, marlin.Operational},
		{"emergency endpoint", req{method: "POST", target: "/api/v1/printers/mk3/emergency", from: viewerAddr, to: gwAddr}, "M112", http.StatusNoContent, marlin.Halted},
		{"stop in a batch", req{method: "POST", target: "/api/printer/command", from: adminAddr, body: `{"commands":["M104 S200","M108","G28"]}`}, "M108", http.StatusInsufficientStorage, marlin.Operational},
	}
	for _, c := range stops {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			var errs []string
			sa := &switchAudit{}
			sa.full.Store(true)
			h := newHarness(t, func(cfg *Config) {
				cfg.Audit = sa
				cfg.Errorf = func(f string, a ...any) { mu.Lock(); errs = append(errs, fmt.Sprintf(f, a...)); mu.Unlock() }
			})
			if c.state == marlin.Halted {
				h.pr.setState(marlin.Printing)
			}
			w := h.do(c.r)
			if w.Code != c.code {
				t.Errorf("%s on a full disk = %d (%s), want %d", c.name, w.Code, w.Body, c.code)
			}
			if got := strings.Join(h.pr.lines(), ","); got != c.sent {
				t.Errorf("%s on a full disk sent %q, want %q", c.name, got, c.sent)
			}
			if st := h.pr.Status().State; st != c.state {
				t.Errorf("%s on a full disk: state %s, want %s", c.name, st, c.state)
			}
			mu.Lock()
			defer mu.Unlock()
			if log := strings.Join(errs, "\n"); !strings.Contains(log, "no space left") || !strings.Contains(log, "mk3") {
				t.Errorf("error log = %q, want the unrecorded stop with its printer and cause", log)
			}
		})
	}
}

func toGateway(r req) req { r.to = gwAddr; return r }

// TestBridgeFullDisk: a bridge opened while the audit log cannot be written says so and
// passes only the emergency stops.
func TestBridgeFullDisk(t *testing.T) {
	sa := &switchAudit{}
	sa.full.Store(true)
	h := newHarness(t, func(c *Config) { c.Audit = sa })
	addr := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
	b := dialBridge(t, addr)
	if got := b.line(); !strings.Contains(got, "audit log cannot be written") {
		t.Errorf("bridge greeting on a full disk = %q", got)
	}
	b.send(numbered(1, "M104 S200"))
	if got := b.line(); !strings.Contains(got, "refused") {
		t.Errorf("M104 on a full disk = %q, want a refusal", got)
	}
	b.line() // its ok
	b.send(numbered(2, "M108"))
	waitFor(t, "M108 sent", func() bool { return strings.Join(h.pr.lines(), ",") == "M108" })
}
