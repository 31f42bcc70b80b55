package printerd

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlin"
)

// has fails unless every dotted key path exists in m (what the reference says clients index).
func has(t *testing.T, what string, m map[string]any, paths ...string) {
	t.Helper()
	for _, p := range paths {
		var cur any = m
		for _, k := range strings.Split(p, ".") {
			mm, ok := cur.(map[string]any)
			if !ok {
				t.Errorf("%s: %s: %v is not an object", what, p, cur)
				break
			}
			if cur, ok = mm[k]; !ok {
				t.Errorf("%s: key %q missing (want %s)", what, k, p)
				break
			}
		}
	}
}

func TestOctoPrintShapes(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		pc := c.Printers["mk3"]
		pc.Webcam = Webcam{Stream: "http://127.0.0.1:8080/?action=stream", Snapshot: "http://127.0.0.1:8080/?action=snapshot"}
		c.Printers["mk3"] = pc
	})
	get := func(target string) map[string]any {
		t.Helper()
		w := h.do(req{method: "GET", target: target, from: viewerAddr, header: map[string]string{"X-Api-Key": "vera-key"}})
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s = %d (%s), want 200", target, w.Code, w.Body)
		}
		return decode(t, w)
	}

	v := get("/api/version")
	has(t, "version", v, "api", "server", "text")
	if text, _ := v["text"].(string); !strings.HasPrefix(text, "OctoPrint") {
		t.Errorf("version text %q must start with OctoPrint (PrusaSlicer validate_version_text)", text)
	}
	has(t, "server", get("/api/server"), "version", "safemode")
	has(t, "currentuser", get("/api/currentuser"), "name", "permissions", "groups")

	s := get("/api/settings")
	has(t, "settings", s, "feature.sdSupport", "webcam.streamUrl", "webcam.snapshotUrl", "webcam.rotate90", "webcam.flipH", "webcam.flipV", "webcam.webcamEnabled", "gcodeAnalysis.runAt", "plugins")
	if got := s["webcam"].(map[string]any)["streamUrl"]; got != "http://10.99.0.11/webcam/stream" {
		t.Errorf("settings webcam.streamUrl = %v, want the proxied URL", got)
	}

	p := get("/api/printerprofiles")
	has(t, "printerprofiles", p, "profiles._default.id", "profiles._default.name", "profiles._default.model", "profiles._default.current",
		"profiles._default.heatedBed", "profiles._default.axes.x.speed", "profiles._default.axes.e.speed", "profiles._default.volume.width")

	c := get("/api/connection")
	has(t, "connection", c, "current.state", "current.port", "current.baudrate", "current.printerProfile",
		"options.ports", "options.baudrates", "options.printerProfiles", "options.portPreference", "options.baudratePreference",
		"options.printerProfilePreference", "options.autoconnect")

	pr := get("/api/printer?history=true&limit=2")
	has(t, "printer", pr, "temperature.tool0.actual", "temperature.tool0.target", "temperature.tool0.offset", "temperature.bed.actual",
		"temperature.history", "sd.ready", "state.text")
	for _, f := range []string{"error", "closedOrError", "paused", "pausing", "printing", "cancelling", "ready", "operational", "resuming", "finishing", "sdReady"} {
		has(t, "printer flags (Cura indexes them)", pr, "state.flags."+f)
	}
	if hist := pr["temperature"].(map[string]any)["history"].([]any); len(hist) != 2 {
		t.Errorf("history with limit=2 has %d entries", len(hist))
	} else {
		has(t, "history entry", hist[0].(map[string]any), "time", "tool0.actual", "tool0.target", "bed.actual")
	}
	ex := get("/api/printer?exclude=temperature,sd")
	if _, ok := ex["temperature"]; ok {
		t.Errorf("exclude=temperature kept temperature")
	}
	has(t, "tool", get("/api/printer/tool?history=true&limit=1"), "tool0.actual", "history")
	has(t, "bed", get("/api/printer/bed"), "bed.actual", "bed.target")

	j := get("/api/job")
	has(t, "job", j, "job.file.name", "job.file.path", "job.file.origin", "job.estimatedPrintTime", "job.lastPrintTime", "job.filament",
		"progress.completion", "progress.filepos", "progress.printTime", "progress.printTimeLeft", "progress.printTimeLeftOrigin", "state")
	if j["state"] != "Operational" {
		t.Errorf("job state = %v, want Operational", j["state"])
	}

	w := h.do(req{method: "POST", target: "/api/login", from: viewerAddr, body: `{"passive":true}`, header: map[string]string{"X-Api-Key": "vera-key"}})
	login := decode(t, w)
	has(t, "login", login, "name", "session", "active", "admin", "groups", "permissions", "needs.role", "needs.group")
	if login["name"] == "_api" {
		t.Errorf("login name _api: FDM Monster refuses it")
	}
	if g, ok := login["needs"].(map[string]any)["group"].([]any); !ok || len(g) == 0 || g[0] == "guests" {
		t.Errorf("login needs.group = %v, want a non-guest array", login["needs"])
	}

	// 409 when the printer is not operational.
	h.pr.setState(marlin.Disconnected)
	for _, target := range []string{"/api/printer", "/api/printer/tool", "/api/printer/bed"} {
		w := h.do(req{method: "GET", target: target, from: viewerAddr})
		if w.Code != http.StatusConflict {
			t.Errorf("GET %s while disconnected = %d, want 409", target, w.Code)
		}
		if m := decode(t, w); m["error"] != "Printer is not operational" {
			t.Errorf("GET %s while disconnected: error %v", target, m["error"])
		}
	}
	if c := get("/api/connection"); c["current"].(map[string]any)["state"] != "Closed" {
		t.Errorf("connection state while disconnected = %v, want Closed", c["current"])
	}
}

