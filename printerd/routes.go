package printerd

import (
	"net/http"
	"net/netip"

	"github.com/printgate/printgate/enroll"
)

// This file is the route table of both faces; auth.go builds each face's mux from it and holds
// the checks every route passes before its handler runs.

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
// Viewer: state, temperatures, job progress, file list, webcam, the UI itself, and the
// emergency stops: anyone enrolled who sees a printer start to burn on the webcam can stop it.
// Operator: upload, select, start/pause/resume/cancel, temperatures and moves within policy,
// connect/disconnect. Admin: devices, terminal, app-key grants, audit log, metrics.
var routes = []route{
	// OctoPrint-compatible API on a printer's address (octoprint-api.md).
	{facePrinter, "GET /api/version", enroll.Viewer, onOcto(octoprint.opVersion)},
	{facePrinter, "GET /api/server", enroll.Viewer, onOcto(octoprint.opServer)},
	{facePrinter, "POST /api/login", enroll.Viewer, onOcto(octoprint.opLogin)},
	{facePrinter, "POST /api/logout", enroll.Viewer, onOcto(octoprint.opLogout)},
	{facePrinter, "GET /api/currentuser", enroll.Viewer, onOcto(octoprint.opCurrentUser)},
	{facePrinter, "GET /api/settings", enroll.Viewer, onOcto(octoprint.opSettings)},
	{facePrinter, "GET /api/printerprofiles", enroll.Viewer, onOcto(octoprint.opProfiles)},
	{facePrinter, "GET /api/connection", enroll.Viewer, onOcto(octoprint.opConnection)},
	{facePrinter, "POST /api/connection", enroll.Operator, onOcto(octoprint.opConnectionCommand)},
	{facePrinter, "GET /api/files", enroll.Viewer, onOcto(octoprint.opFiles)},
	{facePrinter, "GET /api/files/{origin}", enroll.Viewer, onOcto(octoprint.opFiles)},
	{facePrinter, "POST /api/files/{origin}", enroll.Operator, onOcto(octoprint.opUpload)},
	{facePrinter, "GET /api/files/{origin}/{path...}", enroll.Viewer, onOcto(octoprint.opFile)},
	{facePrinter, "POST /api/files/{origin}/{path...}", enroll.Operator, onOcto(octoprint.opFileCommand)},
	{facePrinter, "DELETE /api/files/{origin}/{path...}", enroll.Operator, onOcto(octoprint.opFileDelete)},
	{facePrinter, "GET /downloads/files/{origin}/{path...}", enroll.Viewer, onOcto(octoprint.opDownload)},
	{facePrinter, "GET /api/job", enroll.Viewer, onOcto(octoprint.opJob)},
	{facePrinter, "POST /api/job", enroll.Operator, onOcto(octoprint.opJobCommand)},
	{facePrinter, "GET /api/printer", enroll.Viewer, onOcto(octoprint.opPrinter)},
	{facePrinter, "GET /api/printer/tool", enroll.Viewer, onOcto(octoprint.opTool)},
	{facePrinter, "POST /api/printer/tool", enroll.Operator, onOcto(octoprint.opToolCommand)},
	{facePrinter, "GET /api/printer/bed", enroll.Viewer, onOcto(octoprint.opBed)},
	{facePrinter, "POST /api/printer/bed", enroll.Operator, onOcto(octoprint.opBedCommand)},
	{facePrinter, "POST /api/printer/printhead", enroll.Operator, onOcto(octoprint.opPrintheadCommand)},
	// A viewer may send the emergency stops (M112, M108, M410) and nothing else: the handler
	// refuses any other line from a role below operator with 403 (stopOnly).
	{facePrinter, "POST /api/printer/command", enroll.Viewer, onOcto(octoprint.opCommand)},
	{facePrinter, "GET /api/printer/sd", enroll.Viewer, onOcto(octoprint.opSD)},
	{facePrinter, "GET /api/system/commands", enroll.Viewer, onOcto(octoprint.opSystemCommands)},
	{facePrinter, "GET /plugin/appkeys/probe", enroll.Viewer, onOcto(octoprint.opAppKeysProbe)},
	{facePrinter, "POST /plugin/appkeys/request", enroll.Viewer, onOcto(octoprint.opAppKeysRequest)},
	{facePrinter, "GET /plugin/appkeys/request/{token}", enroll.Viewer, onOcto(octoprint.opAppKeysPoll)},
	{facePrinter, "GET /sockjs/websocket", enroll.Viewer, onOcto(octoprint.opSockJS)},
	{facePrinter, "GET /webcam/stream", enroll.Viewer, (*Server).webcamStream},
	{facePrinter, "GET /webcam/snapshot", enroll.Viewer, (*Server).webcamSnapshot},
	{facePrinter, "GET /{$}", enroll.Viewer, onOcto(octoprint.opIndex)},

	// The web UI and native JSON API on the gateway address.
	{faceGateway, "GET /{$}", enroll.Viewer, onNative(native.uiAsset)},
	{faceGateway, "GET /ui/{file}", enroll.Viewer, onNative(native.uiAsset)},
	{faceGateway, "GET /api/v1/whoami", enroll.Viewer, onNative(native.nWhoAmI)},
	{faceGateway, "GET /api/v1/printers", enroll.Viewer, onNative(native.nPrinters)},
	{faceGateway, "GET /api/v1/printers/{printer}", enroll.Viewer, onNative(native.nPrinter)},
	{faceGateway, "GET /api/v1/printers/{printer}/temps", enroll.Viewer, onNative(native.nTemps)},
	{faceGateway, "GET /api/v1/printers/{printer}/files", enroll.Viewer, onNative(native.nFiles)},
	{faceGateway, "POST /api/v1/printers/{printer}/files", enroll.Operator, onNative(native.nUpload)},
	{faceGateway, "DELETE /api/v1/printers/{printer}/files/{path...}", enroll.Operator, onNative(native.nFileDelete)},
	{faceGateway, "GET /api/v1/printers/{printer}/download/{path...}", enroll.Viewer, onNative(native.nDownload)},
	{faceGateway, "POST /api/v1/printers/{printer}/print", enroll.Operator, onNative(native.nPrint)},
	{faceGateway, "POST /api/v1/printers/{printer}/job", enroll.Operator, onNative(native.nJob)},
	{faceGateway, "POST /api/v1/printers/{printer}/connection", enroll.Operator, onNative(native.nConnection)},
	{faceGateway, "POST /api/v1/printers/{printer}/temperature", enroll.Operator, onNative(native.nTemperature)},
	{faceGateway, "POST /api/v1/printers/{printer}/jog", enroll.Operator, onNative(native.nJog)},
	{faceGateway, "POST /api/v1/printers/{printer}/home", enroll.Operator, onNative(native.nHome)},
	{faceGateway, "POST /api/v1/printers/{printer}/emergency", enroll.Viewer, onNative(native.nEmergency)},
	{faceGateway, "POST /api/v1/printers/{printer}/terminal", enroll.Admin, onNative(native.nTerminal)},
	{faceGateway, "GET /api/v1/printers/{printer}/webcam/stream", enroll.Viewer, (*Server).webcamStream},
	{faceGateway, "GET /api/v1/printers/{printer}/webcam/snapshot", enroll.Viewer, (*Server).webcamSnapshot},
	{faceGateway, "GET /api/v1/push", enroll.Viewer, onNative(native.nPush)},
	{faceGateway, "GET /api/v1/devices", enroll.Admin, onNative(native.nDevices)},
	{faceGateway, "POST /api/v1/devices", enroll.Admin, onNative(native.nEnroll)},
	{faceGateway, "DELETE /api/v1/devices/{name}", enroll.Admin, onNative(native.nRevoke)},
	{faceGateway, "POST /api/v1/mesh/invite", enroll.Admin, onNative(native.nMeshInvite)},
	{faceGateway, "GET /api/v1/appkeys", enroll.Admin, onNative(native.nAppKeys)},
	{faceGateway, "POST /api/v1/appkeys/{token}", enroll.Admin, onNative(native.nAppKeyDecision)},
	{faceGateway, "GET /api/v1/audit", enroll.Admin, onNative(native.nAudit)},
	{faceGateway, "GET /api/v1/audit/verify", enroll.Admin, onNative(native.nAuditVerify)},
	{faceGateway, "GET /metrics", enroll.Admin, onNative(native.nMetrics)},
}

// onOcto and onNative make rows of the face handlers: the table stays one list of
// func(*Server, *request) error, and a face is a view of the Server, made per request.
func onOcto(h func(octoprint, *request) error) func(*Server, *request) error {
	return func(s *Server, q *request) error { return h(octoprint{actions{s}}, q) }
}

func onNative(h func(native, *request) error) func(*Server, *request) error {
	return func(s *Server, q *request) error { return h(native{actions{s}}, q) }
}
