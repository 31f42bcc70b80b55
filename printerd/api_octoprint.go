package printerd

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/marlin"
)

// This file is the OctoPrint-compatible API on a printer's address, route by route as
// reference/octoprint-api.md gives them. Errors are {"error": "..."}; anonymous or
// insufficient callers get 403 as OctoPrint answers them.

// octoprint is the OctoPrint-compatible face: the handlers of the routes on a printer's
// address, here and in sockjs.go, upload.go (opUpload) and appkeys.go (the app-keys plugin).
// It speaks OctoPrint's vocabulary over the shared actions (ops.go, api.go, upload.go) and the
// Server under them; its methods keep the receiver name s.
type octoprint struct{ actions }

// opIndex sends a browser that opened the printer's address to this printer's page in the
// web UI on the gateway.
func (s octoprint) opIndex(q *request) error {
	if s.cfg.GatewayURL == "" {
		return errorf(http.StatusNotFound, "this address serves the OctoPrint-compatible API; the web UI is on the gateway address")
	}
	http.Redirect(q.w, q.r, s.cfg.GatewayURL+"/#/printer/"+q.p.name, http.StatusFound)
	return nil
}

func (s octoprint) opVersion(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]string{
		"api":    octoAPIVersion,
		"server": octoServerVersion,
		"text":   "OctoPrint " + octoServerVersion + " (printgate)",
	})
	return nil
}

func (s octoprint) opServer(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]any{"version": octoServerVersion, "safemode": nil})
	return nil
}

// octoPermissions are the OctoPrint permissions a role has.
func octoPermissions(r enroll.Role) []string {
	p := []string{"STATUS", "WEBCAM", "FILES_LIST", "FILES_DOWNLOAD", "GCODE_VIEWER", "MONITOR_TERMINAL", "SETTINGS_READ", "TIMELAPSE_LIST"}
	if r.Includes(enroll.Operator) {
		p = append(p, "CONNECTION", "FILES_UPLOAD", "FILES_DELETE", "FILES_SELECT", "PRINT", "CONTROL")
	}
	if r.Includes(enroll.Admin) {
		p = append(p, "ADMIN", "SETTINGS", "PLUGIN_APPKEYS_GRANT", "PLUGIN_APPKEYS_ADMIN")
	}
	return p
}

func octoGroups(r enroll.Role) []string {
	switch r {
	case enroll.Admin:
		return []string{"admins", "users"}
	case enroll.Operator:
		return []string{"users"}
	}
	return []string{"readonly"}
}

// userRecord is the login/currentuser reply. name is the peer's name; FDM Monster refuses
// "_api", so the peer name is always used.
func (s octoprint) userRecord(q *request, session string) map[string]any {
	perms := octoPermissions(q.role)
	lower := make([]string, len(perms))
	for i, p := range perms {
		lower[i] = strings.ToLower(p)
	}
	rec := map[string]any{
		"name":        q.caller.Name,
		"active":      true,
		"admin":       q.role == enroll.Admin,
		"user":        true,
		"apikey":      nil,
		"groups":      octoGroups(q.role),
		"permissions": perms,
		"needs":       map[string]any{"role": lower, "group": octoGroups(q.role)},
		"roles":       lower,
		"settings":    map[string]any{},

		"_is_external_client": false,
		"_login_mechanism":    "printgate",
	}
	if session != "" {
		rec["session"] = session
	}
	return rec
}

func (s octoprint) opLogin(q *request) error {
	var body struct {
		Passive bool   `json:"passive"`
		User    string `json:"user"`
		// An active login's fields are accepted and not used: identity is the tunnel peer.
		Pass     string `json:"pass"`
		Remember bool   `json:"remember"`
	}
	if q.r.ContentLength != 0 {
		if err := decodeJSON(q, &body); err != nil {
			return err
		}
	}
	// Identity is the tunnel peer: an active login (user + password) has nothing to check.
	writeJSON(q.w, http.StatusOK, s.userRecord(q, s.sessions.create(q.caller.Name, s.now())))
	return nil
}

func (s octoprint) opLogout(q *request) error {
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s octoprint) opCurrentUser(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]any{
		"name":        q.caller.Name,
		"permissions": octoPermissions(q.role),
		"groups":      octoGroups(q.role),
	})
	return nil
}

// webcamURLs are the proxied URLs a client should use, absolute on the address it reached.
func (s octoprint) webcamURLs(q *request) (stream, snapshot string) {
	if q.p.Webcam.Stream != "" {
		stream = absURL(q.r, "/webcam/stream")
	}
	if q.p.Webcam.Snapshot != "" {
		snapshot = absURL(q.r, "/webcam/snapshot")
	}
	return stream, snapshot
}

