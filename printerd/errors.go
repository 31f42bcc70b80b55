package printerd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"

	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/policy"
)

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
	}
	if code == http.StatusInternalServerError {
		// Disk and internal errors can carry host paths: say less.
		body.Error = "internal error"
	}
	return code, body
}

// writeError writes err as JSON with its status.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, body := statusOf(err)
	if code == http.StatusInternalServerError {
		s.logf("printerd: %s %s: %v", r.Method, r.URL.Path, err)
	}
	writeJSON(w, code, body)
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