// TestPrusaSlicerFlow follows PrusaSlicer's OctoPrint host: test (GET /api/version with the
// key), upload, then upload-and-print (form field print=true; it never calls /api/job).
func TestPrusaSlicerFlow(t *testing.T) {
	h := newHarness(t)
	key := map[string]string{"X-Api-Key": "oscar-key", "User-Agent": "PrusaSlicer/2.8.1"}

	w := h.do(req{method: "GET", target: "/api/version", from: operatorAddr, header: key, noCSRF: true})
	if w.Code != http.StatusOK {
		t.Fatalf("test: GET /api/version = %d", w.Code)
	}
	if _, ok := decode(t, w)["api"]; !ok {
		t.Fatalf("test: no api key in %s", w.Body)
	}

	upload := func(name, print string) *http.Response {
		r := uploadReq(operatorAddr, "/api/files/local", []formPart{
			{name: "print", value: print}, {name: "path", value: ""}, {name: "file", filename: name, value: goodGcode},
		}, true)
		r.header, r.noCSRF = key, true
		return h.do(r).Result()
	}
	resp := upload("benchy.gcode", "false")
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		t.Fatalf("upload = %d", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "http://10.99.0.11/api/files/local/benchy.gcode" {
		t.Errorf("upload Location = %q", loc)
	}
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	has(t, "upload", body, "files.local.name", "files.local.path", "files.local.origin", "files.local.refs.resource", "files.local.refs.download", "done", "effectiveSelect", "effectivePrint")
	if body["effectivePrint"] != false || h.pr.Status().State != marlin.Operational {
		t.Errorf("print=false started a print: %v", body)
	}

	resp = upload("benchy2.gcode", "true")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload and print = %d", resp.StatusCode)
	}
	json.NewDecoder(resp.Body).Decode(&body)
	if body["effectivePrint"] != true || body["effectiveSelect"] != true {
		t.Errorf("upload and print: %v", body)
	}
	if st := h.pr.Status(); st.State != marlin.Printing || st.Job.File != "benchy2.gcode" || string(h.pr.job) != goodGcode {
		t.Errorf("after upload and print: state %s job %+v", st.State, st.Job)
	}
	// Uploading again while printing: stored, but print is silently ignored (OctoPrint).
	resp = upload("benchy3.gcode", "true")
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusCreated || body["effectivePrint"] != false {
		t.Errorf("upload and print while busy = %d %v, want 201 and effectivePrint false", resp.StatusCode, body)
	}
	// Overwriting the file being printed is refused.
	if resp := upload("benchy2.gcode", "false"); resp.StatusCode != http.StatusConflict {
		t.Errorf("overwrite of the printing file = %d, want 409", resp.StatusCode)
	}
}