func (s octoprint) opSettings(q *request) error {
	stream, snapshot := s.webcamURLs(q)
	lim := q.p.Policy.Limits()
	webcam := map[string]any{
		"webcamEnabled": stream != "",
		"streamUrl":     stream,
		"snapshotUrl":   snapshot,
		"flipH":         false,
		"flipV":         false,
		"rotate90":      false,
		"streamRatio":   "16:9",
		// pyoctoprintapi (Home Assistant) indexes these two; OctoPrint's defaults.
		"bitrate":               "10000k",
		"snapshotSslValidation": true,
	}
	writeJSON(q.w, http.StatusOK, map[string]any{
		"api":           map[string]any{"allowCrossOrigin": false},
		"appearance":    map[string]any{"name": q.p.name},
		"feature":       map[string]any{"sdSupport": false, "temperatureGraph": true},
		"gcodeAnalysis": map[string]any{"runAt": "never"},
		"plugins": map[string]any{
			// Home Assistant keys its device on discovery.upnpUuid (its config flow fails
			// without it); the other keys as OctoPrint's discovery plugin has them, unset.
			"discovery": map[string]any{
				"upnpUuid": q.p.UUID, "publicHost": nil, "publicPort": nil, "pathPrefix": nil,
				"httpUsername": nil, "httpPassword": nil, "zeroConf": []any{},
			},
		},
		"printer": map[string]any{"defaultExtrusionLength": 5},
		"serial":  map[string]any{"autoconnect": true},
		"temperature": map[string]any{
			"profiles": []map[string]any{
				{"name": "PLA", "extruder": min(210, lim.MaxHotend), "bed": min(60, lim.MaxBed)},
				{"name": "PETG", "extruder": min(240, lim.MaxHotend), "bed": min(80, lim.MaxBed)},
			},
		},
		"webcam":  webcam,
		"webcams": webcamList(stream, snapshot),
	})
	return nil
}

// opSystemCommands answers as OctoPrint does on a host with no system commands configured:
// the gateway never restarts, reboots or shuts down its host on a client's request.
func (s octoprint) opSystemCommands(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]any{"core": []any{}, "custom": []any{}})
	return nil
}

// opSD answers as OctoPrint does with feature.sdSupport off (printer.py printerSdState: 404
// "SD support is disabled"): printgate prints from its own file store only.
func (s octoprint) opSD(q *request) error {
	return errorf(http.StatusNotFound, "SD support is disabled")
}

func webcamList(stream, snapshot string) []map[string]any {
	if stream == "" && snapshot == "" {
		return []map[string]any{}
	}
	return []map[string]any{{
		"name": "classic", "displayName": "Webcam", "canSnapshot": snapshot != "",
		"compat": map[string]any{"stream": stream, "snapshot": snapshot},
	}}
}

// profile is the printer profile from the policy's limits.
func (s octoprint) profile(q *request) map[string]any {
	lim := q.p.Policy.Limits()
	model := q.p.Model
	if model == "" {
		model = "Marlin printer"
	}
	axis := func(speed int) map[string]any { return map[string]any{"speed": speed, "inverted": false} }
	return map[string]any{
		"id": "_default", "name": q.p.name, "model": model, "color": "default",
		"current": true, "default": true,
		"heatedBed": true, "heatedChamber": lim.MaxChamber > 0,
		"volume": map[string]any{
			"formFactor": "rectangular", "origin": "lowerleft",
			"width": lim.Max[0] - lim.Min[0], "depth": lim.Max[1] - lim.Min[1], "height": lim.Max[2] - lim.Min[2],
		},
		"extruder": map[string]any{"count": lim.Extruders, "nozzleDiameter": 0.4, "sharedNozzle": false},
		"axes":     map[string]any{"x": axis(6000), "y": axis(6000), "z": axis(200), "e": axis(300)},
	}
}

func (s octoprint) opProfiles(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]any{"profiles": map[string]any{"_default": s.profile(q)}})
	return nil
}

func (s octoprint) opConnection(q *request) error {
	st := q.p.Printer.Status()
	state := octoStateText(st.State)
	if st.State == marlin.Disconnected {
		state = "Closed"
	}
	port := st.Port
	writeJSON(q.w, http.StatusOK, map[string]any{
		"current": map[string]any{"state": state, "port": port, "baudrate": st.Baud, "printerProfile": "_default"},
		"options": map[string]any{
			"ports": []string{port}, "baudrates": []int{st.Baud},
			"printerProfiles":          []map[string]any{{"id": "_default", "name": q.p.name}},
			"portPreference":           port,
			"baudratePreference":       st.Baud,
			"printerProfilePreference": "_default",
			"autoconnect":              true,
		},
	})
	return nil
}

