package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll/control"
)

// This file is issue 6's acceptance through the real tunnel client: one gateway with a
// simulated printer (and a local MJPEG camera) in the gateway namespace, and three enrolled
// devices, each a Debian wg-quick + wireguard-go interface in its own client namespace:
//
//	admin    lab.cl           approves app keys, drives the browser, uses the serial bridge
//	operator <prefix>u1       the slicers (PrusaSlicer, Cura), the push socket
//	viewer   <prefix>u2       webcam, and every "must be refused" check
//
// One namespace per device because each wg-quick interface routes the whole mesh prefix.
// The subtests share the lab and run in order; each leaves the printer idle.
//
// Run: go test -count=1 -v -run 'TestUIEndToEnd' ./cmd/printgate/e2e/
// (a single part: -run 'TestUIEndToEnd/Browser').

// TestUIEndToEnd runs the slicer, push, browser, webcam and serial bridge acceptance tests of
// issue 6 against one gateway.
func TestUIEndToEnd(t *testing.T) {
	u := uiSetup(t)
	t.Run("Slicer", func(t *testing.T) { uiSlicer(t, u) })
	t.Run("Push", func(t *testing.T) { uiPushTest(t, u) })
	t.Run("Webcam", func(t *testing.T) { uiWebcamTest(t, u) })
	t.Run("Bridge", func(t *testing.T) { uiBridgeTest(t, u) })
	t.Run("Browser", func(t *testing.T) { uiBrowserTest(t, u) })
	t.Run("HomeAssistant", func(t *testing.T) { uiHomeAssistant(t, u) })
	if t.Failed() {
		t.Logf("gateway log:\n%s", u.d.stderr)
	}
}

// uiPeer is one enrolled device behind its own wg-quick interface.
type uiPeer struct {
	name, role string
	ns         netns
	key        string // its API key as enroll printed it
	addr       string // its tunnel IPv4 address
}

// uiLab is the shared gateway and its devices.
type uiLab struct {
	*lab
	state                   string
	d                       *daemon
	gw, pr                  string // the gateway's and the printer's tunnel IPv4 addresses
	admin, operator, viewer *uiPeer
	cam                     *uiCam
}

// uiPrinter is the simulated printer's name in every test of these files.
const uiPrinter = "mk"

// uiGhost is a printer whose serial port does not exist.
const (
	uiGhost     = "ghost"
	uiGhostPort = "/dev/serial/by-id/nonexistent"
)

