package printerd

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/qr"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
)

// This file is the native JSON API on the gateway address, /api/v1/…, used by the web UI. It
// shares the printer actions (ops.go) and the route table with the OctoPrint face.

// native is the gateway's face: the web UI (ui.go), the native JSON API here, its push
// (push.go), app-key grants (appkeys.go) and metrics. Like octoprint it is built on the shared
// actions and keeps the receiver name s.
type native struct{ actions }

func (s native) nWhoAmI(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]any{"name": q.caller.Name, "role": q.role, "peer_role": q.caller.Role})
	return nil
}

func (s native) nPrinters(q *request) error {
	out := make([]nativeStatus, 0, len(s.names))
	for _, n := range s.names {
		p := s.printers[n]
		out = append(out, p.nativeStatus(p.Printer.Status()))
	}
	// "mesh": the printers of the mesh's other gateways (name, gateway, addresses), reached
	// at their own addresses through this gateway.
	elsewhere := []MeshPrinter{}
	if s.cfg.Mesh != nil {
		elsewhere = append(elsewhere, s.cfg.Mesh.Printers()...)
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"printers": out, "mesh": elsewhere})
	return nil
}

func (s native) nPrinter(q *request) error {
	writeJSON(q.w, http.StatusOK, q.p.nativeStatus(q.p.Printer.Status()))
	return nil
}

func (s native) nTemps(q *request) error {
	hq, err := parseHistoryQuery(q.r.URL.Query())
	if err != nil {
		return err
	}
	all := q.p.Printer.History()
	if hq.limit > 0 && len(all) > hq.limit {
		all = all[len(all)-hq.limit:]
	}
	if all == nil {
		all = []marlin.Temps{}
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"history": all})
	return nil
}

// nativeFile is a stored file as the UI lists it.
type nativeFile struct {
	files.FileInfo
	Estimate float64 `json:"estimate"` // seconds; 0 unknown
	Printing bool    `json:"printing"`
}

func (s native) nFiles(q *request) error {
	list, err := q.p.Files.List("", true)
	if err != nil {
		return err
	}
	out := make([]nativeFile, 0, len(list))
	for _, fi := range list {
		out = append(out, nativeFile{FileInfo: fi, Estimate: fi.Estimate.Seconds(), Printing: !fi.Folder && q.p.inUse(fi.Path)})
	}
	free, total := diskSpace(q.p.Files)
	writeJSON(q.w, http.StatusOK, map[string]any{"files": out, "free": free, "total": total})
	return nil
}

func (s native) nUpload(q *request) error {
	res, err := s.receiveUpload(q, uploadPathParam(q.r.URL.Query()))
	if err != nil {
		return err
	}
	writeJSON(q.w, http.StatusCreated, map[string]any{
		"file": res.info, "selected": res.effectiveSelect, "printing": res.effectivePrint,
	})
	return nil
}

func (s native) nFileDelete(q *request) error { return s.deleteFile(q, q.r.PathValue("path")) }

func (s native) nDownload(q *request) error { return s.download(q, q.r.PathValue("path")) }

