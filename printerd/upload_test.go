package printerd

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listing returns the paths the store lists.
func (h *harness) listing() []string {
	h.t.Helper()
	list, err := h.store.List("", true)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, f := range list {
		out = append(out, f.Path)
	}
	return out
}

func TestUploadEdgeCases(t *testing.T) {
	big := strings.Repeat("G1 X1 Y1\n", (1<<20)/9+1000) // over the harness's 1 MiB cap
	file := func(name string) formPart { return formPart{name: "file", filename: name, value: goodGcode} }
	tests := []struct {
		name      string
		target    string
		parts     []formPart
		raw       string // a raw body instead of parts
		ctype     string
		terminate bool
		want      int
		wantList  []string
	}{
		{"plain", "/api/files/local", []formPart{file("a.gcode")}, "", "", true, 201, []string{"a.gcode"}},
		{"into folder", "/api/files/local", []formPart{{name: "path", value: "sub/dir"}, file("a.gcode")}, "", "", true, 201, []string{"sub", "sub/dir", "sub/dir/a.gcode"}},
		{"path after file", "/api/files/local", []formPart{file("a.gcode"), {name: "path", value: "late"}}, "", "", true, 201, []string{"late", "late/a.gcode"}},
		{"unterminated", "/api/files/local", []formPart{file("a.gcode")}, "", "", false, 400, nil},
		{"truncated mid-file", "/api/files/local", nil, "--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.gcode\"\r\n\r\nG28\nG1 X", "", false, 400, nil},
		{"too large", "/api/files/local", []formPart{{name: "file", filename: "big.gcode", value: big}}, "", "", true, 413, nil},
		{"no file", "/api/files/local", []formPart{{name: "select", value: "true"}}, "", "", true, 400, nil},
		{"no filename", "/api/files/local", []formPart{{name: "file", value: goodGcode}}, "", "", true, 400, nil},
		{"two files", "/api/files/local", []formPart{file("a.gcode"), file("b.gcode")}, "", "", true, 400, nil},
		{"traversal", "/api/files/local", []formPart{file("../../etc/passwd.gcode")}, "", "", true, 400, nil},
		{"encoded traversal", "/api/files/local", []formPart{file("..%2f..%2fx.gcode")}, "", "", true, 400, nil},
		{"absolute", "/api/files/local", []formPart{file("/etc/x.gcode")}, "", "", true, 400, nil},
		{"backslash", "/api/files/local", []formPart{file(`..\x.gcode`)}, "", "", true, 400, nil},
		{"dot dot name", "/api/files/local", []formPart{file("..gcode")}, "", "", true, 400, nil},
		{"hidden", "/api/files/local", []formPart{file(".x.gcode")}, "", "", true, 400, nil},
		{"NUL", "/api/files/local", []formPart{file("a\x00.gcode")}, "", "", true, 400, nil},
		{"long name", "/api/files/local", []formPart{file(strings.Repeat("a", 300) + ".gcode")}, "", "", true, 400, nil},
		{"unicode slash", "/api/files/local", []formPart{file("a\u2215b.gcode")}, "", "", true, 400, nil},
		{"path traversal", "/api/files/local", []formPart{{name: "path", value: "../.."}, file("a.gcode")}, "", "", true, 400, nil},
		{"path absolute", "/api/files/local", []formPart{{name: "path", value: "a/../../b"}, file("a.gcode")}, "", "", true, 400, nil},
		{"rfc5987 traversal", "/api/files/local", nil, "--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fevil.gcode\r\n\r\nG28\n\r\n--" + testBoundary + "--\r\n", "", true, 400, nil},
		{"html", "/api/files/local", []formPart{{name: "file", filename: "x.html", value: "<script>alert(1)</script>"}}, "", "", true, 415, nil},
		{"svg", "/api/files/local", []formPart{{name: "file", filename: "x.svg", value: "<svg/>"}}, "", "", true, 415, nil},
		{"internal field file.path", "/api/files/local", []formPart{{name: "file.path", value: "/etc/passwd"}, {name: "file.name", value: "p.gcode"}}, "", "", true, 400, nil},
		{"internal field after file", "/api/files/local", []formPart{file("a.gcode"), {name: "FILE.PATH", value: "/etc/passwd"}}, "", "", true, 400, nil},
		{"internal query", "/api/files/local?file.path=/etc/passwd&file.name=p.gcode", []formPart{file("a.gcode")}, "", "", true, 400, nil},
		{"refused line", "/api/files/local", []formPart{{name: "file", filename: "flash.gcode", value: "G28\nM997\n"}}, "", "", true, 422, nil},
		{"refused temperature", "/api/files/local", []formPart{{name: "file", filename: "hot.gcode", value: "M104 S400\n"}}, "", "", true, 422, nil},
		{"not multipart", "/api/files/local", nil, "G28\n", "application/octet-stream", true, 400, nil},
		{"sdcard", "/api/files/sdcard", []formPart{file("a.gcode")}, "", "", true, 404, nil},
		{"mkdir", "/api/files/local", []formPart{{name: "foldername", value: "new"}, {name: "path", value: ""}}, "", "", true, 201, []string{"new"}},
		{"mkdir traversal", "/api/files/local", []formPart{{name: "foldername", value: ".."}}, "", "", true, 400, nil},
		{"native", "/api/v1/printers/mk3/files?path=n", []formPart{file("a.gcode")}, "", "", true, 201, []string{"n", "n/a.gcode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			parent := h.dir
			before, _ := os.ReadDir(parent)
			r := uploadReq(operatorAddr, tt.target, tt.parts, tt.terminate)
			if tt.raw != "" || tt.parts == nil {
				r.body = tt.raw
			}
			if tt.ctype != "" {
				r.ctype = tt.ctype
			}
			if strings.HasPrefix(tt.target, "/api/v1/") {
				r.to = gwAddr
			}
			w := h.do(r)
			if w.Code != tt.want {
				t.Errorf("upload = %d (%s), want %d", w.Code, w.Body, tt.want)
			}
			if got := h.listing(); strings.Join(got, ",") != strings.Join(tt.wantList, ",") {
				t.Errorf("listed %q, want %q", got, tt.wantList)
			}
			after, _ := os.ReadDir(parent)
			if len(after) != len(before) {
				t.Errorf("something was written beside the uploads root: %v → %v", before, after)
			}
			if len(h.pr.lines()) != 0 {
				t.Errorf("an upload sent %q to the printer", h.pr.lines())
			}
		})
	}
}