func uiSetup(t *testing.T) *uiLab {
	t.Helper()
	requireRoot(t, "ip", "wg", "wg-quick", "wireguard-go", "curl")
	if !gateway.SimAvailable {
		t.Fatalf("issue 6's end-to-end tests need `printgate run --printer NAME=sim`: " +
			"gateway.SimAvailable is false (cmd/printgate/gateway/sim.go must wire printerd/marlinsim; owners: the integrator and the simulator's engineer)")
	}
	u := &uiLab{lab: newLab(t)}
	u.cam = uiStartCam(t, u.lab.gw)

	u.state = filepath.Join(t.TempDir(), "state")
	pgOK(t, "init", "--state", u.state, "--endpoint", fmt.Sprintf("%s:%d", u.gwIP, listenPort), "--listen-port", strconv.Itoa(listenPort))
	// The flag exactly as docs/slicers.md shows it.
	spec := fmt.Sprintf("%s=sim,webcam=%s?action=stream,snapshot=%s?action=snapshot", uiPrinter, u.cam.url, u.cam.url)
	// A second printer whose port is missing: the browser test shows it offline, in error and
	// refusing a connect.
	u.d = startDaemon(t, u.lab.gw, u.state, u.prefix+"w", "--printer", spec, "--printer", uiGhost+"="+uiGhostPort)

	var st control.Status
	if err := json.Unmarshal([]byte(pgOK(t, "status", "--state", u.state, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Printers {
		if p.Name == uiPrinter {
			u.pr = p.Address
		}
	}
	if len(st.Addresses) == 0 || len(st.Printers) != 2 || u.pr == "" {
		t.Fatalf("status --json = %+v, want a gateway address and printers %s and %s", st, uiPrinter, uiGhost)
	}
	u.gw = st.Addresses[0]

	u.admin = uiEnroll(t, u, "uiadmin", "admin", u.lab.cl)
	u.operator = uiEnroll(t, u, "uioperator", "operator", uiPeerNS(t, u.lab, 1))
	u.viewer = uiEnroll(t, u, "uiviewer", "viewer", uiPeerNS(t, u.lab, 2))

	// The printer must be connected before anything prints.
	waitFor(t, "printer "+uiPrinter+" operational", 60*time.Second, func() bool {
		return uiNativeState(u) == "operational"
	})
	return u
}

// uiPeerNS makes another client namespace with a veth pair into the gateway namespace and a
// route to the gateway's WireGuard endpoint; everything goes with the test.
func uiPeerNS(t *testing.T, l *lab, i int) netns {
	t.Helper()
	ns := netns{fmt.Sprintf("%su%d", l.prefix, i)}
	vg, vc := fmt.Sprintf("%su%dg", l.prefix, i), fmt.Sprintf("%su%dc", l.prefix, i)
	// 10.251.x.0/24 is the lab's; these are 10.251+i.x.0/24, x the same.
	octets := strings.Split(l.gwIP, ".")
	gwIP := fmt.Sprintf("10.%d.%s.1", 251+i, octets[2])
	clIP := fmt.Sprintf("10.%d.%s.2", 251+i, octets[2])
	sh(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.name).Run() })
	sh(t, "ip", "link", "add", vg, "netns", l.gw.name, "type", "veth", "peer", "name", vc, "netns", ns.name)
	t.Cleanup(func() { exec.Command("ip", "-n", l.gw.name, "link", "del", vg).Run() })
	sh(t, "ip", "-n", ns.name, "link", "set", "lo", "up")
	sh(t, "ip", "-n", l.gw.name, "addr", "add", gwIP+"/24", "dev", vg)
	sh(t, "ip", "-n", ns.name, "addr", "add", clIP+"/24", "dev", vc)
	sh(t, "ip", "-n", l.gw.name, "link", "set", vg, "up")
	sh(t, "ip", "-n", ns.name, "link", "set", vc, "up")
	sh(t, "ip", "-n", ns.name, "route", "add", l.gwIP+"/32", "via", gwIP)
	return ns
}

var uiAPIKeyRE = regexp.MustCompile(`API key .*: ([A-Za-z0-9_-]{43})`)

// uiEnroll enrolls a device with the CLI, brings its config up with wg-quick in ns and checks
// the gateway sees who it is.
func uiEnroll(t *testing.T, u *uiLab, name, role string, ns netns) *uiPeer {
	t.Helper()
	conf := filepath.Join(t.TempDir(), name+".conf")
	out := pgOK(t, "enroll", "--state", u.state, name, "--role", role, "--conf", conf, "--qr", "none")
	m := uiAPIKeyRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("enroll %s printed no API key:\n%s", name, out)
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	p := &uiPeer{name: name, role: role, ns: ns, key: m[1]}
	if a := regexp.MustCompile(`(?m)^Address = ([0-9.]+)`).FindStringSubmatch(string(text)); a != nil {
		p.addr = a[1]
	}
	c := newWGClient(t, ns, fmt.Sprintf("%s%.1sw", u.prefix, role), string(text))
	c.up(t)
	var who struct{ Name, Role string }
	waitFor(t, name+" reaches the gateway", 20*time.Second, func() bool {
		r, err := uiDo(ns, "GET", "http://"+u.gw+"/api/v1/whoami", nil)
		return err == nil && r.code == 200 && json.Unmarshal(r.body, &who) == nil
	})
	if who.Name != name || who.Role != role {
		t.Fatalf("whoami from %s = %s/%s, want %s/%s", ns.name, who.Name, who.Role, name, role)
	}
	return p
}

// uiResp is one HTTP answer as curl got it.
type uiResp struct {
	code int
	h    http.Header
	body []byte
}

func (r uiResp) String() string { return fmt.Sprintf("%d %s", r.code, uiClip(r.body)) }

func uiClip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// json decodes the body into a generic object; nil when it is not one.
func (r uiResp) json() map[string]any {
	var m map[string]any
	if json.Unmarshal(r.body, &m) != nil {
		return nil
	}
	return m
}

// uiCurl runs curl in ns with args (the URL last) and parses the answer, skipping 1xx
// interim responses. err is curl's own failure (no connection, timeout).
func uiCurl(ns netns, args ...string) (uiResp, error) {
	// --raw: curl passes a chunked body on undecoded, so http.ReadResponse can decode it.
	base := []string{"-sS", "-i", "--raw", "--max-time", "30", "-H", "Expect:"}
	out, err := ns.cmd("curl", append(base, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return uiResp{}, fmt.Errorf("curl %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return uiResp{}, fmt.Errorf("curl %s: %v", strings.Join(args, " "), err)
	}
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return uiResp{}, fmt.Errorf("curl %s: parse answer: %v\n%s", strings.Join(args, " "), err, out)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return uiResp{}, fmt.Errorf("curl %s: read body: %v", strings.Join(args, " "), err)
		}
		if resp.StatusCode >= 200 {
			return uiResp{code: resp.StatusCode, h: resp.Header, body: body}, nil
		}
	}
}

// uiMustCurl is uiCurl that fails the test when curl itself fails.
func uiMustCurl(t *testing.T, ns netns, args ...string) uiResp {
	t.Helper()
	r, err := uiCurl(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// uiDo makes one request from ns with curl; a JSON body is sent with the headers the web UI
// sends (Content-Type and X-Printgate).
func uiDo(ns netns, method, url string, body any) (uiResp, error) {
	args := []string{"-X", method}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return uiResp{}, err
		}
		args = append(args, "-H", "Content-Type: application/json", "-H", "X-Printgate: 1", "--data-binary", string(b))
	}
	return uiCurl(ns, append(args, url)...)
}

// uiNSClient is an HTTP client whose connections are dialed inside ns (so they go through
// that namespace's wg-quick interface). No overall timeout: websockets and streams use it.
func uiNSClient(ns netns) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		DisableCompression: true,
	}}
}

