package printerd

import (
	"bytes"
	"io/fs"
	"net/http"
	"path"
	"time"

	"github.com/printgate/printgate/printerd/webui"
)

// uiTypes are the only files the UI serves, with their types.
var uiTypes = map[string]string{
	"index.html": "text/html; charset=utf-8",
	"app.css":    "text/css; charset=utf-8",
	"app.js":     "text/javascript; charset=utf-8",
}

// uiAsset serves the embedded web UI: "/" is index.html, "/ui/<file>" the rest.
func (s native) uiAsset(q *request) error {
	name := q.r.PathValue("file")
	if name == "" {
		name = "index.html"
	}
	typ, ok := uiTypes[path.Base(name)]
	if !ok || name != path.Base(name) {
		return errorf(http.StatusNotFound, "no such file")
	}
	b, err := fs.ReadFile(webui.FS, name)
	if err != nil {
		return errorf(http.StatusNotFound, "no such file")
	}
	q.w.Header().Set("Content-Type", typ)
	q.w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(q.w, q.r, name, time.Time{}, bytes.NewReader(b))
	return nil
}
