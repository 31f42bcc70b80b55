package printerd

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/marlin"
)

// TestHomeAssistantFlow follows Home Assistant's OctoPrint integration (config_flow.py,
// coordinator.py, camera.py) through its client library, pyoctoprintapi 0.1.14: the app-key
// flow, then discovery (the config entry's unique id), webcam, server info, system commands,
// the coordinator's job and printer polls, temperatures and pause/resume/cancel. Each step
// asserts what the library indexes (settings.py, printer.py, job.py, server.py): a missing
// key there is a KeyError or AttributeError that fails Home Assistant's setup.
func TestHomeAssistantFlow(t *testing.T) {
	cam := newFakeCamera(t)
	h := newHarness(t, func(c *Config) {
		pc := c.Printers["mk3"]
		pc.Webcam = Webcam{Stream: cam.srv.URL + "/stream", Snapshot: cam.srv.URL + "/snapshot"}
		c.Printers["mk3"] = pc
	})
	// pyoctoprintapi sends no X-Printgate header, and no key until it has one.
	call := func(method, target, body string, key string) (int, map[string]any, http.Header) {
		t.Helper()
		r := req{method: method, target: target, from: operatorAddr, body: body, noCSRF: true}
		if key != "" {
			r.header = map[string]string{"X-Api-Key": key}
		}
		w := h.do(r)
		var m map[string]any
		if w.Body.Len() > 0 && strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
				t.Fatalf("%s %s: body %q: %v", method, target, w.Body, err)
			}
		}
		return w.Code, m, w.Header()
	}

	// request_app_key: probe (204), request (201, token after the last '/' of Location), poll
	// until "api_key" is in the body.
	if code, _, _ := call("GET", "/plugin/appkeys/probe", "", ""); code != http.StatusNoContent {
		t.Fatalf("appkeys probe = %d, want 204 (else: the application keys plugin appears to be disabled)", code)
	}
	code, _, hdr := call("POST", "/plugin/appkeys/request", `{"app":"Home Assistant","user":"oscar"}`, "")
	if code != http.StatusCreated {
		t.Fatalf("appkeys request = %d, want 201", code)
	}
	loc := hdr.Get("Location")
	token := loc[len(regexp.MustCompile(`.*/`).FindString(loc)):]
	u, _ := url.Parse(loc)
	if code, m, _ := call("GET", u.Path, "", ""); code == http.StatusNotFound || m["api_key"] != nil {
		t.Fatalf("poll before the decision = %d %v, want no api_key and not 404", code, m)
	}
	if w := h.do(req{method: "POST", target: "/api/v1/appkeys/" + token, from: adminAddr, to: gwAddr, body: `{"decision":true}`}); w.Code != http.StatusNoContent {
		t.Fatalf("approve = %d (%s)", w.Code, w.Body)
	}
	_, m, _ := call("GET", u.Path, "", "")
	key, _ := m["api_key"].(string)
	if key == "" {
		t.Fatalf("poll after approval = %v, want api_key", m)
	}

	// _finish_config: get_discovery_info reads response["plugins"]["discovery"], then
	// discovery.upnp_uuid becomes the config entry's unique id.
	code, settings, _ := call("GET", "/api/settings", "", key)
	if code != http.StatusOK {
		t.Fatalf("settings = %d", code)
	}
	has(t, "settings (get_discovery_info)", settings, "plugins.discovery.upnpUuid")
	uuid, _ := settings["plugins"].(map[string]any)["discovery"].(map[string]any)["upnpUuid"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(uuid) {
		t.Errorf("upnpUuid = %q, want a UUID", uuid)
	}
	// Stable: another server for the same printer of the same gateway (a restart) gives the same.
	h2 := newHarness(t)
	w := h2.do(req{method: "GET", target: "/api/settings", from: operatorAddr})
	if got := decode(t, w)["plugins"].(map[string]any)["discovery"].(map[string]any)["upnpUuid"]; got != uuid {
		t.Errorf("upnpUuid after a restart = %v, want %s (Home Assistant would see a new device)", got, uuid)
	}

	// camera.py: get_webcam_info → WebcamSettings, every property indexed.
	has(t, "settings.webcam (WebcamSettings)", settings, "webcam.bitrate", "webcam.flipH", "webcam.flipV", "webcam.rotate90",
		"webcam.snapshotSslValidation", "webcam.snapshotUrl", "webcam.streamUrl", "webcam.webcamEnabled")
	webcam := settings["webcam"].(map[string]any)
	if webcam["webcamEnabled"] != true {
		t.Fatalf("webcamEnabled = %v, want true with a camera", webcam["webcamEnabled"])
	}
	// external_snapshot_url is the stream URL with action=snapshot in its query.
	su, _ := url.Parse(webcam["streamUrl"].(string))
	q := su.Query()
	q.Set("action", "snapshot")
	w = h.do(req{method: "GET", target: su.Path + "?" + q.Encode(), from: operatorAddr, header: map[string]string{"X-Api-Key": key}})
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "image/jpeg" {
		t.Errorf("still image from the stream URL with action=snapshot = %d %q, want one JPEG", w.Code, w.Header().Get("Content-Type"))
	}

	// get_server_info: version and safemode.
	if code, m, _ := call("GET", "/api/server", "", key); code != http.StatusOK {
		t.Errorf("server = %d", code)
	} else {
		has(t, "server", m, "version", "safemode")
	}

	// The restart/shutdown buttons: a host without system commands.
	code, m, _ = call("GET", "/api/system/commands", "", key)
	if code != http.StatusOK {
		t.Fatalf("system commands = %d, want 200", code)
	}
	if b, _ := json.Marshal(m); string(b) != `{"core":[],"custom":[]}` {
		t.Errorf("system commands = %s, want {\"core\":[],\"custom\":[]}", b)
	}
	// OctoRest sd(): a printer without SD support, as OctoPrint answers it.
	code, m, _ = call("GET", "/api/printer/sd", "", key)
	if code != http.StatusNotFound || m["error"] != "SD support is disabled" {
		t.Errorf("printer/sd = %d %v, want 404 SD support is disabled", code, m)
	}

	// The coordinator: job (OctoprintJobInfo indexes progress, job, job.file) and printer
	// (temperature objects, state.flags).
	job := func() map[string]any {
		t.Helper()
		code, m, _ := call("GET", "/api/job", "", key)
		if code != http.StatusOK {
			t.Fatalf("job = %d", code)
		}
		has(t, "job", m, "progress.completion", "progress.printTime", "progress.printTimeLeft", "job.file.name", "job.estimatedPrintTime", "state")
		return m
	}
	printerInfo := func() map[string]any {
		t.Helper()
		code, m, _ := call("GET", "/api/printer", "", key)
		if code != http.StatusOK {
			t.Fatalf("printer = %d", code)
		}
		has(t, "printer", m, "temperature.tool0.actual", "temperature.tool0.target", "temperature.bed.actual", "state.text", "state.flags.printing")
		return m
	}
	job()
	printerInfo()

	// Temperatures: set_bed_temperature posts target and offset together; tools by targets.
	if code, m, _ := call("POST", "/api/printer/bed", `{"command":"target","target":60,"offset":0}`, key); code != http.StatusNoContent {
		t.Errorf("set bed temperature = %d %v, want 204", code, m)
	}
	if code, m, _ := call("POST", "/api/printer/tool", `{"targets":{"tool0":200},"command":"target"}`, key); code != http.StatusNoContent {
		t.Errorf("set tool temperature = %d %v, want 204", code, m)
	}

	// pause, resume and cancel a running job: 204 each, as issue_job_command requires.
	r := uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "ha.gcode", value: goodGcode}, {name: "print", value: "true"}}, true)
	r.header, r.noCSRF = map[string]string{"X-Api-Key": key}, true
	if w := h.do(r); w.Code != http.StatusCreated || h.pr.Status().State != marlin.Printing {
		t.Fatalf("upload and print = %d (%s), state %s", w.Code, w.Body, h.pr.Status().State)
	}
	if s := job()["state"]; s != "Printing" {
		t.Errorf("job state = %v, want Printing", s)
	}
	for _, step := range []struct {
		body string
		want marlin.State
	}{
		{`{"command":"pause","action":"pause"}`, marlin.Paused},
		{`{"command":"pause","action":"resume"}`, marlin.Printing},
		{`{"command":"cancel"}`, marlin.Operational},
	} {
		if code, m, _ := call("POST", "/api/job", step.body, key); code != http.StatusNoContent || h.pr.Status().State != step.want {
			t.Errorf("POST /api/job %s = %d %v, state %s, want 204 and %s", step.body, code, m, h.pr.Status().State, step.want)
		}
	}

	// A disconnected printer: 409 on /api/printer (PrinterOffline), the job poll still 200.
	h.pr.setState(marlin.Disconnected)
	if code, _, _ := call("GET", "/api/printer", "", key); code != http.StatusConflict {
		t.Errorf("printer while offline = %d, want 409 (pyoctoprintapi: PrinterOffline)", code)
	}
	job()
}

func TestDeriveUUID(t *testing.T) {
	a := DeriveUUID([]byte("gateway key"), "mk3")
	if a != DeriveUUID([]byte("gateway key"), "mk3") {
		t.Errorf("DeriveUUID is not deterministic")
	}
	if a == DeriveUUID([]byte("gateway key"), "mk4") || a == DeriveUUID([]byte("other gateway"), "mk3") {
		t.Errorf("DeriveUUID gives the same UUID to different printers")
	}
}