// TestCuraFlow follows Cura's OctoPrint plugin: app-keys probe, request, poll until an admin
// approves on the gateway's UI API, then settings (the key test), upload, select-and-print via
// the Location, and polling job and printer.
func TestCuraFlow(t *testing.T) {
	h := newHarness(t)
	ua := map[string]string{"User-Agent": "Cura/5.7"}
	if w := h.do(req{method: "GET", target: "/plugin/appkeys/probe", from: operatorAddr, header: ua}); w.Code != http.StatusNoContent {
		t.Fatalf("probe = %d, want 204", w.Code)
	}
	// Cura asks without any key (it has none yet).
	w := h.do(req{method: "POST", target: "/plugin/appkeys/request", from: operatorAddr, body: `{"app":"Cura"}`, header: ua, noCSRF: true})
	if w.Code != http.StatusCreated {
		t.Fatalf("request = %d (%s), want 201", w.Code, w.Body)
	}
	m := decode(t, w)
	token, _ := m["app_token"].(string)
	loc := w.Header().Get("Location")
	if m["auth_dialog"] != "http://10.99.0.1/#/devices" {
		t.Errorf("auth_dialog = %v, want the web UI's devices page (Cura opens it)", m["auth_dialog"])
	}
	if token == "" || loc != "http://10.99.0.11/plugin/appkeys/request/"+token {
		t.Fatalf("request: token %q Location %q", token, loc)
	}
	poll := func(from string) (int, map[string]any) {
		u, _ := url.Parse(loc)
		addr := operatorAddr
		if from == "viewer" {
			addr = viewerAddr
		}
		w := h.do(req{method: "GET", target: u.Path, from: addr, header: ua})
		var m map[string]any
		json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, m
	}
	if code, m := poll("operator"); code != http.StatusAccepted {
		t.Fatalf("poll before decision = %d %v, want 202", code, m)
	}
	if code, _ := poll("viewer"); code != http.StatusNotFound {
		t.Errorf("another peer polling the token = %d, want 404", code)
	}
	// The admin sees the request on the gateway and approves it.
	w = h.do(req{method: "GET", target: "/api/v1/appkeys", from: adminAddr, to: gwAddr})
	if !strings.Contains(w.Body.String(), token) || !strings.Contains(w.Body.String(), `"peer":"oscar"`) {
		t.Fatalf("pending app keys = %s", w.Body)
	}
	// Asking for more than the device has is refused.
	w = h.do(req{method: "POST", target: "/api/v1/appkeys/" + token, from: adminAddr, to: gwAddr, body: `{"decision":true,"role":"admin"}`})
	if w.Code != http.StatusBadRequest {
		t.Errorf("approve with a wider role = %d, want 400", w.Code)
	}
	w = h.do(req{method: "POST", target: "/api/v1/appkeys/" + token, from: adminAddr, to: gwAddr, body: `{"decision":true}`})
	if w.Code != http.StatusNoContent {
		t.Fatalf("approve = %d (%s)", w.Code, w.Body)
	}
	code, m := poll("operator")
	apiKey, _ := m["api_key"].(string)
	if code != http.StatusOK || apiKey == "" {
		t.Fatalf("poll after approval = %d %v, want 200 with api_key", code, m)
	}
	if code, _ := poll("operator"); code != http.StatusNotFound {
		t.Errorf("poll after the key was handed out = %d, want 404", code)
	}
	key := map[string]string{"X-Api-Key": apiKey, "User-Agent": "Cura/5.7"}
	// The key works for its own peer only.
	if w := h.do(req{method: "GET", target: "/api/settings", from: operatorAddr, header: key}); w.Code != http.StatusOK {
		t.Fatalf("settings with the app key = %d", w.Code)
	}
	if w := h.do(req{method: "GET", target: "/api/settings", from: viewerAddr, header: key}); w.Code != http.StatusForbidden {
		t.Errorf("app key from another peer = %d, want 403", w.Code)
	}
	r := uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "cura.gcode", value: goodGcode}}, true)
	r.header, r.noCSRF = key, true
	w = h.do(r)
	if w.Code != http.StatusCreated {
		t.Fatalf("upload = %d (%s)", w.Code, w.Body)
	}
	// Cura splits Location on "api/" and posts select there.
	loc = w.Header().Get("Location")
	_, rest, ok := strings.Cut(loc, "api/")
	if !ok {
		t.Fatalf("Location %q has no api/", loc)
	}
	w = h.do(req{method: "POST", target: "/api/" + rest, from: operatorAddr, body: `{"command":"select","print":true}`, header: key, noCSRF: true})
	if w.Code != http.StatusNoContent {
		t.Fatalf("select and print = %d (%s)", w.Code, w.Body)
	}
	h.pr.progress(int64(len(goodGcode)/2), false)
	w = h.do(req{method: "GET", target: "/api/job", from: operatorAddr, header: key})
	j := decode(t, w)
	if j["state"] != "Printing" || j["job"].(map[string]any)["file"].(map[string]any)["name"] != "cura.gcode" {
		t.Errorf("job while printing = %v", j)
	}
	prog := j["progress"].(map[string]any)
	if c, _ := prog["completion"].(float64); c < 40 || c > 60 {
		t.Errorf("completion = %v, want about 50", prog["completion"])
	}
	if prog["printTimeLeft"] == nil || prog["printTime"] == nil {
		t.Errorf("progress = %v, want printTime and printTimeLeft", prog)
	}
	pr := decode(t, h.do(req{method: "GET", target: "/api/printer", from: operatorAddr, header: key}))
	if flags := pr["state"].(map[string]any)["flags"].(map[string]any); flags["printing"] != true || flags["ready"] != false {
		t.Errorf("flags while printing = %v", flags)
	}
	// Cura pauses with no action (toggle), then resumes the same way.
	for _, want := range []marlin.State{marlin.Paused, marlin.Printing} {
		w = h.do(req{method: "POST", target: "/api/job", from: operatorAddr, body: `{"command":"pause"}`, header: key, noCSRF: true})
		if w.Code != http.StatusNoContent || h.pr.Status().State != want {
			t.Errorf("pause toggle = %d, state %s, want %s", w.Code, h.pr.Status().State, want)
		}
	}
	h.pr.progress(int64(len(goodGcode)), true)
	j = decode(t, h.do(req{method: "GET", target: "/api/job", from: operatorAddr, header: key}))
	if j["state"] != "Operational" || j["progress"].(map[string]any)["completion"] != 100.0 {
		t.Errorf("job after done = %v", j)
	}
}

