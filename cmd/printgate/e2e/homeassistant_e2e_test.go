package e2e

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

// uiHomeAssistant replays Home Assistant's OctoPrint integration (its client library,
// pyoctoprintapi) through the real tunnel, as curl from the operator's namespace: the app-key
// flow with an admin's approval, the config entry's discovery and webcam settings, server and
// system info, the coordinator's polls, and pause/resume/cancel of a running job. The
// in-process replay with every key the library indexes is printerd's TestHomeAssistantFlow.
func uiHomeAssistant(t *testing.T, u *uiLab) {
	base := "http://" + u.pr
	op := u.operator

	// request_app_key: probe (204), request (201, token after the last '/' of Location),
	// poll until "api_key" is in the body. pyoctoprintapi sends no custom header.
	if r := uiMustCurl(t, op.ns, base+"/plugin/appkeys/probe"); r.code != 204 {
		t.Fatalf("GET /plugin/appkeys/probe = %v, want 204", r)
	}
	r := uiMustCurl(t, op.ns, "-H", "Content-Type: application/json",
		"--data-binary", `{"app":"Home Assistant","user":"`+op.name+`"}`, base+"/plugin/appkeys/request")
	loc := r.h.Get("Location")
	if r.code != 201 || loc == "" {
		t.Fatalf("POST /plugin/appkeys/request = %v (Location %q), want 201 and a Location", r, loc)
	}
	token := loc[strings.LastIndex(loc, "/")+1:]
	lu, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q: %v", loc, err)
	}
	pollURL := base + lu.Path
	if r := uiMustCurl(t, op.ns, pollURL); r.code == 404 || r.json()["api_key"] != nil {
		t.Fatalf("poll before the decision = %v, want no api_key and not 404", r)
	}
	if r, err := uiDo(u.admin.ns, "POST", "http://"+u.gw+"/api/v1/appkeys/"+token, map[string]any{"decision": true}); err != nil || r.code != 204 {
		t.Fatalf("admin approves = %v %v, want 204", r, err)
	}
	r = uiMustCurl(t, op.ns, pollURL)
	key, _ := r.json()["api_key"].(string)
	if r.code != 200 || key == "" {
		t.Fatalf("poll after approval = %v, want 200 and api_key", r)
	}
	op.key = key // approving a new key replaces the device's previous one
	get := func(path string) uiResp {
		t.Helper()
		return uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, base+path)
	}

	// _finish_config: plugins.discovery.upnpUuid is the config entry's unique id; it must not
	// change between calls (else Home Assistant sees a new device).
	r = get("/api/settings")
	settings := r.json()
	if r.code != 200 || settings == nil {
		t.Fatalf("GET /api/settings = %v, want 200 and JSON", r)
	}
	uiWantKeys(t, "GET /api/settings", settings, "plugins.discovery.upnpUuid",
		"webcam.bitrate", "webcam.snapshotSslValidation", "webcam.streamUrl", "webcam.snapshotUrl", "webcam.webcamEnabled")
	uuid := uiUpnpUUID(settings)
	if uuid == "" {
		t.Fatalf("GET /api/settings: plugins.discovery.upnpUuid empty: %s", uiClip(r.body))
	}
	if again := uiUpnpUUID(get("/api/settings").json()); again != uuid {
		t.Errorf("upnpUuid changed between two calls: %q then %q", uuid, again)
	}

	// get_server_info and the version check.
	if r := get("/api/server"); r.code != 200 {
		t.Errorf("GET /api/server = %v, want 200", r)
	} else {
		uiWantKeys(t, "GET /api/server", r.json(), "version", "safemode")
	}
	if r := get("/api/version"); r.code != 200 {
		t.Errorf("GET /api/version = %v, want 200", r)
	} else {
		uiWantKeys(t, "GET /api/version", r.json(), "api", "server")
	}
	// The restart/shutdown buttons: a host without system commands.
	r = get("/api/system/commands")
	if b, _ := json.Marshal(r.json()); r.code != 200 || string(b) != `{"core":[],"custom":[]}` {
		t.Errorf("GET /api/system/commands = %v, want 200 {\"core\":[],\"custom\":[]}", r)
	}
	// OctoRest sd(): no SD support.
	if r := get("/api/printer/sd"); r.code != 404 {
		t.Errorf("GET /api/printer/sd = %v, want 404", r)
	}

	// The coordinator's polls.
	job := func() string {
		t.Helper()
		r := get("/api/job")
		if r.code != 200 {
			t.Fatalf("GET /api/job = %v", r)
		}
		m := r.json()
		uiWantKeys(t, "GET /api/job", m, "progress.completion", "progress.printTime", "progress.printTimeLeft", "job.file.name", "state")
		s, _ := m["state"].(string)
		return s
	}
	job()
	waitFor(t, "GET /api/printer with temperature.tool0 and bed", 30*time.Second, func() bool {
		r := get("/api/printer")
		if r.code != 200 {
			t.Fatalf("GET /api/printer = %v", r)
		}
		temp, _ := r.json()["temperature"].(map[string]any)
		return temp["tool0"] != nil && temp["bed"] != nil
	})
	uiWantKeys(t, "GET /api/printer", get("/api/printer").json(),
		"temperature.tool0.actual", "temperature.tool0.target", "temperature.bed.actual", "state.text", "state.flags.printing")

	// pause, resume and cancel a running job: 204 each (issue_job_command), and the job poll
	// follows. A long job so that it still runs when the pause comes.
	uiWaitIdle(t, u)
	f := uiLongGcode(t, t.TempDir(), "ha.gcode", 20000)
	r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, "-F", "file=@"+f, "-F", "path=", "-F", "print=true", base+"/api/files/local")
	uiCheckUpload(t, r, u.pr, "ha.gcode", true)
	waitFor(t, "GET /api/job state Printing", 60*time.Second, func() bool { return job() == "Printing" })
	for _, step := range []struct{ body, want string }{
		{`{"command":"pause","action":"pause"}`, "Paused"},
		{`{"command":"pause","action":"resume"}`, "Printing"},
		{`{"command":"cancel"}`, "Operational"},
	} {
		r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, "-H", "Content-Type: application/json", "--data-binary", step.body, base+"/api/job")
		if r.code != 204 {
			t.Fatalf("POST /api/job %s = %v, want 204", step.body, r)
		}
		waitFor(t, "GET /api/job state "+step.want+" after "+step.body, 60*time.Second, func() bool { return job() == step.want })
	}
	uiWaitIdle(t, u)
}

// uiUpnpUUID is plugins.discovery.upnpUuid of a settings answer, "" when absent.
func uiUpnpUUID(settings map[string]any) string {
	plugins, _ := settings["plugins"].(map[string]any)
	discovery, _ := plugins["discovery"].(map[string]any)
	s, _ := discovery["upnpUuid"].(string)
	return s
}
