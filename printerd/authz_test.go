package printerd

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/printgate/printgate/enroll"
)

// wantRole is the authorization table written down independently of routes: every route
// and the least role it needs. TestRouteTable fails when the two disagree or a route is
// missing here; TestAuthorizationByRoute then checks each route for each role.
var wantRole = map[string]enroll.Role{
	"GET /api/version":                                  enroll.Viewer,
	"GET /api/server":                                   enroll.Viewer,
	"POST /api/login":                                   enroll.Viewer,
	"POST /api/logout":                                  enroll.Viewer,
	"GET /api/currentuser":                              enroll.Viewer,
	"GET /api/settings":                                 enroll.Viewer,
	"GET /api/printerprofiles":                          enroll.Viewer,
	"GET /api/connection":                               enroll.Viewer,
	"POST /api/connection":                              enroll.Operator,
	"GET /api/files":                                    enroll.Viewer,
	"GET /api/files/{origin}":                           enroll.Viewer,
	"POST /api/files/{origin}":                          enroll.Operator,
	"GET /api/files/{origin}/{path...}":                 enroll.Viewer,
	"POST /api/files/{origin}/{path...}":                enroll.Operator,
	"DELETE /api/files/{origin}/{path...}":              enroll.Operator,
	"GET /downloads/files/{origin}/{path...}":           enroll.Viewer,
	"GET /api/job":                                      enroll.Viewer,
	"POST /api/job":                                     enroll.Operator,
	"GET /api/printer":                                  enroll.Viewer,
	"GET /api/printer/tool":                             enroll.Viewer,
	"POST /api/printer/tool":                            enroll.Operator,
	"GET /api/printer/bed":                              enroll.Viewer,
	"POST /api/printer/bed":                             enroll.Operator,
	"POST /api/printer/printhead":                       enroll.Operator,
	"POST /api/printer/command":                         enroll.Viewer, // stops only below operator: stopOnly
	"GET /plugin/appkeys/probe":                         enroll.Viewer,
	"GET /api/printer/sd":                               enroll.Viewer,
	"GET /api/system/commands":                          enroll.Viewer,
	"POST /plugin/appkeys/request":                      enroll.Viewer,
	"GET /plugin/appkeys/request/{token}":               enroll.Viewer,
	"GET /sockjs/websocket":                             enroll.Viewer,
	"GET /webcam/stream":                                enroll.Viewer,
	"GET /webcam/snapshot":                              enroll.Viewer,
	"GET /{$}":                                          enroll.Viewer,
	"GET /ui/{file}":                                    enroll.Viewer,
	"GET /api/v1/whoami":                                enroll.Viewer,
	"GET /api/v1/printers":                              enroll.Viewer,
	"GET /api/v1/printers/{printer}":                    enroll.Viewer,
	"GET /api/v1/printers/{printer}/temps":              enroll.Viewer,
	"GET /api/v1/printers/{printer}/files":              enroll.Viewer,
	"POST /api/v1/printers/{printer}/files":             enroll.Operator,
	"DELETE /api/v1/printers/{printer}/files/{path...}": enroll.Operator,
	"GET /api/v1/printers/{printer}/download/{path...}": enroll.Viewer,
	"POST /api/v1/printers/{printer}/print":             enroll.Operator,
	"POST /api/v1/printers/{printer}/job":               enroll.Operator,
	"POST /api/v1/printers/{printer}/connection":        enroll.Operator,
	"POST /api/v1/printers/{printer}/temperature":       enroll.Operator,
	"POST /api/v1/printers/{printer}/jog":               enroll.Operator,
	"POST /api/v1/printers/{printer}/home":              enroll.Operator,
	"POST /api/v1/printers/{printer}/emergency":         enroll.Viewer,
	"POST /api/v1/printers/{printer}/terminal":          enroll.Admin,
	"GET /api/v1/printers/{printer}/webcam/stream":      enroll.Viewer,
	"GET /api/v1/printers/{printer}/webcam/snapshot":    enroll.Viewer,
	"GET /api/v1/push":                                  enroll.Viewer,
	"GET /api/v1/devices":                               enroll.Admin,
	"POST /api/v1/devices":                              enroll.Admin,
	"DELETE /api/v1/devices/{name}":                     enroll.Admin,
	"POST /api/v1/mesh/invite":                          enroll.Admin,
	"GET /api/v1/appkeys":                               enroll.Admin,
	"POST /api/v1/appkeys/{token}":                      enroll.Admin,
	"GET /api/v1/audit":                                 enroll.Admin,
	"GET /api/v1/audit/verify":                          enroll.Admin,
	"GET /metrics":                                      enroll.Admin,
}