func TestAppKeyDenied(t *testing.T) {
	h := newHarness(t)
	w := h.do(req{method: "POST", target: "/plugin/appkeys/request", from: viewerAddr, body: `{"app":"OctoPod"}`})
	token := decode(t, w)["app_token"].(string)
	w = h.do(req{method: "POST", target: "/api/v1/appkeys/" + token, from: adminAddr, to: gwAddr, body: `{"decision":false}`})
	if w.Code != http.StatusNoContent {
		t.Fatalf("deny = %d", w.Code)
	}
	if w := h.do(req{method: "GET", target: "/plugin/appkeys/request/" + token, from: viewerAddr}); w.Code != http.StatusNotFound {
		t.Errorf("poll after deny = %d, want 404", w.Code)
	}
	// Rate limit: 3 per minute per peer.
	var last int
	for range 4 {
		last = h.do(req{method: "POST", target: "/plugin/appkeys/request", from: viewerAddr, body: `{"app":"x"}`}).Code
	}
	if last != http.StatusTooManyRequests {
		t.Errorf("fourth request in a minute = %d, want 429", last)
	}
}

func TestJobCommands(t *testing.T) {
	h := newHarness(t)
	post := func(body string) int {
		return h.do(req{method: "POST", target: "/api/job", from: operatorAddr, body: body}).Code
	}
	if c := post(`{"command":"start"}`); c != http.StatusConflict {
		t.Errorf("start with nothing selected = %d, want 409", c)
	}
	if c := post(`{"command":"cancel"}`); c != http.StatusConflict {
		t.Errorf("cancel without a job = %d, want 409", c)
	}
	if c := post(`{"command":"pause","action":"pause"}`); c != http.StatusConflict {
		t.Errorf("pause without a job = %d, want 409", c)
	}
	if c := post(`{"command":"pause","action":"sideways"}`); c != http.StatusBadRequest {
		t.Errorf("bad pause action = %d, want 400", c)
	}
	if c := post(`{"command":"restart"}`); c != http.StatusConflict {
		t.Errorf("restart when not paused = %d, want 409", c)
	}
	if w := h.do(uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "select", value: "true"}, {name: "file", filename: "a.gcode", value: goodGcode}}, true)); w.Code != http.StatusCreated {
		t.Fatalf("upload = %d", w.Code)
	}
	if c := post(`{"command":"start"}`); c != http.StatusNoContent || h.pr.Status().State != marlin.Printing {
		t.Fatalf("start selected = %d, state %s", c, h.pr.Status().State)
	}
	if c := post(`{"command":"start"}`); c != http.StatusConflict {
		t.Errorf("start while printing = %d, want 409", c)
	}
	if c := post(`{"command":"pause","action":"resume"}`); c != http.StatusConflict {
		t.Errorf("resume while printing = %d, want 409", c)
	}
	if c := post(`{"command":"pause","action":"pause"}`); c != http.StatusNoContent || h.pr.Status().State != marlin.Paused {
		t.Errorf("pause = %d, state %s", c, h.pr.Status().State)
	}
	if c := post(`{"command":"restart"}`); c != http.StatusNoContent || h.pr.Status().State != marlin.Printing {
		t.Errorf("restart when paused = %d, state %s", c, h.pr.Status().State)
	}
	if w := h.do(req{method: "DELETE", target: "/api/files/local/a.gcode", from: operatorAddr}); w.Code != http.StatusConflict {
		t.Errorf("delete the printing file = %d, want 409", w.Code)
	}
	if c := post(`{"command":"cancel"}`); c != http.StatusNoContent || h.pr.Status().State != marlin.Operational {
		t.Errorf("cancel = %d, state %s", c, h.pr.Status().State)
	}
	if w := h.do(req{method: "DELETE", target: "/api/files/local/a.gcode", from: operatorAddr}); w.Code != http.StatusNoContent {
		t.Errorf("delete after cancel = %d, want 204", w.Code)
	}
	// each written ahead: an intent, then its outcome
	want := []string{"upload", "upload", "start", "start", "pause", "pause", "cancel", "cancel", "start", "start", "cancel", "cancel", "delete", "delete"}
	got := h.audit.actions()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("audit actions = %v, want %v", got, want)
	}
}

