package printerd

import (
	"net/http"
	"net/netip"

	"github.com/printgate/printgate/enroll"
)

// This file is the route table of both faces and the mux built from it; auth.go holds the
// checks every route passes before its handler runs.

// face says where a route is served.
type face uint8

const (
	faceGateway face = 1 << iota // gateway address: web UI, native API, push, metrics
	facePrinter                  // a printer's address: the OctoPrint-compatible API
)

// route is one row of the table: every route of both faces, with the role it needs.
type route struct {
	face    face
	pattern string      // net/http ServeMux pattern, method first
	need    enroll.Role // the least role allowed
	h       func(s *Server, q *request) error
}

// request is one authorized request.
type request struct {
	w      http.ResponseWriter
	r      *http.Request
	caller Caller
	role   enroll.Role // the caller's role, narrowed by an API key
	p      *printer    // the printer: the face's own, or {printer} on the gateway; nil otherwise
	remote netip.Addr  // the connection's tunnel address: the identity
}

// routes is THE route table: route → required role, for the native and the
// OctoPrint-compatible API alike. authz_test.go walks it route by route for every role.
//
// Viewer: state, temperatures, job progress, file list, webcam, the UI itself.
// Operator: upload, select, start/pause/resume/cancel, temperatures and moves within policy,
// connect/disconnect. Admin: devices, terminal, app-key grants, audit log, metrics.
var routes = []route{
	// OctoPrint-compatible API on a printer's address (octoprint-api.md).
	{facePrinter, "GET /api/version", enroll.Viewer, (*Server).opVersion},
	{facePrinter, "GET /api/server", enroll.Viewer, (*Server).opServer},
	{facePrinter, "POST /api/login", enroll.Viewer, (*Server).opLogin},
	{facePrinter, "POST /api/logout", enroll.Viewer, (*Server).opLogout},
	{facePrinter, "GET /api/currentuser", enroll.Viewer, (*Server).opCurrentUser},
	{facePrinter, "GET /api/settings", enroll.Viewer, (*Server).opSettings},
	{facePrinter, "GET /api/printerprofiles", enroll.Viewer, (*Server).opProfiles},
	{facePrinter, "GET /api/connection", enroll.Viewer, (*Server).opConnection},
	{facePrinter, "POST /api/connection", enroll.Operator, (*Server).opConnectionCommand},
	{facePrinter, "GET /api/files", enroll.Viewer, (*Server).opFiles},
	{facePrinter, "GET /api/files/{origin}", enroll.Viewer, (*Server).opFiles},
	{facePrinter, "POST /api/files/{origin}", enroll.Operator, (*Server).opUpload},
	{facePrinter, "GET /api/files/{origin}/{path...}", enroll.Viewer, (*Server).opFile},
	{facePrinter, "POST /api/files/{origin}/{path...}", enroll.Operator, (*Server).opFileCommand},
	{facePrinter, "DELETE /api/files/{origin}/{path...}", enroll.Operator, (*Server).opFileDelete},
	{facePrinter, "GET /downloads/files/{origin}/{path...}", enroll.Viewer, (*Server).opDownload},
	{facePrinter, "GET /api/job", enroll.Viewer, (*Server).opJob},
	{facePrinter, "POST /api/job", enroll.Operator, (*Server).opJobCommand},
	{facePrinter, "GET /api/printer", enroll.Viewer, (*Server).opPrinter},
	{facePrinter, "GET /api/printer/tool", enroll.Viewer, (*Server).opTool},
	{facePrinter, "POST /api/printer/tool", enroll.Operator, (*Server).opToolCommand},
	{facePrinter, "GET /api/printer/bed", enroll.Viewer, (*Server).opBed},
	{facePrinter, "POST /api/printer/bed", enroll.Operator, (*Server).opBedCommand},
	{facePrinter, "POST /api/printer/printhead", enroll.Operator, (*Server).opPrintheadCommand},
	{facePrinter, "POST /api/printer/command", enroll.Operator, (*Server).opCommand},
	{facePrinter, "GET /plugin/appkeys/probe", enroll.Viewer, (*Server).opAppKeysProbe},
	{facePrinter, "POST /plugin/appkeys/request", enroll.Viewer, (*Server).opAppKeysRequest},
	{facePrinter, "GET /plugin/appkeys/request/{token}", enroll.Viewer, (*Server).opAppKeysPoll},
	{facePrinter, "GET /sockjs/websocket", enroll.Viewer, (*Server).opSockJS},
	{facePrinter, "GET /webcam/stream", enroll.Viewer, (*Server).webcamStream},
	{facePrinter, "GET /webcam/snapshot", enroll.Viewer, (*Server).webcamSnapshot},
	{facePrinter, "GET /{$}", enroll.Viewer, (*Server).opIndex},

	// The web UI and native JSON API on the gateway address.
	{faceGateway, "GET /{$}", enroll.Viewer, (*Server).uiAsset},
	{faceGateway, "GET /ui/{file}", enroll.Viewer, (*Server).uiAsset},
	{faceGateway, "GET /api/v1/whoami", enroll.Viewer, (*Server).nWhoAmI},
	{faceGateway, "GET /api/v1/printers", enroll.Viewer, (*Server).nPrinters},
	{faceGateway, "GET /api/v1/printers/{printer}", enroll.Viewer, (*Server).nPrinter},
	{faceGateway, "GET /api/v1/printers/{printer}/temps", enroll.Viewer, (*Server).nTemps},
	{faceGateway, "GET /api/v1/printers/{printer}/files", enroll.Viewer, (*Server).nFiles},
	{faceGateway, "POST /api/v1/printers/{printer}/files", enroll.Operator, (*Server).nUpload},
	{faceGateway, "DELETE /api/v1/printers/{printer}/files/{path...}", enroll.Operator, (*Server).nFileDelete},
	{faceGateway, "GET /api/v1/printers/{printer}/download/{path...}", enroll.Viewer, (*Server).nDownload},
	{faceGateway, "POST /api/v1/printers/{printer}/print", enroll.Operator, (*Server).nPrint},
	{faceGateway, "POST /api/v1/printers/{printer}/job", enroll.Operator, (*Server).nJob},
	{faceGateway, "POST /api/v1/printers/{printer}/connection", enroll.Operator, (*Server).nConnection},
	{faceGateway, "POST /api/v1/printers/{printer}/temperature", enroll.Operator, (*Server).nTemperature},
	{faceGateway, "POST /api/v1/printers/{printer}/jog", enroll.Operator, (*Server).nJog},
	{faceGateway, "POST /api/v1/printers/{printer}/home", enroll.Operator, (*Server).nHome},
	{faceGateway, "POST /api/v1/printers/{printer}/emergency", enroll.Operator, (*Server).nEmergency},
	{faceGateway, "POST /api/v1/printers/{printer}/terminal", enroll.Admin, (*Server).nTerminal},
	{faceGateway, "GET /api/v1/printers/{printer}/webcam/stream", enroll.Viewer, (*Server).webcamStream},
	{faceGateway, "GET /api/v1/printers/{printer}/webcam/snapshot", enroll.Viewer, (*Server).webcamSnapshot},
	{faceGateway, "GET /api/v1/push", enroll.Viewer, (*Server).nPush},
	{faceGateway, "GET /api/v1/devices", enroll.Admin, (*Server).nDevices},
	{faceGateway, "POST /api/v1/devices", enroll.Admin, (*Server).nEnroll},
	{faceGateway, "DELETE /api/v1/devices/{name}", enroll.Admin, (*Server).nRevoke},
	{faceGateway, "GET /api/v1/appkeys", enroll.Admin, (*Server).nAppKeys},
	{faceGateway, "POST /api/v1/appkeys/{token}", enroll.Admin, (*Server).nAppKeyDecision},
	{faceGateway, "GET /api/v1/audit", enroll.Admin, (*Server).nAudit},
	{faceGateway, "GET /api/v1/audit/verify", enroll.Admin, (*Server).nAuditVerify},
	{faceGateway, "GET /metrics", enroll.Admin, (*Server).nMetrics},
}

// handler builds one face's handler from the route table. p is the printer of a printer face.
func (s *Server) handler(f face, p *printer) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		if rt.face&f == 0 {
			continue
		}
		mux.Handle(rt.pattern, s.wrap(rt, p))
	}
	// Everything else: the peer must still be known before it learns that a path is missing.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := s.authenticate(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		s.writeError(w, r, errorf(http.StatusNotFound, "no such route: %s %s", r.Method, r.URL.Path))
	})
	return s.front(mux)
}
