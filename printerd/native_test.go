package printerd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/audit"
)

func TestDevicesAPI(t *testing.T) {
	h := newHarness(t)
	w := h.do(req{method: "GET", target: "/api/v1/devices", from: adminAddr, to: gwAddr})
	m := decode(t, w)
	devs := m["devices"].([]any)
	if len(devs) != 2 {
		t.Fatalf("devices = %s", w.Body)
	}
	alice := devs[0].(map[string]any)
	has(t, "device", alice, "name", "role", "state", "address", "public_key", "last_handshake", "last_handshake_age_seconds", "rx_bytes", "tx_bytes", "clone")
	if age, _ := alice["last_handshake_age_seconds"].(float64); age < 29 || age > 120 {
		t.Errorf("alice handshake age = %v, want about 30 s", alice["last_handshake_age_seconds"])
	}
	oscar := devs[1].(map[string]any)
	if oscar["last_handshake_age_seconds"] != nil || oscar["clone"] != true {
		t.Errorf("oscar = %v, want no handshake (null) and the clone flag", oscar)
	}

	// Enroll: the secrets come back once, with a QR code.
	w = h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"phone2","role":"viewer"}`})
	if w.Code != http.StatusCreated {
		t.Fatalf("enroll = %d %s", w.Code, w.Body)
	}
	e := decode(t, w)
	has(t, "enrollment", e, "name", "role", "address", "config", "api_key", "qr_svg", "qr_data_url")
	if !strings.HasPrefix(e["qr_svg"].(string), "<svg") || !strings.HasPrefix(e["qr_data_url"].(string), "data:image/svg+xml;base64,") {
		t.Errorf("QR = %.60q", e["qr_svg"])
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("enrollment Cache-Control = %q, want no-store", w.Header().Get("Cache-Control"))
	}
	// The device list never shows a secret.
	w = h.do(req{method: "GET", target: "/api/v1/devices", from: adminAddr, to: gwAddr})
	if strings.Contains(w.Body.String(), "fresh-api-key") || strings.Contains(w.Body.String(), "PrivateKey") {
		t.Errorf("device list leaks a secret: %s", w.Body)
	}
	if w := h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"bad name"}`}); w.Code != http.StatusBadRequest {
		t.Errorf("enroll a bad name = %d, want 400", w.Code)
	}
	if w := h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"x","ttl":"forever"}`}); w.Code != http.StatusBadRequest {
		t.Errorf("enroll with a bad ttl = %d, want 400", w.Code)
	}
	if w := h.do(req{method: "DELETE", target: "/api/v1/devices/oscar", from: adminAddr, to: gwAddr}); w.Code != http.StatusNoContent {
		t.Errorf("revoke = %d %s", w.Code, w.Body)
	}
	if w := h.do(req{method: "DELETE", target: "/api/v1/devices/nobody", from: adminAddr, to: gwAddr}); w.Code != http.StatusNotFound {
		t.Errorf("revoke unknown = %d, want 404", w.Code)
	}
	if got := strings.Join(h.devices.revoked, ","); got != "oscar" {
		t.Errorf("revoked %q", got)
	}
	acts := strings.Join(h.audit.actions(), ",")
	if acts != "enroll,enroll,enroll,enroll,revoke,revoke,revoke,revoke" { // each an intent, then its outcome
		t.Errorf("audit = %s", acts)
	}
}

func TestAuditAPI(t *testing.T) {
	verified := audit.Head{Seq: 7, Hash: "abc"}
	var verifyErr error
	h := newHarness(t, func(c *Config) {
		c.VerifyAudit = func() (audit.Head, error) { return verified, verifyErr }
	})
	h.do(req{method: "POST", target: "/api/printer/command", from: operatorAddr, body: `{"command":"M997"}`})
	m := decode(t, h.do(req{method: "GET", target: "/api/v1/audit?n=10", from: adminAddr, to: gwAddr}))
	recs := m["records"].([]any)
	if len(recs) == 0 {
		t.Fatalf("no audit records")
	}
	r := recs[0].(map[string]any)
	for _, rec := range recs { // after the terminal command's intent
		if rec.(map[string]any)["action"] == "refusal" {
			r = rec.(map[string]any)
		}
	}
	if r["action"] != "refusal" || r["peer"] != "oscar" || r["role"] != "operator" || r["args"].(map[string]any)["rule"] != "firmware-flash" {
		t.Errorf("refusal record = %v", r)
	}
	v := decode(t, h.do(req{method: "GET", target: "/api/v1/audit/verify", from: adminAddr, to: gwAddr}))
	if v["ok"] != true || v["seq"] != 7.0 {
		t.Errorf("verify = %v", v)
	}
	verifyErr = errors.New("audit: record 3: hash mismatch")
	v = decode(t, h.do(req{method: "GET", target: "/api/v1/audit/verify", from: adminAddr, to: gwAddr}))
	if v["ok"] != false || !strings.Contains(v["error"].(string), "record 3") {
		t.Errorf("verify of a tampered log = %v", v)
	}
	if w := h.do(req{method: "GET", target: "/api/v1/audit?n=0", from: adminAddr, to: gwAddr}); w.Code != http.StatusBadRequest {
		t.Errorf("n=0 = %d", w.Code)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Metrics = func(w io.Writer) { fmt.Fprintln(w, "printgate_revocation_apply_seconds_count 3") }
	})
	h.do(req{method: "GET", target: "/api/version", from: viewerAddr})
	h.do(req{method: "GET", target: "/api/version", from: strangerAddr})
	h.do(req{method: "POST", target: "/api/printer/command", from: operatorAddr, body: `{"command":"M104 S400"}`})
	w := h.do(req{method: "GET", target: "/metrics", from: adminAddr, to: gwAddr})
	body := w.Body.String()
	if !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("metrics Content-Type %q", w.Header().Get("Content-Type"))
	}
	for _, want := range []string{
		`printgate_http_requests_total{route="GET /api/version",code="200"} 1`,
		`printgate_http_requests_total{route="GET /api/version",code="403"} 1`,
		`printgate_http_denied_total 1`,
		`printgate_policy_refusals_total{rule="max-temperature"} 1`,
		`printgate_printer_state{printer="mk3",state="operational"} 1`,
		`printgate_printer_temperature_celsius{printer="mk3",heater="tool0",kind="actual"} 22`,
		`printgate_revocation_apply_seconds_count 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestNativePrinterAPI(t *testing.T) {
	h := newHarness(t)
	gw := func(method, target, body string) (int, string) {
		w := h.do(req{method: method, target: target, from: operatorAddr, to: gwAddr, body: body})
		return w.Code, w.Body.String()
	}
	if c, b := gw("GET", "/api/v1/printers", ""); c != 200 || !strings.Contains(b, `"name":"mk3"`) {
		t.Errorf("printers = %d %s", c, b)
	}
	if c, _ := gw("GET", "/api/v1/printers/nope", ""); c != 404 {
		t.Errorf("unknown printer = %d", c)
	}
	if c, b := gw("GET", "/api/v1/printers/mk3/temps?limit=2", ""); c != 200 || strings.Count(b, `"time"`) != 2 {
		t.Errorf("temps = %d %s", c, b)
	}
	if c, b := gw("POST", "/api/v1/printers/mk3/temperature", `{"heater":"tool0","target":400}`); c != 422 || !strings.Contains(b, "max-temperature") {
		t.Errorf("hot = %d %s", c, b)
	}
	if c, _ := gw("POST", "/api/v1/printers/mk3/temperature", `{"heater":"bed","target":55}`); c != 204 {
		t.Errorf("bed = %d", c)
	}
	if c, _ := gw("POST", "/api/v1/printers/mk3/temperature", `{"heater":"tool0;M997","target":55}`); c != 400 {
		t.Errorf("bad heater = %d", c)
	}
	if c, b := gw("POST", "/api/v1/printers/mk3/jog", `{"x":1,"z":-0.5}`); c != 204 {
		t.Errorf("jog = %d %s", c, b)
	}
	if c, _ := gw("POST", "/api/v1/printers/mk3/home", `{"axes":["x"]}`); c != 204 {
		t.Errorf("home = %d", c)
	}
	if got, want := strings.Join(h.pr.lines(), "|"), "M140 S55|G91|G1 X1 Z-0.5|G90|G28 X"; got != want {
		t.Errorf("sent %q, want %q", got, want)
	}
	h.do(uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "n.gcode", value: goodGcode}}, true))
	if c, b := gw("GET", "/api/v1/printers/mk3/files", ""); c != 200 || !strings.Contains(b, `"path":"n.gcode"`) {
		t.Errorf("files = %d %s", c, b)
	}
	if c, b := gw("POST", "/api/v1/printers/mk3/print", `{"path":"n.gcode"}`); c != 204 {
		t.Errorf("print = %d %s", c, b)
	}
	for _, a := range []string{"pause", "resume", "cancel"} {
		if c, b := gw("POST", "/api/v1/printers/mk3/job", `{"action":"`+a+`"}`); c != 204 {
			t.Errorf("%s = %d %s", a, c, b)
		}
	}
	if c, _ := gw("POST", "/api/v1/printers/mk3/job", `{"action":"explode"}`); c != 400 {
		t.Errorf("bad action = %d", c)
	}
	if c, _ := gw("DELETE", "/api/v1/printers/mk3/files/n.gcode", ""); c != 204 {
		t.Errorf("delete = %d", c)
	}
	if c, _ := gw("POST", "/api/v1/printers/mk3/emergency", ""); c != 204 || h.pr.Status().State != "halted" {
		t.Errorf("emergency = %d, state %s", c, h.pr.Status().State)
	}
}

