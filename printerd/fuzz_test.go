package printerd

import (
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"testing"
)

// FuzzUpload feeds arbitrary multipart bodies (field names, file names, values, framing) to
// the upload handler. Whatever comes in: no panic, a 201 or a 4xx, nothing listed unless 201,
// nothing written beside the uploads root, nothing sent to the printer.
func FuzzUpload(f *testing.F) {
	f.Add("file", "a.gcode", "G28\n", "path", "", true)
	f.Add("file", "../x.gcode", "G28\n", "path", "../..", true)
	f.Add("file", "a.gcode", "M997\n", "print", "true", true)
	f.Add("file.path", "", "/etc/passwd", "file.name", "x.gcode", true)
	f.Add("file", "a.gcode", "G28\n", "foldername", "new", false)
	f.Add("foldername", "", "d", "path", "a/b", true)
	f.Add("file", "a\x00.gcode", "G28", "select", "yes", true)
	f.Fuzz(func(t *testing.T, name1, filename, value1, name2, value2 string, terminate bool) {
		h := newHarness(t)
		parts := []formPart{{name: name1, filename: filename, value: value1}, {name: name2, value: value2}}
		w := h.do(uploadReq(operatorAddr, "/api/files/local", parts, terminate))
		switch w.Code {
		case 201, 400, 404, 409, 413, 415, 422:
		default:
			t.Fatalf("upload = %d (%s)", w.Code, w.Body)
		}
		list := h.listing()
		if w.Code != 201 && len(list) > 0 {
			t.Fatalf("upload = %d but %q listed", w.Code, list)
		}
		for _, p := range list {
			if strings.Contains(p, "..") || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") {
				t.Fatalf("stored path %q", p)
			}
		}
		ents, _ := os.ReadDir(h.dir)
		if len(ents) != 1 || ents[0].Name() != "uploads" {
			t.Fatalf("beside the uploads root: %v", ents)
		}
		if len(h.pr.lines()) != 0 {
			t.Fatalf("upload sent %q", h.pr.lines())
		}
	})
}

// FuzzPartName checks the Content-Disposition parsing of parts.
func FuzzPartName(f *testing.F) {
	f.Add(`form-data; name="file"; filename="a.gcode"`)
	f.Add(`form-data; name="file"; filename*=UTF-8''..%2F..%2Fevil.gcode`)
	f.Add(`attachment; filename="x"`)
	f.Add(`form-data; name="file"; filename="a\"b"`)
	f.Fuzz(func(t *testing.T, cd string) {
		h := textproto.MIMEHeader{"Content-Disposition": {cd}}
		name, filename, isFile, err := partName(h)
		if err != nil && (name != "" || filename != "" || isFile) {
			t.Fatalf("partName(%q) = %q %q %v with error %v", cd, name, filename, isFile, err)
		}
	})
}

// FuzzQuery checks the query parsers: history/limit/exclude, booleans, the API key and the
// internal-field screen.
func FuzzQuery(f *testing.F) {
	f.Add("history=true&limit=10&exclude=temperature,sd")
	f.Add("limit=-1")
	f.Add("limit=99999999999999999999")
	f.Add("apikey=abc&apikey=def")
	f.Add("file.path=%2Fetc%2Fpasswd&recursive=YES")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		hq, err := parseHistoryQuery(v)
		if err == nil && hq.limit < 0 {
			t.Fatalf("limit %d from %q", hq.limit, raw)
		}
		for k := range hq.exclude {
			if k != "temperature" && k != "sd" && k != "state" {
				t.Fatalf("exclude %q from %q", k, raw)
			}
		}
		parseBool(v.Get("recursive"))
		for k := range v {
			if internalField(k) != strings.HasPrefix(strings.ToLower(strings.TrimSpace(k)), "file.") {
				t.Fatalf("internalField(%q) disagrees", k)
			}
		}
		r, _ := http.NewRequest("GET", "http://10.99.0.11/api/version?"+raw, nil)
		if r != nil {
			apiKey(r)
		}
	})
}

// FuzzHost checks the Host parser: what it accepts is a clean host without a port.
func FuzzHost(f *testing.F) {
	for _, s := range []string{"10.99.0.11", "10.99.0.11:80", "[fd00::1]:80", "[fd00::1", "printgate.internal", "a:b:c", "x:99999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		host, ok := hostOnly(h)
		if !ok {
			return
		}
		if !validHostHeader(h) || strings.ContainsAny(host, "[]") || host == "" && h != "" && h[0] != '[' && h[0] != ':' {
			t.Fatalf("hostOnly(%q) = %q", h, host)
		}
	})
}

// FuzzUnframe checks the bridge's line unframing: any N…*cs line it accepts had a matching
// checksum, and framing a command then unframing it gives the command back.
func FuzzUnframe(f *testing.F) {
	f.Add("N1 G28*18", "G1 X1", int64(5))
	f.Add("N99999999999999999999 M105", "M105", int64(0))
	f.Add("*", "", int64(-3))
	f.Fuzz(func(t *testing.T, line, cmd string, n int64) {
		unframe(line)
		cmd = strings.TrimSpace(cmd)
		if n < 0 || strings.ContainsAny(cmd, "*\n\r") || cmd == "" || cmd[0] >= '0' && cmd[0] <= '9' {
			return
		}
		got, gn, ok := unframe(numbered(int(n), cmd))
		if !ok || got != cmd || gn != n {
			t.Fatalf("unframe(numbered(%d, %q)) = %q, %d, %v", n, cmd, got, gn, ok)
		}
	})
}