func TestRouteTable(t *testing.T) {
	seen := map[string]bool{}
	for _, rt := range routes {
		want, ok := wantRole[rt.pattern]
		if !ok {
			t.Errorf("route %q is not in the test's table", rt.pattern)
			continue
		}
		key := fmt.Sprint(rt.face, rt.pattern)
		if seen[key] {
			t.Errorf("route %q listed twice on one face", rt.pattern)
		}
		seen[key], seen[rt.pattern] = true, true
		if rt.need != want {
			t.Errorf("route %q needs %s, want %s", rt.pattern, rt.need, want)
		}
	}
	for p := range wantRole {
		if !seen[p] {
			t.Errorf("route %q missing from the route table", p)
		}
	}
}

// concrete turns a route pattern into a request path.
func concrete(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.NewReplacer("{$}", "", "{printer}", "mk3", "{origin}", "local", "{path...}", "nothing.gcode",
		"{token}", "no-such-token", "{name}", "nobody", "{file}", "app.js").Replace(path)
	return method, path
}

func TestAuthorizationByRoute(t *testing.T) {
	callers := []struct {
		name string
		addr netip.Addr
		role enroll.Role // "" for a stranger
	}{
		{"admin", adminAddr, enroll.Admin},
		{"operator", operatorAddr, enroll.Operator},
		{"viewer", viewerAddr, enroll.Viewer},
		{"stranger", strangerAddr, ""},
	}
	for _, rt := range routes {
		for _, c := range callers {
			t.Run(rt.pattern+"/"+c.name, func(t *testing.T) {
				h := newHarness(t)
				method, path := concrete(rt.pattern)
				to := printerAddr
				if rt.face == faceGateway {
					to = gwAddr
				}
				w := h.do(req{method: method, target: path, from: c.addr, to: to, body: "{}"})
				allowed := c.role != "" && c.role.Includes(rt.need)
				if allowed && w.Code == http.StatusForbidden {
					t.Errorf("%s %s as %s = 403 (%s), want allowed", method, path, c.name, w.Body)
				}
				if !allowed && w.Code != http.StatusForbidden {
					t.Errorf("%s %s as %s = %d (%s), want 403", method, path, c.name, w.Code, w.Body)
				}
				if !allowed && len(h.pr.lines()) > 0 {
					t.Errorf("denied request sent %q to the printer", h.pr.lines())
				}
				if stopOnly[rt.pattern] && c.role != "" && !c.role.Includes(enroll.Operator) {
					// Below operator only the stops pass (TestViewerCanStop has the rest).
					w := h.do(req{method: method, target: path, from: c.addr, to: to, body: `{"command":"M104 S200"}`})
					if w.Code != http.StatusForbidden || len(h.pr.lines()) > 0 {
						t.Errorf("%s %s M104 as %s = %d, sent %q; want 403, nothing sent", method, path, c.name, w.Code, h.pr.lines())
					}
				}
			})
		}
	}
}

// TestAPIKeys: a key narrows, never widens; another peer's key is refused; a bad key is
// refused; no key means the peer's own role.
func TestAPIKeys(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		from   netip.Addr
		how    string // header, query, bearer
		key    string
		target string // an operator route
		want   int
	}{
		{"no key operator", operatorAddr, "", "", "/api/printer/bed", http.StatusNoContent},
		{"own key", operatorAddr, "header", "oscar-key", "/api/printer/bed", http.StatusNoContent},
		{"own key query", operatorAddr, "query", "oscar-key", "/api/printer/bed", http.StatusNoContent},
		{"own key bearer", operatorAddr, "bearer", "oscar-key", "/api/printer/bed", http.StatusNoContent},
		{"narrowing key", adminAddr, "header", "alice-viewer-key", "/api/printer/bed", http.StatusForbidden},
		{"widening key", viewerAddr, "header", "vera-admin-key", "/api/printer/bed", http.StatusForbidden},
		{"other peer's key", viewerAddr, "header", "oscar-key", "/api/printer/bed", http.StatusForbidden},
		{"other peer's key from admin", adminAddr, "header", "oscar-key", "/api/printer/bed", http.StatusForbidden},
		{"bad key", operatorAddr, "header", "nope", "/api/printer/bed", http.StatusForbidden},
		{"empty key", operatorAddr, "header", "", "/api/printer/bed", http.StatusForbidden},
		{"stranger with a valid key", strangerAddr, "header", "oscar-key", "/api/printer/bed", http.StatusForbidden},
		{"forwarded-for ignored", strangerAddr, "xff", "", "/api/printer/bed", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req{method: "POST", target: tt.target, from: tt.from, body: `{"command":"target","target":50}`, header: map[string]string{}}
			switch tt.how {
			case "header":
				r.header["X-Api-Key"] = tt.key
			case "query":
				r.target += "?apikey=" + tt.key
			case "bearer":
				r.header["Authorization"] = "Bearer " + tt.key
			case "xff":
				r.header["X-Forwarded-For"] = operatorAddr.String()
				r.header["X-Real-Ip"] = operatorAddr.String()
			}
			w := h.do(r)
			if w.Code != tt.want {
				t.Errorf("POST %s = %d (%s), want %d", tt.target, w.Code, w.Body, tt.want)
			}
		})
	}
	// A viewer whose key claims admin still reads as a viewer.
	w := h.do(req{method: "GET", target: "/api/currentuser", from: viewerAddr, header: map[string]string{"X-Api-Key": "vera-admin-key"}})
	if m := decode(t, w); strings.Contains(w.Body.String(), "ADMIN") || m["name"] != "vera" {
		t.Errorf("currentuser with a widening key = %s, want vera without ADMIN", w.Body)
	}
}