func (s octoprint) opConnectionCommand(q *request) error {
	var body struct {
		Command string `json:"command"`
		// OctoPrint's connect options are accepted and not used: the gateway's configuration
		// names each printer's port and speed, and a client does not change it.
		Port           string `json:"port"`
		Baudrate       int    `json:"baudrate"`
		PrinterProfile string `json:"printerProfile"`
		Save           bool   `json:"save"`
		Autoconnect    bool   `json:"autoconnect"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if err := s.connection(q, body.Command); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkOrigin accepts the "local" storage location; "sdcard" (and OctoPrint 2.0's
// "printer") are not offered: the policy refuses SD card commands.
func checkOrigin(q *request) error {
	switch o := q.r.PathValue("origin"); o {
	case "", "local":
		return nil
	case "sdcard", "printer":
		return errorf(http.StatusNotFound, "SD card storage is not available")
	default:
		return errorf(http.StatusNotFound, "unknown location %q", clip(o, 20))
	}
}

func (s octoprint) opFiles(q *request) error {
	if err := checkOrigin(q); err != nil {
		return err
	}
	recursive := parseBool(q.r.URL.Query().Get("recursive"))
	list, err := q.p.Files.List("", recursive)
	if err != nil {
		return err
	}
	free, total := diskSpace(q.p.Files)
	writeJSON(q.w, http.StatusOK, map[string]any{
		"files": octoTree(func(p string) string { return absURL(q.r, p) }, "", list),
		"free":  free,
		"total": total,
	})
	return nil
}

func (s octoprint) opFile(q *request) error {
	if err := checkOrigin(q); err != nil {
		return err
	}
	path := q.r.PathValue("path")
	fi, err := q.p.Files.Stat(path)
	if err != nil {
		return err
	}
	base := func(p string) string { return absURL(q.r, p) }
	f := octoFileOf(base, fi)
	if fi.Folder && parseBool(q.r.URL.Query().Get("recursive")) {
		list, err := q.p.Files.List(path, true)
		if err != nil {
			return err
		}
		f.Children = octoTree(base, path, list)
	} else if fi.Folder {
		list, err := q.p.Files.List(path, false)
		if err != nil {
			return err
		}
		f.Children = octoTree(base, path, list)
	}
	writeJSON(q.w, http.StatusOK, f)
	return nil
}

func (s octoprint) opFileCommand(q *request) error {
	if err := checkOrigin(q); err != nil {
		return err
	}
	var body struct {
		Command     string `json:"command"`
		Print       any    `json:"print"`
		Destination string `json:"destination"` // copy and move, which are not offered
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	path := q.r.PathValue("path")
	switch body.Command {
	case "select":
		print := false
		switch v := body.Print.(type) {
		case bool:
			print = v
		case string:
			print = parseBool(v)
		}
		if print && q.p.Printer.Status().State != marlin.Operational {
			return errorf(http.StatusConflict, "printer is not ready to print (%s)", q.p.Printer.Status().State)
		}
		if err := s.selectFile(q, path); err != nil {
			return err
		}
		if print {
			if err := s.startFile(q.r.Context(), q, path); err != nil {
				return err
			}
		}
	case "unselect":
		if jobActive(q.p.Printer.Status().State) {
			return errorf(http.StatusConflict, "printer is busy with a job")
		}
		q.p.mu.Lock()
		q.p.mu.selected = ""
		q.p.mu.Unlock()
	default:
		return errorf(http.StatusBadRequest, "unsupported file command %q", clip(body.Command, 20))
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s octoprint) opFileDelete(q *request) error {
	if err := checkOrigin(q); err != nil {
		return err
	}
	return s.deleteFile(q, q.r.PathValue("path"))
}

func (s octoprint) opDownload(q *request) error {
	if err := checkOrigin(q); err != nil {
		return err
	}
	return s.download(q, q.r.PathValue("path"))
}

func (s octoprint) opJob(q *request) error {
	writeJSON(q.w, http.StatusOK, q.p.jobOf(q.p.Printer.Status()))
	return nil
}

func (s octoprint) opJobCommand(q *request) error {
	var body struct {
		Command string `json:"command"`
		Action  string `json:"action"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	action := body.Command
	switch body.Command {
	case "start", "restart", "cancel":
	case "pause":
		switch body.Action {
		case "", "toggle":
			action = "toggle"
		case "pause", "resume":
			action = body.Action
		default:
			return errorf(http.StatusBadRequest, "unknown pause action %q", clip(body.Action, 20))
		}
	default:
		return errorf(http.StatusBadRequest, "unknown job command %q", clip(body.Command, 20))
	}
	if !operational(q.p.Printer.Status().State) {
		return errorf(http.StatusConflict, "printer is not operational")
	}
	if err := s.jobAction(q.r.Context(), q, action); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// notOperational is OctoPrint's 409 for printer state routes while disconnected.
var notOperational = &httpError{code: http.StatusConflict, msg: "Printer is not operational"}

func (s octoprint) opPrinter(q *request) error {
	hq, err := parseHistoryQuery(q.r.URL.Query())
	if err != nil {
		return err
	}
	st := q.p.Printer.Status()
	if !operational(st.State) {
		return notOperational
	}
	out := map[string]any{}
	if !hq.exclude["temperature"] {
		t := tempsMap(st.Temps, true)
		if hq.history {
			t["history"] = hq.entries(q.p.Printer.History())
		}
		out["temperature"] = t
	}
	if !hq.exclude["sd"] {
		out["sd"] = map[string]bool{"ready": false}
	}
	if !hq.exclude["state"] {
		out["state"] = stateOf(st)
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// heaterState renders GET /api/printer/tool or /bed: keep selects the heaters.
func (s octoprint) heaterState(q *request, keep func(string) bool) error {
	hq, err := parseHistoryQuery(q.r.URL.Query())
	if err != nil {
		return err
	}
	st := q.p.Printer.Status()
	if !operational(st.State) {
		return notOperational
	}
	out := map[string]any{}
	for k, v := range tempsMap(st.Temps, true) {
		if keep(k) {
			out[k] = v
		}
	}
	if hq.history {
		var hist []map[string]any
		for _, e := range hq.entries(q.p.Printer.History()) {
			h := map[string]any{"time": e["time"]}
			for k, v := range e {
				if keep(k) {
					h[k] = v
				}
			}
			hist = append(hist, h)
		}
		if hist == nil {
			hist = []map[string]any{}
		}
		out["history"] = hist
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

func (s octoprint) opTool(q *request) error {
	return s.heaterState(q, func(k string) bool { return strings.HasPrefix(k, "tool") })
}

func (s octoprint) opBed(q *request) error {
	return s.heaterState(q, func(k string) bool { return k == "bed" })
}

func (s octoprint) opToolCommand(q *request) error {
	var body struct {
		Command string             `json:"command"`
		Targets map[string]float64 `json:"targets"`
		Offsets map[string]float64 `json:"offsets"`
		Tool    string             `json:"tool"`
		Amount  *float64           `json:"amount"`
		Speed   *float64           `json:"speed"`
		Factor  *float64           `json:"factor"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if !operational(q.p.Printer.Status().State) {
		return notOperational
	}
	ctx := q.r.Context()
	var err error
	switch body.Command {
	case "target":
		for k := range body.Targets {
			if !strings.HasPrefix(k, "tool") {
				return errorf(http.StatusBadRequest, "bad tool name %q", clip(k, 20))
			}
		}
		err = s.setTargets(ctx, q, body.Targets)
	case "offset":
		for _, v := range body.Offsets {
			if v != 0 {
				return errorf(http.StatusBadRequest, "temperature offsets are not supported: set the target instead")
			}
		}
	case "select":
		n, ok := strings.CutPrefix(body.Tool, "tool")
		if _, aerr := strconv.Atoi(n); !ok || aerr != nil {
			return errorf(http.StatusBadRequest, "bad tool %q", clip(body.Tool, 20))
		}
		if jobActive(q.p.Printer.Status().State) {
			return errorf(http.StatusConflict, "printer is busy with a job")
		}
		err = s.sendAudited(ctx, q, "tool", map[string]string{"tool": body.Tool}, []string{"T" + n})
	case "extrude":
		if body.Amount == nil {
			return errorf(http.StatusBadRequest, "extrude needs an amount")
		}
		if jobActive(q.p.Printer.Status().State) {
			return errorf(http.StatusConflict, "printer is busy with a job")
		}
		move := "G1 E" + fmtNum(*body.Amount)
		if body.Speed != nil && *body.Speed > 0 {
			move += " F" + fmtNum(*body.Speed)
		} else {
			move += " F300"
		}
		err = s.sendAudited(ctx, q, "extrude", map[string]string{"line": move}, []string{"M83", move, "M82"})
	case "flowrate":
		if body.Factor == nil {
			return errorf(http.StatusBadRequest, "flowrate needs a factor")
		}
		line := "M221 S" + fmtNum(*body.Factor)
		err = s.sendAudited(ctx, q, "flowrate", map[string]string{"line": line}, []string{line})
	default:
		return errorf(http.StatusBadRequest, "unknown tool command %q", clip(body.Command, 20))
	}
	if err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s octoprint) opBedCommand(q *request) error {
	var body struct {
		Command string   `json:"command"`
		Target  *float64 `json:"target"`
		Offset  *float64 `json:"offset"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if !operational(q.p.Printer.Status().State) {
		return notOperational
	}
	switch body.Command {
	case "target":
		if body.Target == nil {
			return errorf(http.StatusBadRequest, "target missing")
		}
		if err := s.setTargets(q.r.Context(), q, map[string]float64{"bed": *body.Target}); err != nil {
			return err
		}
	case "offset":
		if body.Offset != nil && *body.Offset != 0 {
			return errorf(http.StatusBadRequest, "temperature offsets are not supported: set the target instead")
		}
	default:
		return errorf(http.StatusBadRequest, "unknown bed command %q", clip(body.Command, 20))
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s octoprint) opPrintheadCommand(q *request) error {
	var axes []string
	var raw struct {
		Command string          `json:"command"`
		X       float64         `json:"x"`
		Y       float64         `json:"y"`
		Z       float64         `json:"z"`
		Axes    json.RawMessage `json:"axes"`
		Speed   *float64        `json:"speed"`
		Factor  *float64        `json:"factor"`
		// Absolute jogs are OctoPrint's; ours are relative, so an absolute one is refused
		// rather than read as relative.
		Absolute bool `json:"absolute"`
	}
	if err := decodeJSON(q, &raw); err != nil {
		return err
	}
	body := raw
	if len(raw.Axes) > 0 {
		// "axes" is a list, or a single axis as a string.
		if err := json.Unmarshal(raw.Axes, &axes); err != nil {
			var one string
			if json.Unmarshal(raw.Axes, &one) != nil {
				return errorf(http.StatusBadRequest, "bad axes")
			}
			axes = []string{one}
		}
	}
	if !operational(q.p.Printer.Status().State) {
		return notOperational
	}
	ctx := q.r.Context()
	var err error
	switch body.Command {
	case "jog":
		if body.Absolute {
			return errorf(http.StatusBadRequest, "absolute jogs are not supported: jog by a relative distance")
		}
		feed := 0.0
		if body.Speed != nil {
			feed = *body.Speed
		}
		err = s.jog(ctx, q, body.X, body.Y, body.Z, feed)
	case "home":
		err = s.home(ctx, q, axes)
	case "feedrate":
		if body.Factor == nil {
			return errorf(http.StatusBadRequest, "feedrate needs a factor")
		}
		f := *body.Factor
		if f > 0 && f <= 2 && f != float64(int(f)) {
			f *= 100 // OctoPrint accepts 0..1 fractions and percentages alike
		}
		line := "M220 S" + fmtNum(f)
		err = s.sendAudited(ctx, q, "feedrate", map[string]string{"line": line}, []string{line})
	default:
		return errorf(http.StatusBadRequest, "unknown printhead command %q", clip(body.Command, 20))
	}
	if err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// maxBatch caps the lines of one /api/printer/command request.
const maxBatch = 100

func (s octoprint) opCommand(q *request) error {
	var body struct {
		Command  string   `json:"command"`
		Commands []string `json:"commands"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	lines := body.Commands
	if body.Command != "" {
		lines = append([]string{body.Command}, lines...)
	}
	if len(lines) == 0 {
		return errorf(http.StatusBadRequest, "no command given")
	}
	if len(lines) > maxBatch {
		return errorf(http.StatusBadRequest, "at most %d commands per request", maxBatch)
	}
	// A line of several commands separated by newlines is several lines.
	var split []string
	for _, l := range lines {
		for _, part := range strings.Split(l, "\n") {
			if part = strings.TrimSpace(part); part != "" {
				split = append(split, part)
			}
		}
	}
	if len(split) == 0 || len(split) > maxBatch {
		return errorf(http.StatusBadRequest, "between 1 and %d commands per request", maxBatch)
	}
	for _, l := range split {
		if len(l) > 4096 {
			return errorf(http.StatusBadRequest, "command line too long")
		}
	}
	if !q.role.Includes(enroll.Operator) {
		if err := s.stopOnly(q, split); err != nil {
			return err
		}
	}
	if !operational(q.p.Printer.Status().State) {
		return notOperational
	}
	err := s.sendAudited(q.r.Context(), q, audit.ActionTerminal, map[string]string{"lines": clip(strings.Join(split, "; "), 500)}, split)
	if err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}
