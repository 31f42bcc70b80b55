package printerd

import (
	"net/http"
	"strings"
	"testing"
)

// jsonWrites is a valid body for every route that takes a JSON body; notJSON are the write
// routes that take none (multipart uploads, logout, the emergency stop that must never be
// refused for its body). TestStrictJSON fails when a write route is in neither.
var (
	jsonWrites = map[string]string{
		"POST /api/login":                             `{"passive":true}`,
		"POST /api/connection":                        `{"command":"connect"}`,
		"POST /api/files/{origin}/{path...}":          `{"command":"select"}`,
		"POST /api/job":                               `{"command":"start"}`,
		"POST /api/printer/tool":                      `{"command":"target","targets":{"tool0":50}}`,
		"POST /api/printer/bed":                       `{"command":"target","target":50}`,
		"POST /api/printer/printhead":                 `{"command":"home","axes":["x"]}`,
		"POST /api/printer/command":                   `{"command":"M105"}`,
		"POST /plugin/appkeys/request":                `{"app":"Cura"}`,
		"POST /api/v1/printers/{printer}/print":       `{"path":"a.gcode"}`,
		"POST /api/v1/printers/{printer}/job":         `{"action":"pause"}`,
		"POST /api/v1/printers/{printer}/connection":  `{"action":"connect"}`,
		"POST /api/v1/printers/{printer}/temperature": `{"heater":"bed","target":50}`,
		"POST /api/v1/printers/{printer}/jog":         `{"x":1}`,
		"POST /api/v1/printers/{printer}/home":        `{"axes":["x"]}`,
		"POST /api/v1/printers/{printer}/terminal":    `{"command":"M105"}`,
		"POST /api/v1/devices":                        `{"name":"newphone","role":"viewer"}`,
		"POST /api/v1/appkeys/{token}":                `{"decision":false}`,
		"POST /api/v1/mesh/invite":                    `{"ttl":"15m"}`,
	}
	notJSON = map[string]bool{
		"POST /api/logout":                          true,
		"POST /api/files/{origin}":                  true,
		"POST /api/v1/printers/{printer}/files":     true,
		"POST /api/v1/printers/{printer}/emergency": true,
	}
)

// TestStrictJSON: on every JSON write route, an unknown field, a duplicate key (in the same or
// another case) and trailing data are refused with 400 before anything happens.
func TestStrictJSON(t *testing.T) {
	for _, rt := range routes {
		method, _, _ := strings.Cut(rt.pattern, " ")
		if method == "GET" || method == "DELETE" || notJSON[rt.pattern] {
			continue
		}
		valid, ok := jsonWrites[rt.pattern]
		if !ok {
			t.Errorf("write route %q is in neither jsonWrites nor notJSON", rt.pattern)
			continue
		}
		// The first key, repeated: {"command":"M105","command":...}.
		key := valid[1:strings.Index(valid, ":")]
		bad := map[string]string{
			"unknown field":   valid[:len(valid)-1] + `,"surprise":1}`,
			"duplicate key":   valid[:len(valid)-1] + `,` + key + `:null}`,
			"key in new case": valid[:len(valid)-1] + `,` + strings.ToUpper(key) + `:null}`,
			"trailing data":   valid + `{}`,
		}
		for name, body := range bad {
			t.Run(rt.pattern+"/"+name, func(t *testing.T) {
				h := newHarness(t)
				method, path := concrete(rt.pattern)
				to := printerAddr
				if rt.face == faceGateway {
					to = gwAddr
				}
				w := h.do(req{method: method, target: path, from: adminAddr, to: to, body: body})
				if w.Code != http.StatusBadRequest {
					t.Errorf("%s %s %s = %d (%s), want 400", method, path, body, w.Code, w.Body)
				}
				if got := h.pr.lines(); len(got) > 0 {
					t.Errorf("%s %s %s sent %q to the printer", method, path, body, got)
				}
				if n := len(h.devices.Peers()); n != 2 {
					t.Errorf("%s %s %s: %d devices, want the 2 there were", method, path, body, n)
				}
			})
		}
	}
}

// TestEnrollDuplicateRole: {"role":"viewer","role":"admin"} enrolls nobody (encoding/json
// alone would enroll an admin: the last key wins).
func TestEnrollDuplicateRole(t *testing.T) {
	for _, body := range []string{
		`{"name":"eve","role":"viewer","role":"admin"}`,
		`{"name":"eve","role":"viewer","Role":"admin"}`,
		`{"name":"eve","role":"viewer","admin":true}`,
	} {
		h := newHarness(t)
		w := h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: body})
		if w.Code != http.StatusBadRequest {
			t.Errorf("POST /api/v1/devices %s = %d (%s), want 400", body, w.Code, w.Body)
		}
		for _, p := range h.devices.Peers() {
			if p.Name == "eve" {
				t.Errorf("POST /api/v1/devices %s enrolled %s as %s", body, p.Name, p.Role)
			}
		}
	}
}