func TestUploadNoOverwriteAndFolders(t *testing.T) {
	h := newHarness(t)
	up := func(parts ...formPart) int {
		return h.do(uploadReq(operatorAddr, "/api/files/local", parts, true)).Code
	}
	if c := up(formPart{name: "file", filename: "a.gcode", value: goodGcode}); c != http.StatusCreated {
		t.Fatalf("upload = %d", c)
	}
	if c := up(formPart{name: "noOverwrite", value: "true"}, formPart{name: "file", filename: "a.gcode", value: goodGcode}); c != http.StatusConflict {
		t.Errorf("noOverwrite on an existing file = %d, want 409", c)
	}
	if c := up(formPart{name: "path", value: "box"}, formPart{name: "file", filename: "b.gcode", value: goodGcode}); c != http.StatusCreated {
		t.Fatalf("upload into box = %d", c)
	}
	w := h.do(req{method: "GET", target: "/api/files?recursive=true", from: viewerAddr})
	m := decode(t, w)
	fl := m["files"].([]any)
	var folder map[string]any
	for _, f := range fl {
		if f.(map[string]any)["type"] == "folder" {
			folder = f.(map[string]any)
		}
	}
	if folder == nil || len(folder["children"].([]any)) != 1 {
		t.Fatalf("recursive listing = %s", w.Body)
	}
	child := folder["children"].([]any)[0].(map[string]any)
	has(t, "file record", child, "name", "path", "type", "typePath", "origin", "size", "date", "refs.resource", "refs.download")
	if child["path"] != "box/b.gcode" || child["refs"].(map[string]any)["download"] != "http://10.99.0.11/downloads/files/local/box/b.gcode" {
		t.Errorf("child = %v", child)
	}
	has(t, "files", m, "free", "total")
	w = h.do(req{method: "GET", target: "/api/files/local/box/b.gcode", from: viewerAddr})
	if w.Code != http.StatusOK || decode(t, w)["name"] != "b.gcode" {
		t.Errorf("file info = %d %s", w.Code, w.Body)
	}
	if w := h.do(req{method: "GET", target: "/api/files/local/nope.gcode", from: viewerAddr}); w.Code != http.StatusNotFound {
		t.Errorf("missing file info = %d, want 404", w.Code)
	}
	if w := h.do(req{method: "DELETE", target: "/api/files/local/box", from: operatorAddr}); w.Code != http.StatusConflict {
		t.Errorf("delete non-empty folder = %d, want 409", w.Code)
	}
	if w := h.do(req{method: "POST", target: "/api/files/local/box/b.gcode", from: operatorAddr, body: `{"command":"select"}`}); w.Code != http.StatusNoContent {
		t.Errorf("select = %d", w.Code)
	}
	if j := decode(t, h.do(req{method: "GET", target: "/api/job", from: viewerAddr})); j["job"].(map[string]any)["file"].(map[string]any)["path"] != "box/b.gcode" {
		t.Errorf("job after select = %v", j)
	}
	if w := h.do(req{method: "POST", target: "/api/files/local/box/b.gcode", from: operatorAddr, body: `{"command":"slice"}`}); w.Code != http.StatusBadRequest {
		t.Errorf("slice = %d, want 400", w.Code)
	}
}

