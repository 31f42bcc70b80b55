// Package webui holds the web UI's static files (HTML, CSS, JS), embedded in the binary: no
// CDN, nothing fetched at run time, no inline script or style, so a strict CSP holds.
package webui

import "embed"

// FS holds index.html, app.css and app.js.
//
//go:embed index.html app.css app.js
var FS embed.FS
