package printerd

import (
	"net/http"
	"strings"
	"testing"
)

func TestHostCheck(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		host string
		want int
	}{
		{"10.99.0.11", http.StatusOK},
		{"10.99.0.11:80", http.StatusOK},
		{"printgate.internal", http.StatusOK},
		{"PrintGate.Internal:80", http.StatusOK},
		{"mk3", http.StatusOK},    // the printer's own name (printgate connect --socks)
		{"MK3:80", http.StatusOK}, // without case, with a port
		{"mk3.evil.example", http.StatusMisdirectedRequest},
		{"evil.example", http.StatusMisdirectedRequest},     // DNS rebinding
		{"10.99.0.1", http.StatusMisdirectedRequest},        // another tunnel address than this face's
		{"127.0.0.1", http.StatusMisdirectedRequest},        // not a tunnel address
		{"10.99.0.11:0", http.StatusMisdirectedRequest},     // bad port
		{"10.99.0.11:80:80", http.StatusMisdirectedRequest}, // junk
		{"10.99.0.11.evil.example", http.StatusMisdirectedRequest},
		{"", http.StatusMisdirectedRequest},
		{"[::ffff:10.99.0.11]", http.StatusOK}, // the same address, v4-mapped
		{"[fe80::1%25eth0]", http.StatusMisdirectedRequest},
		{"printgate.internal<script>", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			w := h.do(req{method: "GET", target: "/api/version", from: viewerAddr, header: map[string]string{"Host": tt.host}})
			if w.Code != tt.want {
				t.Errorf("GET /api/version Host %q = %d (%s), want %d", tt.host, w.Code, w.Body, tt.want)
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		noCSRF bool
		ctype  string
		want   int
	}{
		{"slicer: api key, no origin", map[string]string{"X-Api-Key": "oscar-key"}, true, "", http.StatusNoContent},
		{"ui: same origin + X-Printgate", map[string]string{"Origin": "http://10.99.0.11"}, false, "", http.StatusNoContent},
		{"ui: same origin with port", map[string]string{"Origin": "http://10.99.0.11:80", "Host": "10.99.0.11:80"}, false, "", http.StatusNoContent},
		{"no token header at all", nil, true, "", http.StatusForbidden},
		{"cross-origin page", map[string]string{"Origin": "http://evil.example"}, false, "", http.StatusForbidden},
		{"cross-origin page with key", map[string]string{"Origin": "http://evil.example", "X-Api-Key": "oscar-key"}, true, "", http.StatusForbidden},
		{"null origin", map[string]string{"Origin": "null"}, false, "", http.StatusForbidden},
		{"https origin", map[string]string{"Origin": "https://10.99.0.11"}, false, "", http.StatusForbidden},
		{"fetch metadata cross-site", map[string]string{"Sec-Fetch-Site": "cross-site"}, false, "", http.StatusForbidden},
		{"form post, same origin", map[string]string{"Origin": "http://10.99.0.11"}, false, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"text/plain post", nil, false, "text/plain", http.StatusUnsupportedMediaType},
		{"cookie only", map[string]string{"Cookie": "session=1"}, true, "", http.StatusForbidden},
		{"basic auth only", map[string]string{"Authorization": "Basic YTpi"}, true, "", http.StatusForbidden},
		{"bearer key", map[string]string{"Authorization": "Bearer oscar-key"}, true, "", http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			w := h.do(req{method: "POST", target: "/api/printer/bed", from: operatorAddr, body: `{"command":"target","target":50}`,
				header: tt.header, noCSRF: tt.noCSRF, ctype: tt.ctype})
			if w.Code != tt.want {
				t.Errorf("POST /api/printer/bed = %d (%s), want %d", w.Code, w.Body, tt.want)
			}
			if w.Code != http.StatusNoContent && len(h.pr.lines()) > 0 {
				t.Errorf("refused request reached the printer: %q", h.pr.lines())
			}
		})
	}
}