// TestControlThroughPolicy: every G-code the API builds passes the policy with the caller's
// role; refusals are a 422 naming the rule, and nothing of a refused batch is sent.
func TestControlThroughPolicy(t *testing.T) {
	tests := []struct {
		name     string
		target   string
		body     string
		want     int
		rule     string
		wantSent []string
	}{
		{"tool target", "/api/printer/tool", `{"command":"target","targets":{"tool0":210}}`, 204, "", []string{"M104 S210"}},
		{"tool target too hot", "/api/printer/tool", `{"command":"target","targets":{"tool0":400}}`, 422, "max-temperature", nil},
		{"bad tool name", "/api/printer/tool", `{"command":"target","targets":{"tool0; M997":200}}`, 400, "", nil},
		{"bed target", "/api/printer/bed", `{"command":"target","target":60}`, 204, "", []string{"M140 S60"}},
		{"bed too hot", "/api/printer/bed", `{"command":"target","target":200}`, 422, "max-temperature", nil},
		{"cold extrude", "/api/printer/tool", `{"command":"extrude","amount":5}`, 422, "cold-extrusion", nil},
		{"jog inside", "/api/printer/printhead", `{"command":"jog","x":10,"y":-5}`, 204, "", []string{"G91", "G1 X10 Y-5", "G90"}},
		{"jog longer than the axis", "/api/printer/printhead", `{"command":"jog","x":500}`, 422, "outside-volume", []string{"G91", "G90"}},
		{"home", "/api/printer/printhead", `{"command":"home","axes":["x","y"]}`, 204, "", []string{"G28 X Y"}},
		{"home bad axis", "/api/printer/printhead", `{"command":"home","axes":["q"]}`, 400, "", nil},
		{"command batch ok", "/api/printer/command", `{"commands":["M106 S128","M105"]}`, 204, "", []string{"M106 S128", "M105"}},
		{"command batch refused first", "/api/printer/command", `{"commands":["M106 S128","M104 S400"]}`, 422, "max-temperature", nil},
		{"firmware flash", "/api/printer/command", `{"command":"M997"}`, 422, "firmware-flash", nil},
		{"eeprom", "/api/printer/command", `{"command":"M500"}`, 422, "eeprom", nil},
		{"pins", "/api/printer/command", `{"command":"M42 P13 S255"}`, 422, "pin-control", nil},
		{"endstops", "/api/printer/command", `{"command":"M211 S0"}`, 422, "endstop-override", nil},
		{"cold extrusion allow", "/api/printer/command", `{"command":"M302 P1"}`, 422, "cold-extrusion", nil},
		{"sd write", "/api/printer/command", `{"command":"M28 evil.gco"}`, 422, "sd-card", nil},
		{"baud", "/api/printer/command", `{"command":"M575 B9600"}`, 422, "baud-change", nil},
		{"autotune", "/api/printer/command", `{"command":"M303 S230"}`, 422, "role", nil},
		{"newline smuggling", "/api/printer/command", `{"command":"M105\nM997"}`, 422, "firmware-flash", nil},
		{"cura jog", "/api/printer/command", `{"commands":["G91","G0 X-10 F3000","G90"]}`, 204, "", []string{"G91", "G0 X-10 F3000", "G90"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			w := h.do(req{method: "POST", target: tt.target, from: operatorAddr, body: tt.body})
			if w.Code != tt.want {
				t.Fatalf("POST %s %s = %d (%s), want %d", tt.target, tt.body, w.Code, w.Body, tt.want)
			}
			if tt.rule != "" {
				if m := decode(t, w); m["rule"] != tt.rule || m["error"] == "" {
					t.Errorf("refusal body %s, want rule %q", w.Body, tt.rule)
				}
			}
			if got := h.pr.lines(); strings.Join(got, "|") != strings.Join(tt.wantSent, "|") {
				t.Errorf("sent %q, want %q", got, tt.wantSent)
			}
		})
	}
}