func (s native) nPrint(q *request) error {
	var body struct {
		Path string `json:"path"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if err := s.selectFile(q, body.Path); err != nil {
		return err
	}
	if err := s.startFile(q.r.Context(), q, body.Path); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nJob(q *request) error {
	var body struct {
		Action string `json:"action"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if err := s.jobAction(q.r.Context(), q, body.Action); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nConnection(q *request) error {
	var body struct {
		Action string `json:"action"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if body.Action == "fake_ack" {
		return errorf(http.StatusBadRequest, "unknown action")
	}
	if err := s.connection(q, body.Action); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nTemperature(q *request) error {
	var body struct {
		Heater string   `json:"heater"`
		Target *float64 `json:"target"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if body.Target == nil {
		return errorf(http.StatusBadRequest, "target missing")
	}
	if err := s.setTargets(q.r.Context(), q, map[string]float64{body.Heater: *body.Target}); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nJog(q *request) error {
	var body struct {
		X, Y, Z float64
		Feed    float64 `json:"feed"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if err := s.jog(q.r.Context(), q, body.X, body.Y, body.Z, body.Feed); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nHome(q *request) error {
	var body struct {
		Axes []string `json:"axes"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if err := s.home(q.r.Context(), q, body.Axes); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nEmergency(q *request) error {
	if err := s.emergency(q); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s native) nTerminal(q *request) error {
	var body struct {
		Command string `json:"command"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if body.Command == "" {
		return errorf(http.StatusBadRequest, "no command given")
	}
	if err := s.terminal(q.r.Context(), q, []string{body.Command}); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) devices() (Devices, error) {
	if s.cfg.Devices == nil {
		return nil, errorf(http.StatusServiceUnavailable, "devices are not available on this gateway")
	}
	return s.cfg.Devices, nil
}

func (s native) nDevices(q *request) error {
	d, err := s.devices()
	if err != nil {
		return err
	}
	out := d.Peers() // one view for the CLI, the control socket and this API
	if out == nil {
		out = []enroll.PeerView{}
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"devices": out})
	return nil
}

// nEnroll enrolls a device and returns its secrets once: the QR code (SVG, and as a data URL
// for an <img>), the wg-quick config and the API key. Nothing of them is kept.
func (s native) nEnroll(q *request) error {
	d, err := s.devices()
	if err != nil {
		return err
	}
	var body struct {
		Name       string      `json:"name"`
		Role       enroll.Role `json:"role"`
		TTL        string      `json:"ttl"`
		APIKeyRole enroll.Role `json:"api_key_role"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	req := enroll.Request{Name: body.Name, Role: body.Role, APIKeyRole: body.APIKeyRole}
	if body.TTL != "" {
		ttl, err := enroll.ParseTTL(body.TTL)
		if err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		req.TTL = ttl
	}
	in, err := s.begin(q, audit.ActionEnroll, map[string]string{"device": body.Name, "role": string(body.Role)})
	if err != nil {
		return err
	}
	e, err := d.Enroll(req)
	s.end(in, err, nil)
	if err != nil {
		if errors.Is(err, enroll.ErrInvalid) {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		if errors.Is(err, enroll.ErrUnavailable) { // a mesh without quorum: try again later
			return errorf(http.StatusServiceUnavailable, "%v", err)
		}
		return conflict(err)
	}
	defer e.Forget()
	code, err := qr.Encode(e.Config)
	if err != nil {
		return err
	}
	svg := code.SVG()
	q.w.Header().Set("Cache-Control", "no-store")
	writeJSON(q.w, http.StatusCreated, map[string]any{
		"name":        e.Peer.Name,
		"role":        e.Peer.Role,
		"address":     e.Peer.IPv4,
		"expires_at":  e.Peer.ExpiresAt,
		"config":      e.Config,
		"api_key":     e.APIKey,
		"qr_svg":      svg,
		"qr_data_url": "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(svg)),
	})
	return nil
}

func (s native) nRevoke(q *request) error {
	d, err := s.devices()
	if err != nil {
		return err
	}
	name := q.r.PathValue("name")
	in, err := s.begin(q, audit.ActionRevoke, map[string]string{"device": name})
	if err != nil {
		return err
	}
	_, err = d.Revoke(name)
	s.end(in, err, nil)
	if err != nil {
		if errors.Is(err, enroll.ErrNotFound) {
			return errorf(http.StatusNotFound, "no device named %q", clip(name, 40))
		}
		return conflict(err)
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// auditJSON is one audit record for the UI.
type auditJSON struct {
	Seq    uint64            `json:"seq"`
	Time   time.Time         `json:"time"`
	Peer   string            `json:"peer"`
	Role   string            `json:"role"`
	Action string            `json:"action"`
	Args   map[string]string `json:"args"`
	Result string            `json:"result"`
	Hash   string            `json:"hash"`
}

func (s native) nAudit(q *request) error {
	if s.cfg.Audit == nil {
		return errorf(http.StatusServiceUnavailable, "no audit log on this gateway")
	}
	n := 100
	if v := q.r.URL.Query().Get("n"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 || k > 10000 {
			return errorf(http.StatusBadRequest, "bad n")
		}
		n = k
	}
	recs, err := s.cfg.Audit.Tail(n)
	if err != nil {
		return err
	}
	out := make([]auditJSON, 0, len(recs))
	for _, r := range recs {
		out = append(out, auditJSON{Seq: r.Seq, Time: r.Time, Peer: r.Peer, Role: r.Role, Action: r.Action, Args: r.Args, Result: r.Result, Hash: r.Hash})
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"records": out})
	return nil
}

func (s native) nAuditVerify(q *request) error {
	if s.cfg.VerifyAudit == nil {
		return errorf(http.StatusServiceUnavailable, "audit verification is not available on this gateway")
	}
	h, err := s.cfg.VerifyAudit()
	out := map[string]any{"ok": err == nil, "seq": h.Seq, "hash": h.Hash}
	if err != nil {
		out["error"] = err.Error()
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// nMeshInvite makes a join token for a new gateway and returns it once; nothing of it is
// kept here (the gateway keeps its one-time public key until it is used or expires).
func (s native) nMeshInvite(q *request) error {
	var body struct {
		TTL string `json:"ttl"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if s.cfg.Mesh == nil {
		return errorf(http.StatusServiceUnavailable, "mesh invitations are not available on this gateway")
	}
	var ttl time.Duration
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil {
			return errorf(http.StatusBadRequest, "ttl %q: want a duration such as 15m", clip(body.TTL, 40))
		}
		ttl = d
	}
	in, err := s.begin(q, audit.ActionMeshInvite, map[string]string{"ttl": body.TTL})
	if err != nil {
		return err
	}
	token, expires, err := s.cfg.Mesh.Invite(q.r.Context(), ttl)
	s.end(in, err, nil)
	switch {
	case errors.Is(err, enroll.ErrInvalid):
		return errorf(http.StatusBadRequest, "%v", err)
	case errors.Is(err, enroll.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, "%v", err)
	case err != nil:
		return err
	}
	q.w.Header().Set("Cache-Control", "no-store")
	writeJSON(q.w, http.StatusCreated, map[string]any{"token": token, "expires_at": expires})
	return nil
}