// TestCSRFAppKeys: Cura's key request carries no key, so a JSON body stands in for the
// header there, and only there; a page on another site still cannot make one.
func TestCSRFAppKeys(t *testing.T) {
	tests := []struct {
		name   string
		target string
		ctype  string
		header map[string]string
		want   int
	}{
		{"cura: json, no key", "/plugin/appkeys/request", "application/json", nil, http.StatusCreated},
		{"text/plain", "/plugin/appkeys/request", "text/plain", nil, http.StatusForbidden},
		{"form", "/plugin/appkeys/request", "application/x-www-form-urlencoded", nil, http.StatusForbidden},
		{"cross-origin json", "/plugin/appkeys/request", "application/json", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"json elsewhere is not enough", "/api/printer/command", "application/json", nil, http.StatusForbidden},
		{"key in the query", "/api/printer/command?apikey=oscar-key", "application/json", nil, http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			body := `{"app":"Cura"}`
			if strings.HasPrefix(tt.target, "/api/printer/command") {
				body = `{"command":"M105"}`
			}
			w := h.do(req{method: "POST", target: tt.target, from: operatorAddr, body: body, ctype: tt.ctype, header: tt.header, noCSRF: true})
			if w.Code != tt.want {
				t.Errorf("POST %s (%s) = %d (%s), want %d", tt.target, tt.ctype, w.Code, w.Body, tt.want)
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	h := newHarness(t)
	for _, r := range []req{
		{method: "GET", target: "/", from: viewerAddr, to: gwAddr},
		{method: "GET", target: "/ui/app.js", from: viewerAddr, to: gwAddr},
		{method: "GET", target: "/api/v1/printers", from: viewerAddr, to: gwAddr},
		{method: "GET", target: "/api/version", from: strangerAddr},
		{method: "GET", target: "/nope", from: viewerAddr, to: gwAddr},
	} {
		w := h.do(r)
		csp := w.Header().Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", r.target, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: CSP %q allows inline or eval", r.target, csp)
		}
		if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options = %q, want nosniff", r.target, got)
		}
		if ct := w.Header().Get("Content-Type"); strings.HasPrefix(ct, "text/html") && r.target != "/" {
			t.Errorf("GET %s: Content-Type %q, want no HTML outside the UI page", r.target, ct)
		}
	}
}

// TestNoHTMLEcho: input echoed in errors comes back only inside JSON, never as HTML.
func TestNoHTMLEcho(t *testing.T) {
	h := newHarness(t)
	evil := "<img src=x onerror=alert(1)>"
	for _, r := range []req{
		{method: "GET", target: "/api/files/local/" + "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E.gcode", from: viewerAddr},
		{method: "POST", target: "/api/job", from: operatorAddr, body: `{"command":"` + evil + `"}`},
		{method: "POST", target: "/api/printer/command", from: operatorAddr, body: `{"commands":["` + evil + `"]}`},
		{method: "GET", target: "/" + "%3Cscript%3E", from: viewerAddr, to: gwAddr},
	} {
		w := h.do(r)
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s %s: Content-Type %q, want JSON", r.method, r.target, ct)
		}
		if strings.Contains(w.Body.String(), "<img") || strings.Contains(w.Body.String(), "<script") {
			t.Errorf("%s %s: body %q echoes markup unescaped", r.method, r.target, w.Body)
		}
	}
}

func TestDownloadIsAttachment(t *testing.T) {
	h := newHarness(t)
	w := h.do(uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "part.gcode", value: goodGcode}}, true))
	if w.Code != http.StatusCreated {
		t.Fatalf("upload = %d (%s)", w.Code, w.Body)
	}
	for _, r := range []req{
		{method: "GET", target: "/downloads/files/local/part.gcode", from: viewerAddr},
		{method: "GET", target: "/api/v1/printers/mk3/download/part.gcode", from: viewerAddr, to: gwAddr},
	} {
		w := h.do(r)
		if w.Code != http.StatusOK || w.Body.String() != goodGcode {
			t.Fatalf("GET %s = %d %q", r.target, w.Code, w.Body)
		}
		if cd := w.Header().Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
			t.Errorf("GET %s: Content-Disposition %q, want attachment", r.target, cd)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("GET %s: Content-Type %q", r.target, ct)
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", r.target)
		}
	}
}