func TestViewerCannotControl(t *testing.T) {
	h := newHarness(t)
	w := h.do(req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: operatorAddr, to: gwAddr, body: `{"command":"M105"}`})
	if w.Code != http.StatusForbidden {
		t.Errorf("operator terminal = %d, want 403", w.Code)
	}
	w = h.do(req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: adminAddr, to: gwAddr, body: `{"command":"M997"}`})
	if w.Code != http.StatusUnprocessableEntity {
		t.Errorf("admin terminal M997 = %d, want 422", w.Code)
	}
	w = h.do(req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: adminAddr, to: gwAddr, body: `{"command":"M105\nM997"}`})
	if w.Code != http.StatusUnprocessableEntity {
		t.Errorf("admin terminal with a smuggled newline = %d %s, want 422", w.Code, w.Body)
	}
	if len(h.pr.lines()) != 0 {
		t.Errorf("sent %q", h.pr.lines())
	}
}

func TestConnection(t *testing.T) {
	h := newHarness(t)
	if w := h.do(req{method: "POST", target: "/api/connection", from: operatorAddr, body: `{"command":"disconnect"}`}); w.Code != http.StatusNoContent {
		t.Fatalf("disconnect = %d", w.Code)
	}
	if h.pr.Status().State != marlin.Disconnected {
		t.Fatalf("state after disconnect = %s", h.pr.Status().State)
	}
	if w := h.do(req{method: "POST", target: "/api/printer/command", from: operatorAddr, body: `{"command":"M105"}`}); w.Code != http.StatusConflict {
		t.Errorf("command while disconnected = %d, want 409", w.Code)
	}
	if w := h.do(req{method: "POST", target: "/api/connection", from: operatorAddr, body: `{"command":"connect","port":"/dev/ttyACM0","baudrate":115200}`}); w.Code != http.StatusNoContent {
		t.Fatalf("connect = %d", w.Code)
	}
	if w := h.do(req{method: "POST", target: "/api/connection", from: operatorAddr, body: `{"command":"explode"}`}); w.Code != http.StatusBadRequest {
		t.Errorf("bad command = %d, want 400", w.Code)
	}
}