func TestUIAssets(t *testing.T) {
	h := newHarness(t)
	for _, tt := range []struct {
		path, ctype string
		code        int
	}{
		{"/", "text/html; charset=utf-8", 200},
		{"/ui/app.js", "text/javascript; charset=utf-8", 200},
		{"/ui/app.css", "text/css; charset=utf-8", 200},
		{"/ui/webui.go", "", 404},
		{"/ui/..%2fprinterd.go", "", 404},
		{"/ui/index.html", "text/html; charset=utf-8", 200},
	} {
		w := h.do(req{method: "GET", target: tt.path, from: viewerAddr, to: gwAddr})
		if w.Code != tt.code || tt.ctype != "" && w.Header().Get("Content-Type") != tt.ctype {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, w.Code, w.Header().Get("Content-Type"), tt.code, tt.ctype)
		}
	}
	if w := h.do(req{method: "GET", target: "/", from: viewerAddr}); w.Code != http.StatusFound || w.Header().Get("Location") != "http://10.99.0.1/#/printer/mk3" {
		t.Errorf("GET / on the printer address = %d %q, want a redirect to the UI", w.Code, w.Header().Get("Location"))
	}
	w := h.do(req{method: "GET", target: "/", from: viewerAddr, to: gwAddr})
	body := w.Body.String()
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") || strings.Contains(body, "http://") && !strings.Contains(body, "xmlns") {
		t.Errorf("index.html has inline script, inline style or an absolute URL")
	}
	for _, f := range []string{"/ui/app.js"} {
		js := h.do(req{method: "GET", target: f, from: viewerAddr, to: gwAddr}).Body.String()
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "https://", "http://"} {
			if strings.Contains(js, bad) {
				t.Errorf("%s contains %q", f, bad)
			}
		}
	}
}

// TestLifecycle: Close ends servers, push sockets and bridges without leaking goroutines;
// a second Close reports net.ErrClosed; serving after Close fails.
func TestLifecycle(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		h := newHarness(t)
		gw := h.serveAs(adminAddr, gwAddr, h.s.ServeGateway)
		br := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
		ws, _, err := dialWS(t, gw, "10.99.0.1", "/api/v1/push", nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.next("status")
		b := dialBridge(t, br)
		b.send("M105")
		b.line()
		if err := h.s.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		if err := h.s.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		if err := h.s.ServeGateway(ln); !errors.Is(err, net.ErrClosed) {
			t.Errorf("ServeGateway after Close = %v", err)
		}
		waitFor(t, "subscriptions end", func() bool { return h.pr.subscribers() == 0 })
		ws.c.CloseNow()
		b.c.Close()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
	if _, err := New(Config{}); err == nil {
		t.Errorf("New without Identity succeeded")
	}
	if _, err := New(Config{Identity: &fakeIdentity{}, Printers: map[string]PrinterConfig{"a b": {}}}); err == nil {
		t.Errorf("New with a bad printer name succeeded")
	}
}