// uiNativeState is the printer's state as the native API reports it to the admin.
func uiNativeState(u *uiLab) string {
	r, err := uiDo(u.admin.ns, "GET", "http://"+u.gw+"/api/v1/printers/"+uiPrinter, nil)
	if err != nil || r.code != 200 {
		return ""
	}
	var st struct{ State string }
	json.Unmarshal(r.body, &st)
	return strings.ToLower(st.State)
}

// uiWaitIdle waits until the printer has no job running.
func uiWaitIdle(t *testing.T, u *uiLab) {
	t.Helper()
	waitFor(t, "printer idle (operational)", 120*time.Second, func() bool { return uiNativeState(u) == "operational" })
}

// uiGcode writes a small job to dir/name: heaters to modest targets (so temperatures move),
// `lines` short G1 moves (0.5 mm) inside a 20 mm square with a short dwell every 20 lines, heaters
// off at the end. Every line passes the default policy. pad adds comment bytes at the top (a
// bigger file for upload progress; comments are never sent).
func uiGcode(t *testing.T, dir, name string, lines, pad int) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "; printgate e2e job %s\n", name)
	for b.Len() < pad {
		b.WriteString("; padding so that the upload takes long enough to show its progress ..........\n")
	}
	b.WriteString("M140 S50\nM104 S180\nG28\nG90\nG1 Z0.3 F600\n")
	for i := range lines {
		x, y := 10+float64(i%40)/2, 10+float64((i/40)%40)/2
		fmt.Fprintf(&b, "G1 X%.1f Y%.1f F3000\n", x, y)
		if i%20 == 19 {
			b.WriteString("G4 P50\n")
		}
	}
	b.WriteString("M104 S0\nM140 S0\nG1 Z10 F600\nM400\n")
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// uiLongGcode is a job of many tiny moves (0.1 mm at 100 mm/s): a few seconds of printing
// whether the simulator runs moves in real time or instantly, so that temperature reports
// (every 2 s of wall time) arrive while it prints.
func uiLongGcode(t *testing.T, dir, name string, lines int) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "; printgate e2e job %s\nM140 S50\nM104 S180\nG28\nG90\nG1 Z0.3 F600\n", name)
	for i := range lines {
		fmt.Fprintf(&b, "G1 X%.1f Y%.1f F6000\n", 10+float64(i%200)/10, 10+float64((i/200)%40)/2)
	}
	b.WriteString("M104 S0\nM140 S0\nG1 Z10 F600\nM400\n")
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// uiOctoJob is /api/job as the tests read it.
type uiOctoJob struct {
	State string `json:"state"`
	Job   struct {
		File struct {
			Name *string `json:"name"`
		} `json:"file"`
	} `json:"job"`
	Progress struct {
		Completion    *float64 `json:"completion"`
		PrintTime     *float64 `json:"printTime"`
		PrintTimeLeft *float64 `json:"printTimeLeft"`
	} `json:"progress"`
}