// TestUploadStreams: the file reaches the disk while the body is still arriving, so an upload
// is never held whole in memory.
func TestUploadStreams(t *testing.T) {
	h := newHarness(t)
	pr, pw := io.Pipe()
	head := "--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.gcode\"\r\n\r\n"
	chunk := strings.Repeat("G1 X10 Y10\n", 1<<14) // 176 KiB
	hr := httptest.NewRequest("POST", "http://10.99.0.11/api/files/local", pr)
	hr = hr.WithContext(WithConnAddrs(hr.Context(), operatorAddr, printerAddr))
	hr.Header.Set("Content-Type", "multipart/form-data; boundary="+testBoundary)
	hr.Header.Set("X-Api-Key", "oscar-key")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		handler, _ := h.s.PrinterHandler("mk3")
		handler.ServeHTTP(w, hr)
	}()
	if _, err := io.WriteString(pw, head+chunk+chunk+chunk); err != nil {
		t.Fatal(err)
	}
	uploads := filepath.Join(h.dir, "uploads")
	waitFor(t, "temporary file on disk", func() bool {
		ents, _ := os.ReadDir(uploads)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".upload-") && fi.Size() >= int64(len(chunk)) {
				return true
			}
		}
		return false
	})
	if got := h.listing(); len(got) != 0 {
		t.Errorf("listed %q before the upload ended", got)
	}
	io.WriteString(pw, chunk+"\r\n--"+testBoundary+"--\r\n")
	pw.Close()
	<-done
	if w.Code != http.StatusCreated {
		t.Fatalf("upload = %d %s", w.Code, w.Body)
	}
	if fi, err := h.store.Stat("s.gcode"); err != nil || fi.Size != int64(4*len(chunk)) {
		t.Errorf("stored %+v, %v", fi, err)
	}
}

// TestSymlinkInUploads: a symlink planted in the uploads root is never listed, served,
// selected or deleted through the API, and nothing is written through it.
func TestSymlinkInUploads(t *testing.T) {
	h := newHarness(t)
	outside := filepath.Join(t.TempDir(), "secret.gcode")
	if err := os.WriteFile(outside, []byte("G28 ; secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(h.dir, "uploads", "evil.gcode")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(h.dir, "uploads", "evildir")); err != nil {
		t.Fatal(err)
	}
	if got := h.listing(); len(got) != 0 {
		t.Errorf("listed %q", got)
	}
	for _, r := range []req{
		{method: "GET", target: "/downloads/files/local/evil.gcode", from: viewerAddr},
		{method: "GET", target: "/api/files/local/evil.gcode", from: viewerAddr},
		{method: "GET", target: "/downloads/files/local/evildir/secret.gcode", from: viewerAddr},
		{method: "POST", target: "/api/files/local/evil.gcode", from: operatorAddr, body: `{"command":"select","print":true}`},
		{method: "DELETE", target: "/api/files/local/evil.gcode", from: operatorAddr},
	} {
		w := h.do(r)
		if w.Code < 400 || strings.Contains(w.Body.String(), "G28 ; secret") {
			t.Errorf("%s %s = %d %q, want a 4xx without the file", r.method, r.target, w.Code, w.Body)
		}
	}
	w := h.do(uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "path", value: "evildir"}, {name: "file", filename: "x.gcode", value: goodGcode}}, true))
	if w.Code < 400 {
		t.Errorf("upload into a symlinked folder = %d", w.Code)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(outside), "x.gcode")); err == nil {
		t.Errorf("upload written through the symlink")
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "G28 ; secret\n" {
		t.Errorf("outside file changed: %q %v", b, err)
	}
	if h.pr.Status().State != "operational" {
		t.Errorf("printer state %s", h.pr.Status().State)
	}
}