// stopOnly are the routes a role below operator may use only for the emergency stops: a viewer
// who sees a printer start to burn on the webcam can stop it, and do nothing else there.
var stopOnly = map[string]bool{"POST /api/printer/command": true}

// TestViewerCanStop: a viewer may send M112, M108 and M410 on the terminal route and use the
// native emergency endpoint, each audited; any other line from a viewer is 403 and reaches
// nothing, also when it rides in a batch behind a stop.
func TestViewerCanStop(t *testing.T) {
	for _, stop := range []string{"M112", "M108", "M410", "m112"} {
		t.Run(stop, func(t *testing.T) {
			h := newHarness(t)
			w := h.do(req{method: "POST", target: "/api/printer/command", from: viewerAddr, body: `{"command":"` + stop + `"}`})
			if w.Code != http.StatusNoContent {
				t.Fatalf("viewer %s = %d (%s), want 204", stop, w.Code, w.Body)
			}
			if got := h.pr.lines(); len(got) != 1 || !strings.EqualFold(got[0], stop) {
				t.Errorf("viewer %s sent %q", stop, got)
			}
			if acts := h.audit.actions(); len(acts) != 1 || acts[0] != "terminal" {
				t.Errorf("audit after viewer %s = %q, want one terminal record", stop, acts)
			}
		})
	}
	for _, body := range []string{
		`{"command":"M104 S200"}`,
		`{"commands":["M112","M104 S200"]}`,
		`{"command":"M105"}`,
		`{"command":"G28"}`,
	} {
		t.Run("refused "+body, func(t *testing.T) {
			h := newHarness(t)
			w := h.do(req{method: "POST", target: "/api/printer/command", from: viewerAddr, body: body})
			if w.Code != http.StatusForbidden {
				t.Errorf("viewer %s = %d (%s), want 403", body, w.Code, w.Body)
			}
			if got := h.pr.lines(); len(got) > 0 {
				t.Errorf("refused viewer batch sent %q", got)
			}
			if acts := h.audit.actions(); len(acts) != 1 || acts[0] != "refusal" {
				t.Errorf("audit after viewer %s = %q, want one refusal", body, acts)
			}
		})
	}
	t.Run("native emergency", func(t *testing.T) {
		h := newHarness(t)
		w := h.do(req{method: "POST", target: "/api/v1/printers/mk3/emergency", from: viewerAddr, to: gwAddr})
		if w.Code != http.StatusNoContent || h.pr.Status().State != "halted" {
			t.Errorf("viewer emergency = %d (%s), state %s; want 204, halted", w.Code, w.Body, h.pr.Status().State)
		}
		if acts := h.audit.actions(); len(acts) != 1 || acts[0] != "emergency" {
			t.Errorf("audit after viewer emergency = %q, want one emergency record", acts)
		}
	})
	t.Run("stranger", func(t *testing.T) {
		h := newHarness(t)
		w := h.do(req{method: "POST", target: "/api/printer/command", from: strangerAddr, body: `{"command":"M112"}`})
		if w.Code != http.StatusForbidden || len(h.pr.lines()) > 0 {
			t.Errorf("stranger M112 = %d, sent %q; want 403, nothing", w.Code, h.pr.lines())
		}
	})
}