// uiWaitJobDone polls /api/job (as Cura and PrusaSlicer's monitor do) until the job on file
// has completed: state Operational and completion 100. It fails on an error state.
func uiWaitJobDone(t *testing.T, p *uiPeer, base, key, file string) uiOctoJob {
	t.Helper()
	var j uiOctoJob
	sawPrinting := false
	waitFor(t, "job "+file+" done (state Operational, completion 100)", 120*time.Second, func() bool {
		r, err := uiCurl(p.ns, "-H", "X-Api-Key: "+key, base+"/api/job")
		if err != nil || r.code != 200 {
			return false
		}
		j = uiOctoJob{}
		if err := json.Unmarshal(r.body, &j); err != nil {
			t.Fatalf("GET /api/job: %v: %s", err, r.body)
		}
		if strings.HasPrefix(j.State, "Error") || strings.HasPrefix(j.State, "Offline") {
			t.Fatalf("GET /api/job: state %q during the job: %s", j.State, r.body)
		}
		if j.State == "Printing" {
			sawPrinting = true
		}
		return j.State == "Operational" && j.Job.File.Name != nil && *j.Job.File.Name == file &&
			j.Progress.Completion != nil && *j.Progress.Completion == 100
	})
	t.Logf("job %s done (printing seen while polling: %v): printTime %v", file, sawPrinting, uiDeref(j.Progress.PrintTime))
	return j
}

func uiDeref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// uiWantKeys fails unless the JSON object m has every dotted key path.
func uiWantKeys(t *testing.T, what string, m map[string]any, paths ...string) {
	t.Helper()
	for _, p := range paths {
		var cur any = m
		for _, k := range strings.Split(p, ".") {
			obj, ok := cur.(map[string]any)
			if !ok {
				t.Errorf("%s: %q: the value before %q is %T, not an object", what, p, k, cur)
				break
			}
			if cur, ok = obj[k]; !ok {
				t.Errorf("%s: no key %q (of %q)", what, k, p)
				break
			}
		}
	}
}

// uiListed reports whether GET /api/files/local lists a file named name.
func uiListed(t *testing.T, p *uiPeer, base, name string) bool {
	t.Helper()
	r := uiMustCurl(t, p.ns, base+"/api/files/local?recursive=true")
	if r.code != 200 {
		t.Fatalf("GET /api/files/local = %v", r)
	}
	var list struct {
		Files []struct{ Name, Path string }
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("GET /api/files/local: %v", err)
	}
	for _, f := range list.Files {
		if f.Name == name || f.Path == name {
			return true
		}
	}
	return false
}