// TestAppKeyExpiry: a request nobody polls for appKeyPollTimeout, or older than
// appKeyMaxAge, is gone (404), as OctoPrint expires unpolled requests.
func TestAppKeyExpiry(t *testing.T) {
	var now time.Time = time.Unix(1800000000, 0)
	h := newHarness(t, func(c *Config) { c.Now = func() time.Time { return now } })
	ask := func() string {
		w := h.do(req{method: "POST", target: "/plugin/appkeys/request", from: operatorAddr, body: `{"app":"Cura"}`})
		return decode(t, w)["app_token"].(string)
	}
	poll := func(tok string) int {
		return h.do(req{method: "GET", target: "/plugin/appkeys/request/" + tok, from: operatorAddr}).Code
	}
	tok := ask()
	now = now.Add(appKeyPollTimeout - time.Second)
	if c := poll(tok); c != http.StatusAccepted {
		t.Fatalf("poll within the timeout = %d", c)
	}
	now = now.Add(appKeyPollTimeout + time.Second)
	if c := poll(tok); c != http.StatusNotFound {
		t.Errorf("poll after the timeout = %d, want 404", c)
	}
	tok = ask()
	for range int(appKeyMaxAge/(appKeyPollTimeout/2)) + 1 {
		now = now.Add(appKeyPollTimeout / 2)
		poll(tok)
	}
	if c := poll(tok); c != http.StatusNotFound {
		t.Errorf("poll after the maximum age = %d, want 404", c)
	}
	// An expired request cannot be approved either.
	if w := h.do(req{method: "POST", target: "/api/v1/appkeys/" + tok, from: adminAddr, to: gwAddr, body: `{"decision":true}`}); w.Code != http.StatusNotFound {
		t.Errorf("approve an expired request = %d, want 404", w.Code)
	}
}
