package printerd

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// This file holds what both HTTP faces share: the one mapping from errors to a status and a
// JSON body, reading JSON bodies and history queries, and the file download and delete both
// faces offer. The OctoPrint face is api_octoprint.go (and sockjs.go, upload.go, appkeys.go),
// the native face api_native.go (and push.go, ui.go); routes.go maps routes to both.

// httpError is an error with the status it maps to. Handlers return it (or any error) and
// writeError is the one place that turns errors into a status and a JSON body.
type httpError struct {
	code int
	msg  string
	err  error // wrapped, may be nil
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.err }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// conflict wraps a printer's refusal to act in its current state (409).
func conflict(err error) error {
	return &httpError{code: http.StatusConflict, msg: err.Error(), err: err}
}

// errorBody is the JSON of every error: OctoPrint's {"error": "..."} plus, for a policy
// refusal, the rule and command so that clients and the web UI can name the rule.
type errorBody struct {
	Error   string `json:"error"`
	Rule    string `json:"rule,omitempty"`
	Command string `json:"command,omitempty"`
	Line    int    `json:"line,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// ErrorID names a 500 in the error log, which repeats it beside the cause.
	ErrorID string `json:"error_id,omitempty"`
}

// statusOf maps an error to its HTTP status and body.
func statusOf(err error) (int, errorBody) {
	var he *httpError
	var ref *policy.Refusal
	var me *http.MaxBytesError
	body := errorBody{Error: err.Error()}
	code := http.StatusInternalServerError
	switch {
	case errors.As(err, &ref):
		code = http.StatusUnprocessableEntity
		body.Rule, body.Command, body.Line, body.Reason = string(ref.Rule), ref.Command, ref.Line, ref.Reason
		if errors.As(err, &he) && he.code >= 400 && he.code != http.StatusInternalServerError {
			code = he.code
		}
	case errors.As(err, &he):
		code = he.code
	case errors.As(err, &me), errors.Is(err, files.ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, files.ErrBadExtension):
		code = http.StatusUnsupportedMediaType
	case errors.Is(err, files.ErrBadName), errors.Is(err, files.ErrIncomplete):
		code = http.StatusBadRequest
	case errors.Is(err, files.ErrNotRegular), errors.Is(err, fs.ErrNotExist):
		code = http.StatusNotFound
	case errors.Is(err, files.ErrNotEmpty), errors.Is(err, fs.ErrExist):
		code = http.StatusConflict
	case errors.Is(err, files.ErrNoSpace), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// A full disk (or the reserve kept for roster and audit): say so, without host paths.
		code = http.StatusInsufficientStorage
		body.Error = files.ErrNoSpace.Error()
	}
	if code == http.StatusInternalServerError {
		// Disk and internal errors can carry host paths: say less.
		body.Error = "internal error"
	}
	return code, body
}

// writeError writes err as JSON with its status. A 500 tells the client only an error id; the
// error log gets the id with the cause, so what a user reports can be found. Other errors
// are the client's to read and are logged at verbose level.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, body := statusOf(err)
	if code == http.StatusInternalServerError {
		body.ErrorID = newErrorID()
		body.Error += " (error id " + body.ErrorID + ")"
		s.errorf("printerd: %s %q: error id %s: %v", r.Method, r.URL.Path, body.ErrorID, err)
	} else {
		s.logf("printerd: %s %q: %d: %v", r.Method, r.URL.Path, code, err)
	}
	writeJSON(w, code, body)
}

// newErrorID returns 8 random hex digits.
func newErrorID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeJSON writes v as the JSON body with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b)
	w.Write([]byte("\n"))
}

// maxJSONBody caps JSON request bodies.
const maxJSONBody = 64 << 10

// decodeJSON reads a JSON body into v, strictly (enroll.DecodeStrict): unknown fields,
// duplicate keys (also in another case: encoding/json would keep the last) and trailing data
// are refused with 400, so what a request says is what every reader of it sees. Only
// application/json is accepted: form content types, which a cross-site page can send without
// a preflight, are refused (415).
func decodeJSON(q *request, v any) error {
	mt, _, err := mime.ParseMediaType(q.r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return errorf(http.StatusUnsupportedMediaType, "expected content-type application/json")
	}
	b, err := io.ReadAll(http.MaxBytesReader(q.w, q.r.Body, maxJSONBody))
	if err != nil {
		var me *http.MaxBytesError
		var he *httpError
		if errors.As(err, &me) {
			return errorf(http.StatusRequestEntityTooLarge, "request body too large")
		}
		if errors.As(err, &he) {
			return err // a body too slow (408)
		}
		return errorf(http.StatusBadRequest, "reading the request body failed")
	}
	if err := enroll.DecodeStrict(b, v); err != nil {
		return errorf(http.StatusBadRequest, "malformed JSON body: %s", clip(strings.TrimPrefix(err.Error(), "json: "), 120))
	}
	return nil
}

// parseBool reads OctoPrint's booleans: true, yes, y, 1 (any case) are true.
func parseBool(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "y", "1", "on":
		return true
	}
	return false
}

// historyQuery is ?history=&limit=&exclude= of /api/printer and friends.
type historyQuery struct {
	history bool
	limit   int // 0: all
	exclude map[string]bool
}

// parseHistoryQuery parses the query of /api/printer, /api/printer/tool and /api/printer/bed.
func parseHistoryQuery(v url.Values) (historyQuery, error) {
	h := historyQuery{history: parseBool(v.Get("history")), exclude: map[string]bool{}}
	if ls := v.Get("limit"); ls != "" {
		n, err := strconv.Atoi(ls)
		if err != nil || n < 0 {
			return h, errorf(http.StatusBadRequest, "bad limit")
		}
		h.limit = n
	}
	if ex := v.Get("exclude"); ex != "" {
		for _, e := range strings.Split(ex, ",") {
			switch e = strings.TrimSpace(e); e {
			case "temperature", "sd", "state":
				h.exclude[e] = true
			case "":
			default:
				return h, errorf(http.StatusBadRequest, "bad exclude")
			}
		}
	}
	return h, nil
}

func (h historyQuery) entries(all []marlin.Temps) []map[string]any {
	if h.limit > 0 && len(all) > h.limit {
		all = all[len(all)-h.limit:]
	}
	out := make([]map[string]any, 0, len(all))
	for _, t := range all {
		out = append(out, historyEntry(t))
	}
	return out
}

// diskSpace asks the store for free and total bytes when it can tell.
func diskSpace(f Files) (free, total int64) {
	if d, ok := f.(interface {
		DiskSpace() (free, total int64, err error)
	}); ok {
		if fr, to, err := d.DiskSpace(); err == nil {
			return fr, to
		}
	}
	return 0, 0
}

func (s actions) deleteFile(q *request, path string) error {
	if q.p.inUse(path) {
		return errorf(http.StatusConflict, "file is being printed")
	}
	err := s.act(q, "delete", map[string]string{"file": path}, func() error { return q.p.Files.Delete(path) })
	if err != nil {
		return err
	}
	q.p.mu.Lock()
	if q.p.mu.selected == path {
		q.p.mu.selected = ""
	}
	q.p.mu.Unlock()
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// download serves a stored file as an attachment, never as something a browser renders.
func (s actions) download(q *request, path string) error {
	f, err := q.p.Files.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := q.w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", "attachment; filename*=UTF-8''"+url.PathEscape(f.Info.Name))
	h.Set("Content-Length", strconv.FormatInt(f.Size(), 10))
	h.Set("Cache-Control", "no-store")
	q.w.WriteHeader(http.StatusOK)
	if q.r.Method == http.MethodHead {
		return nil
	}
	_, err = io.Copy(q.w, io.NewSectionReader(f, 0, f.Size()))
	if err != nil {
		s.logf("printerd: download %s: %v", path, err)
	}
	return nil
}