// uiSlicer is the slicer acceptance: PrusaSlicer's and Cura's request sequences as curl
// from the operator's namespace (reference/octoprint-api.md), each print completing on the
// simulator, and the refusals.
func uiSlicer(t *testing.T, u *uiLab) {
	base := "http://" + u.pr
	op := u.operator
	dir := t.TempDir()

	t.Run("PrusaSlicer", func(t *testing.T) {
		// "Test": GET /api/version with X-Api-Key; `api` present, `text` starts with OctoPrint.
		r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+op.key, base+"/api/version")
		v := r.json()
		if r.code != 200 || v == nil {
			t.Fatalf("GET /api/version = %v, want 200 and JSON", r)
		}
		uiWantKeys(t, "GET /api/version", v, "api", "server")
		if text, ok := v["text"].(string); ok && !strings.HasPrefix(text, "OctoPrint") {
			t.Errorf("GET /api/version text = %q, want it to start with OctoPrint (PrusaSlicer checks)", text)
		}
		if ct := r.h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("GET /api/version Content-Type = %q, want application/json", ct)
		}

		// Upload: multipart `file` and `path` (empty: the root), no print.
		up := uiGcode(t, dir, "prusa-upload.gcode", 50, 0)
		r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+op.key, "-F", "file=@"+up, "-F", "path=", base+"/api/files/local")
		uiCheckUpload(t, r, u.pr, "prusa-upload.gcode", false)
		if !uiListed(t, op, base, "prusa-upload.gcode") {
			t.Errorf("uploaded prusa-upload.gcode not listed by GET /api/files/local")
		}

		// Upload and print: print=true; the job completes on the simulator.
		pp := uiGcode(t, dir, "prusa-print.gcode", 300, 0)
		r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+op.key, "-F", "file=@"+pp, "-F", "path=", "-F", "print=true", base+"/api/files/local")
		uiCheckUpload(t, r, u.pr, "prusa-print.gcode", true)
		uiWaitJobDone(t, op, base, op.key, "prusa-print.gcode")
	})
	uiWaitIdle(t, u)

	t.Run("Cura", func(t *testing.T) {
		// App-key workflow: probe, request, poll while pending, an admin approves through the
		// native API (as the web UI's devices page does), poll → api_key.
		r := uiMustCurl(t, op.ns, base+"/plugin/appkeys/probe")
		if r.code != 204 {
			t.Fatalf("GET /plugin/appkeys/probe = %v, want 204", r)
		}
		// Exactly what Cura's DiscoverOctoPrintAction.requestApiKey sends: a JSON body and
		// Content-Type, no API key (it has none yet) and no other header.
		r = uiMustCurl(t, op.ns, "-H", "Content-Type: application/json", "--data-binary", `{"app":"Cura"}`, base+"/plugin/appkeys/request")
		if r.code != 201 {
			t.Errorf("POST /plugin/appkeys/request as Cura sends it (no X-Api-Key, no custom header) = %v, want 201: "+
				"app-key clients (Cura, OctoPod, FDM Monster) have no key and send no custom header here; printerd's "+
				"CSRF rule must exempt this route (it still has Origin and Sec-Fetch-Site checks)", r)
			// Go on with a header so that the rest of the workflow is still checked.
			r = uiMustCurl(t, op.ns, "-H", "Content-Type: application/json", "-H", "X-Printgate: 1", "--data-binary", `{"app":"Cura"}`, base+"/plugin/appkeys/request")
		}
		m := r.json()
		token, _ := m["app_token"].(string)
		if r.code != 201 || token == "" {
			t.Fatalf("POST /plugin/appkeys/request = %v, want 201 and app_token", r)
		}
		if d, _ := m["auth_dialog"].(string); !strings.HasPrefix(d, "http://"+u.gw+"/") {
			t.Errorf("app key request auth_dialog = %q, want the web UI on http://%s/", d, u.gw)
		}
		pollURL := base + "/plugin/appkeys/request/" + token
		if loc := r.h.Get("Location"); loc != pollURL {
			t.Errorf("POST /plugin/appkeys/request Location = %q, want %q", loc, pollURL)
		}
		r = uiMustCurl(t, op.ns, pollURL)
		if r.code != 202 {
			t.Fatalf("poll while pending = %v, want 202", r)
		}

		// The admin's devices page lists the request and approves it.
		r = uiMustCurl(t, u.admin.ns, "http://"+u.gw+"/api/v1/appkeys")
		var pending struct {
			Requests []struct{ Token, App, Peer string }
		}
		if json.Unmarshal(r.body, &pending); r.code != 200 {
			t.Fatalf("GET /api/v1/appkeys (admin) = %v", r)
		}
		found := false
		for _, q := range pending.Requests {
			found = found || q.Token == token && q.App == "Cura" && q.Peer == op.name
		}
		if !found {
			t.Fatalf("GET /api/v1/appkeys does not list Cura's request from %s: %s", op.name, r.body)
		}
		// The requesting operator cannot approve its own request.
		if r, err := uiDo(op.ns, "POST", "http://"+u.gw+"/api/v1/appkeys/"+token, map[string]any{"decision": true}); err != nil || r.code != 403 {
			t.Errorf("operator approving its own app key = %v %v, want 403", r, err)
		}
		r, err := uiDo(u.admin.ns, "POST", "http://"+u.gw+"/api/v1/appkeys/"+token, map[string]any{"decision": true})
		if err != nil || r.code != 204 {
			t.Fatalf("admin approves = %v %v, want 204", r, err)
		}
		r = uiMustCurl(t, op.ns, pollURL)
		key, _ := r.json()["api_key"].(string)
		if r.code != 200 || key == "" {
			t.Fatalf("poll after approval = %v, want 200 and api_key", r)
		}
		oldKey := op.key
		op.key = key // the approval gave the operator this key; the one enroll printed is gone
		if r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+oldKey, base+"/api/version"); r.code != 403 {
			t.Errorf("the key enroll printed, after an app key was approved for the device: GET /api/version = %v, want 403 (docs/slicers.md: approving a new key replaces the previous one)", r)
		}
		if r := uiMustCurl(t, op.ns, pollURL); r.code != 404 {
			t.Errorf("second poll after the key was handed out = %v, want 404", r)
		}

		// Cura's "API key accepted" test and what its monitor reads.
		r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, base+"/api/settings")
		if r.code != 200 {
			t.Fatalf("GET /api/settings with the new key = %v, want 200", r)
		}
		uiWantKeys(t, "GET /api/settings", r.json(), "feature.sdSupport", "webcam.streamUrl", "plugins")
		// Cura counts extruders from temperature.tool<n>: poll (as Cura does) until the
		// first temperature report is in.
		waitFor(t, "GET /api/printer with temperature.tool0", 15*time.Second, func() bool {
			r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, base+"/api/printer")
			if r.code != 200 {
				t.Fatalf("GET /api/printer = %v", r)
			}
			temp, _ := r.json()["temperature"].(map[string]any)
			return temp["tool0"] != nil
		})
		flags := []string{}
		for _, f := range []string{"error", "closedOrError", "paused", "pausing", "printing", "cancelling", "ready", "operational"} {
			flags = append(flags, "state.flags."+f)
		}
		uiWantKeys(t, "GET /api/printer", r.json(), append(flags, "temperature.tool0.actual", "temperature.bed.actual", "state.text")...)
		// Another device presenting this key is refused.
		if r := uiMustCurl(t, u.viewer.ns, "-H", "X-Api-Key: "+key, base+"/api/version"); r.code != 403 {
			t.Errorf("viewer presenting the operator's key: GET /api/version = %v, want 403", r)
		}

		// Upload without print, then select-and-print on the Location, as Cura does.
		cp := uiGcode(t, dir, "cura.gcode", 300, 0)
		r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, "-F", "file=@"+cp, "-F", "path=", "-F", "select=false", "-F", "print=false", base+"/api/files/local")
		uiCheckUpload(t, r, u.pr, "cura.gcode", false)
		loc := r.h.Get("Location")
		_, rest, ok := strings.Cut(loc, "api/")
		if !ok {
			t.Fatalf("Location %q has no api/ to split on (Cura splits on it)", loc)
		}
		r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, "-H", "Content-Type: application/json",
			"--data-binary", `{"command":"select","print":true}`, base+"/api/"+rest)
		if r.code != 204 {
			t.Fatalf("POST %s select+print = %v, want 204", "/api/"+rest, r)
		}
		// Cura polls /api/printer and /api/job; the printer shows printing, then ready.
		sawPrinting := false
		waitFor(t, "GET /api/printer printing or the job already done", 30*time.Second, func() bool {
			r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, base+"/api/printer")
			var p struct {
				State struct{ Flags map[string]bool }
			}
			json.Unmarshal(r.body, &p)
			sawPrinting = sawPrinting || p.State.Flags["printing"]
			return sawPrinting || p.State.Flags["ready"]
		})
		j := uiWaitJobDone(t, op, base, key, "cura.gcode")
		if j.Progress.PrintTimeLeft != nil && *j.Progress.PrintTimeLeft != 0 {
			t.Errorf("done job printTimeLeft = %v, want 0", *j.Progress.PrintTimeLeft)
		}
		r = uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, base+"/api/printer")
		var p struct {
			State struct{ Flags map[string]bool }
		}
		json.Unmarshal(r.body, &p)
		if !p.State.Flags["ready"] || !p.State.Flags["operational"] || p.State.Flags["printing"] {
			t.Errorf("GET /api/printer after the job: flags %v, want ready and operational, not printing", p.State.Flags)
		}
		t.Logf("Cura: /api/printer showed printing while polling: %v", sawPrinting)
	})
	uiWaitIdle(t, u)

	t.Run("DangerousFileRefused", func(t *testing.T) {
		bad := filepath.Join(dir, "hot.gcode")
		os.WriteFile(bad, []byte("G28\nG1 X10 Y10 F3000\nM104 S400\nG1 X20 Y20\n"), 0o644)
		r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+op.key, "-F", "file=@"+bad, "-F", "path=", "-F", "print=true", base+"/api/files/local")
		if r.code < 400 || r.code > 499 {
			t.Errorf("upload with M104 S400 = %v, want 4xx", r)
		}
		if msg, _ := r.json()["error"].(string); !strings.Contains(msg, "M104 S400") || !strings.Contains(msg, "max-temperature") {
			t.Errorf("refusal body %s: want {\"error\": ...} naming the line and the rule", r.body)
		}
		if uiListed(t, op, base, "hot.gcode") {
			t.Errorf("refused hot.gcode is listed")
		}
		if st := uiNativeState(u); st != "operational" {
			t.Errorf("printer state after the refused upload = %q, want operational (nothing started)", st)
		}
		// The audit log has the refused upload, with the operator's name.
		r = uiMustCurl(t, u.admin.ns, "http://"+u.gw+"/api/v1/audit?n=50")
		var a struct {
			Records []struct {
				Peer, Action, Result string
				Args                 map[string]string
			}
		}
		json.Unmarshal(r.body, &a)
		found := ""
		for _, rec := range a.Records {
			if rec.Peer == op.name && rec.Action == "upload" && strings.Contains(rec.Result, "M104") {
				found = rec.Result
			}
		}
		if found == "" {
			t.Errorf("audit log has no refused upload of %s naming M104: %s", op.name, uiClip(r.body))
		}
		t.Logf("audit: refused upload: %s", found)
	})

	t.Run("ViewerCannotUpload", func(t *testing.T) {
		f := uiGcode(t, dir, "viewer.gcode", 10, 0)
		r := uiMustCurl(t, u.viewer.ns, "-H", "X-Api-Key: "+u.viewer.key, "-F", "file=@"+f, "-F", "path=", base+"/api/files/local")
		if r.code != 403 {
			t.Errorf("viewer upload = %v, want 403", r)
		}
		r = uiMustCurl(t, u.viewer.ns, "-F", "file=@"+f, "-F", "path=", "-H", "X-Printgate: 1", base+"/api/files/local")
		if r.code != 403 {
			t.Errorf("viewer upload without a key = %v, want 403", r)
		}
		if uiListed(t, u.viewer, base, "viewer.gcode") {
			t.Errorf("viewer's upload is listed")
		}
	})
}

// uiCheckUpload checks an upload answer: 201, an absolute Location on the printer's address
// naming the file, and the JSON keys slicers and Cura read.
func uiCheckUpload(t *testing.T, r uiResp, host, name string, print bool) {
	t.Helper()
	if r.code != 201 {
		t.Fatalf("upload %s = %v, want 201", name, r)
	}
	want := "http://" + host + "/api/files/local/" + url.PathEscape(name)
	if loc := r.h.Get("Location"); loc != want {
		t.Errorf("upload %s Location = %q, want %q", name, loc, want)
	}
	m := r.json()
	uiWantKeys(t, "upload "+name, m, "files.local.name", "files.local.path", "files.local.origin", "files.local.refs.resource", "done", "effectiveSelect", "effectivePrint")
	if m["done"] != true {
		t.Errorf("upload %s done = %v, want true", name, m["done"])
	}
	if got, _ := m["effectivePrint"].(bool); got != print {
		t.Errorf("upload %s effectivePrint = %v, want %v", name, m["effectivePrint"], print)
	}
}
