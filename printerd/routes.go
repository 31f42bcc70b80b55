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
	{facePrinter, "GET /api/version", enroll.Viewer, octo(octoprint.opVersion)},
	{facePrinter, "GET /api/server", enroll.Viewer, octo(octoprint.opServer)},
	{facePrinter, "POST /api/login", enroll.Viewer, octo(octoprint.opLogin)},
	{facePrinter, "POST /api/logout", enroll.Viewer, octo(octoprint.opLogout)},
	{facePrinter, "GET /api/currentuser", enroll.Viewer, octo(octoprint.opCurrentUser)},
	{facePrinter, "GET /api/settings", enroll.Viewer, octo(octoprint.opSettings)},
	{facePrinter, "GET /api/printerprofiles", enroll.Viewer, octo(octoprint.opProfiles)},
	{facePrinter, "GET /api/connection", enroll.Viewer, octo(octoprint.opConnection)},
	{facePrinter, "POST /api/connection", enroll.Operator, octo(octoprint.opConnectionCommand)},
	{facePrinter, "GET /api/files", enroll.Viewer, octo(octoprint.opFiles)},
	{facePrinter, "GET /api/files/{origin}", enroll.Viewer, octo(octoprint.opFiles)},
	{facePrinter, "POST /api/files/{origin}", enroll.Operator, octo(octoprint.opUpload)},
	{facePrinter, "GET /api/files/{origin}/{path...}", enroll.Viewer, octo(octoprint.opFile)},
	{facePrinter, "POST /api/files/{origin}/{path...}", enroll.Operator, octo(octoprint.opFileCommand)},
	{facePrinter, "DELETE /api/files/{origin}/{path...}", enroll.Operator, octo(octoprint.opFileDelete)},
	{facePrinter, "GET /downloads/files/{origin}/{path...}", enroll.Viewer, octo(octoprint.opDownload)},
	{facePrinter, "GET /api/job", enroll.Viewer, octo(octoprint.opJob)},
	{facePrinter, "POST /api/job", enroll.Operator, octo(octoprint.opJobCommand)},
	{facePrinter, "GET /api/printer", enroll.Viewer, octo(octoprint.opPrinter)},
	{facePrinter, "GET /api/printer/tool", enroll.Viewer, octo(octoprint.opTool)},
	{facePrinter, "POST /api/printer/tool", enroll.Operator, octo(octoprint.opToolCommand)},
	{facePrinter, "GET /api/printer/bed", enroll.Viewer, octo(octoprint.opBed)},
	{facePrinter, "POST /api/printer/bed", enroll.Operator, octo(octoprint.opBedCommand)},
	{facePrinter, "POST /api/printer/printhead", enroll.Operator, octo(octoprint.opPrintheadCommand)},
	{facePrinter, "POST /api/printer/command", enroll.Operator, octo(octoprint.opCommand)},
	{facePrinter, "GET /plugin/appkeys/probe", enroll.Viewer, octo(octoprint.opAppKeysProbe)},
	{facePrinter, "POST /plugin/appkeys/request", enroll.Viewer, octo(octoprint.opAppKeysRequest)},
	{facePrinter, "GET /plugin/appkeys/request/{token}", enroll.Viewer, octo(octoprint.opAppKeysPoll)},
	{facePrinter, "GET /sockjs/websocket", enroll.Viewer, octo(octoprint.opSockJS)},
	{facePrinter, "GET /webcam/stream", enroll.Viewer, (*Server).webcamStream},
	{facePrinter, "GET /webcam/snapshot", enroll.Viewer, (*Server).webcamSnapshot},
	{facePrinter, "GET /{$}", enroll.Viewer, octo(octoprint.opIndex)},

	// The web UI and native JSON API on the gateway address.
	{faceGateway, "GET /{$}", enroll.Viewer, nat(native.uiAsset)},
	{faceGateway, "GET /ui/{file}", enroll.Viewer, nat(native.uiAsset)},
	{faceGateway, "GET /api/v1/whoami", enroll.Viewer, nat(native.nWhoAmI)},
	{faceGateway, "GET /api/v1/printers", enroll.Viewer, nat(native.nPrinters)},
	{faceGateway, "GET /api/v1/printers/{printer}", enroll.Viewer, nat(native.nPrinter)},
	{faceGateway, "GET /api/v1/printers/{printer}/temps", enroll.Viewer, nat(native.nTemps)},
	{faceGateway, "GET /api/v1/printers/{printer}/files", enroll.Viewer, nat(native.nFiles)},
	{faceGateway, "POST /api/v1/printers/{printer}/files", enroll.Operator, nat(native.nUpload)},
	{faceGateway, "DELETE /api/v1/printers/{printer}/files/{path...}", enroll.Operator, nat(native.nFileDelete)},
	{faceGateway, "GET /api/v1/printers/{printer}/download/{path...}", enroll.Viewer, nat(native.nDownload)},
	{faceGateway, "POST /api/v1/printers/{printer}/print", enroll.Operator, nat(native.nPrint)},
	{faceGateway, "POST /api/v1/printers/{printer}/job", enroll.Operator, nat(native.nJob)},
	{faceGateway, "POST /api/v1/printers/{printer}/connection", enroll.Operator, nat(native.nConnection)},
	{faceGateway, "POST /api/v1/printers/{printer}/temperature", enroll.Operator, nat(native.nTemperature)},
	{faceGateway, "POST /api/v1/printers/{printer}/jog", enroll.Operator, nat(native.nJog)},
	{faceGateway, "POST /api/v1/printers/{printer}/home", enroll.Operator, nat(native.nHome)},
	{faceGateway, "POST /api/v1/printers/{printer}/emergency", enroll.Operator, nat(native.nEmergency)},
	{faceGateway, "POST /api/v1/printers/{printer}/terminal", enroll.Admin, nat(native.nTerminal)},
	{faceGateway, "GET /api/v1/printers/{printer}/webcam/stream", enroll.Viewer, (*Server).webcamStream},
	{faceGateway, "GET /api/v1/printers/{printer}/webcam/snapshot", enroll.Viewer, (*Server).webcamSnapshot},
	{faceGateway, "GET /api/v1/push", enroll.Viewer, nat(native.nPush)},
	{faceGateway, "GET /api/v1/devices", enroll.Admin, nat(native.nDevices)},
	{faceGateway, "POST /api/v1/devices", enroll.Admin, nat(native.nEnroll)},
	{faceGateway, "DELETE /api/v1/devices/{name}", enroll.Admin, nat(native.nRevoke)},
	{faceGateway, "GET /api/v1/appkeys", enroll.Admin, nat(native.nAppKeys)},
	{faceGateway, "POST /api/v1/appkeys/{token}", enroll.Admin, nat(native.nAppKeyDecision)},
	{faceGateway, "GET /api/v1/audit", enroll.Admin, nat(native.nAudit)},
	{faceGateway, "GET /api/v1/audit/verify", enroll.Admin, nat(native.nAuditVerify)},
	{faceGateway, "GET /metrics", enroll.Admin, nat(native.nMetrics)},
}

// octo and nat make rows of the face handlers: the table stays one list of
// func(*Server, *request) error, and a face is a view of the Server, made per request.
func octo(h func(octoprint, *request) error) func(*Server, *request) error {
	return func(s *Server, q *request) error { return h(octoprint{s}, q) }
}

func nat(h func(native, *request) error) func(*Server, *request) error {
	return func(s *Server, q *request) error { return h(native{s}, q) }
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
