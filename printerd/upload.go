package printerd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
)

// This file receives uploads. The body is a multipart/form-data stream read once, part by
// part: the file part is streamed straight into the store (never buffered whole), and the
// store only commits the file when our reader reports a clean end — which it does only after
// every part that follows the file has been read and the closing boundary seen. So an
// unterminated body, a second file, a smuggled internal field or an oversized body fails the
// store's Put and nothing is listed.

// uploadReadBuffer is how much of an upload body is read from the connection at once.
const uploadReadBuffer = 64 << 10

// maxFieldBytes caps one non-file form field.
const maxFieldBytes = 64 << 10

// uploadForm is what an upload carries besides the file's bytes.
type uploadForm struct {
	path        string // parent folder ("" root)
	pathAfter   bool   // path arrived after the file part
	filename    string // the file part's file name
	gotFile     bool
	selectFile  bool
	print       bool
	noOverwrite bool
	foldername  string
	hasFolder   bool
}

// uploadResult is a finished upload.
type uploadResult struct {
	info            files.FileInfo
	folder          bool
	effectiveSelect bool
	effectivePrint  bool
}

// internalField reports whether a field or query name is one of OctoPrint's internal upload
// fields (file.path, file.name, ...) that CVE-2025-48067 and CVE-2026-54134 smuggled in.
func internalField(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	return strings.HasPrefix(n, "file.")
}

// partName returns the form name and the raw file name of a part from its
// Content-Disposition, without multipart.Part.FileName's filepath.Base, so that a name with
// a slash is refused instead of silently shortened. RFC 5987 filename* is decoded by mime.
func partName(h textproto.MIMEHeader) (name, filename string, isFile bool, err error) {
	cd := h.Get("Content-Disposition")
	disp, params, err := mime.ParseMediaType(cd)
	if err != nil || disp != "form-data" {
		return "", "", false, errorf(http.StatusBadRequest, "bad multipart part header")
	}
	filename, isFile = params["filename"]
	return params["name"], filename, isFile, nil
}

// setField records one non-file field.
func (f *uploadForm) setField(name, value string) error {
	switch strings.ToLower(name) {
	case "path":
		f.path = strings.Trim(value, "/")
		f.pathAfter = f.gotFile
	case "select":
		f.selectFile = parseBool(value)
	case "print":
		f.print = parseBool(value)
	case "nooverwrite":
		f.noOverwrite = parseBool(value)
	case "foldername":
		f.foldername, f.hasFolder = value, true
	}
	// userdata, filename and anything else: ignored.
	return nil
}

// readField reads a non-file part's value.
func readField(p io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, maxFieldBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxFieldBytes {
		return "", errorf(http.StatusBadRequest, "form field too long")
	}
	return string(b), nil
}

// watchReader notes whether the request body hit its size cap.
type watchReader struct {
	r       io.Reader
	tooBig  bool
	readErr error
}

func (w *watchReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF {
		var me *http.MaxBytesError
		if errors.As(err, &me) {
			w.tooBig = true
		}
		w.readErr = err
	}
	return n, err
}

// fileReader is the file part as the store reads it. At the part's end it reads the rest of
// the form; only a clean end of the whole body is io.EOF.
type fileReader struct {
	part *multipart.Part
	rest func() error
	err  error // the first failure, kept for the status
	done bool
}

func (f *fileReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.done {
		return 0, io.EOF
	}
	n, err := f.part.Read(p)
	switch {
	case err == io.EOF:
		if rerr := f.rest(); rerr != nil {
			f.err = rerr
			return n, rerr
		}
		f.done = true
		return n, io.EOF
	case err != nil:
		f.err = fmt.Errorf("upload body: %w", err)
		return n, f.err
	}
	return n, nil
}

// receiveUpload reads an upload request (OctoPrint's form: file, path, select, print,
// noOverwrite, foldername) into q's printer's store. defaultPath is the folder when the form
// names none.
//
// It is written ahead: the intent is on disk before the first byte is stored, and the outcome
// names the file (or the folder an upload form created).
func (s actions) receiveUpload(q *request, defaultPath string) (uploadResult, error) {
	release, err := s.limits.uploads.acquire(s.deviceKey(q.remote))
	if err != nil {
		s.limits.pressure()
		return uploadResult{}, err
	}
	defer release()
	in, err := s.begin(q, audit.ActionUpload, nil)
	if err != nil {
		return uploadResult{}, err
	}
	res, err := s.receiveUploadLocked(q, defaultPath)
	var extra map[string]string
	switch {
	case err != nil:
	case res.folder:
		extra = map[string]string{"folder": res.info.Path}
	default:
		extra = map[string]string{"file": res.info.Path}
	}
	s.end(in, err, extra)
	return res, err
}

func (s actions) receiveUploadLocked(q *request, defaultPath string) (uploadResult, error) {
	for k := range q.r.URL.Query() {
		if internalField(k) {
			return uploadResult{}, errorf(http.StatusBadRequest, "internal upload parameter %q not accepted", clip(k, 40))
		}
	}
	mt, params, err := mime.ParseMediaType(q.r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return uploadResult{}, errorf(http.StatusBadRequest, "expected a multipart/form-data body")
	}
	body := &watchReader{r: http.MaxBytesReader(q.w, q.r.Body, s.cfg.MaxUpload+1<<20)}
	// multipart reads through a 4 KiB buffer; the larger one in front takes the body from the
	// connection in fewer, bigger reads (issue 14: per-read cost on the tunnel). A multipart
	// reader of our own would save a further copy (0.08 s of CPU per 100 MB measured); the
	// standard library's is kept.
	mr := multipart.NewReader(bufio.NewReaderSize(body, uploadReadBuffer), params["boundary"])
	form := uploadForm{path: defaultPath}
	var res uploadResult
	fail := func(err error) (uploadResult, error) {
		if body.tooBig {
			return uploadResult{}, errorf(http.StatusRequestEntityTooLarge, "upload larger than %d bytes", s.cfg.MaxUpload)
		}
		var he *httpError
		if errors.As(err, &he) {
			return uploadResult{}, err
		}
		if errors.Is(err, files.ErrTooLarge) {
			return uploadResult{}, err
		}
		return uploadResult{}, errorf(http.StatusBadRequest, "malformed multipart body: %v", clip(err.Error(), 120))
	}
	// nextPart reads fields until the file part or the end; it returns the file part or nil.
	nextPart := func() (*multipart.Part, error) {
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			name, filename, isFile, err := partName(part.Header)
			if err != nil {
				return nil, err
			}
			if internalField(name) {
				return nil, errorf(http.StatusBadRequest, "internal upload field %q not accepted", clip(name, 40))
			}
			if name == "file" {
				if form.gotFile {
					return nil, errorf(http.StatusBadRequest, "more than one file in one upload")
				}
				if !isFile || filename == "" {
					return nil, errorf(http.StatusBadRequest, "the file part has no file name")
				}
				form.gotFile, form.filename = true, filename
				return part, nil
			}
			v, err := readField(part)
			if err != nil {
				return nil, err
			}
			if err := form.setField(name, v); err != nil {
				return nil, err
			}
		}
	}
	part, err := nextPart()
	if err != nil {
		return fail(err)
	}
	if part == nil {
		if !form.hasFolder {
			return uploadResult{}, errorf(http.StatusBadRequest, "no file to upload and no folder to create")
		}
		return s.makeFolder(q, form)
	}
	if strings.ContainsAny(form.filename, "/\\") {
		return uploadResult{}, errorf(http.StatusBadRequest, "file name %q must not contain a slash", clip(form.filename, 80))
	}
	target := joinPath(form.path, form.filename)
	if err := s.checkOverwrite(q, target, form.noOverwrite); err != nil {
		return uploadResult{}, err
	}
	fr := &fileReader{part: part, rest: func() error {
		more, err := nextPart()
		if err != nil {
			return err
		}
		if more != nil {
			return errorf(http.StatusBadRequest, "more than one file in one upload")
		}
		return nil
	}}
	info, err := q.p.Files.Put(q.r.Context(), form.path, form.filename, fr)
	if err != nil {
		if fr.err != nil {
			return fail(fr.err)
		}
		if body.tooBig {
			return fail(err)
		}
		return uploadResult{}, err
	}
	if form.pathAfter && form.path != parentOf(info.Path) {
		// The form named its folder after the file: move it there.
		to := joinPath(form.path, form.filename)
		if err := s.checkOverwrite(q, to, form.noOverwrite); err != nil {
			q.p.Files.Delete(info.Path)
			return uploadResult{}, err
		}
		if err := q.p.Files.MkdirAll(form.path); err != nil {
			q.p.Files.Delete(info.Path)
			return uploadResult{}, err
		}
		if mv, ok := q.p.Files.(interface{ Move(from, to string) error }); ok {
			if err := mv.Move(info.Path, to); err != nil {
				q.p.Files.Delete(info.Path)
				return uploadResult{}, err
			}
			if info, err = q.p.Files.Stat(to); err != nil {
				return uploadResult{}, err
			}
		}
	}
	res.info = info
	if form.selectFile || form.print {
		// As OctoPrint: when the printer cannot take it, select and print are ignored.
		if st := q.p.Printer.Status().State; st == marlin.Operational {
			if err := s.selectFile(q, info.Path); err == nil {
				res.effectiveSelect = true
				if form.print {
					if err := s.startFile(q.r.Context(), q, info.Path); err == nil {
						res.effectivePrint = true
					} else {
						s.errorf("printerd: %s: print after upload: %v", q.p.name, err)
					}
				}
			}
		}
	}
	return res, nil
}

// checkOverwrite refuses to replace the file being printed, or any file with noOverwrite.
func (s actions) checkOverwrite(q *request, target string, noOverwrite bool) error {
	if q.p.inUse(target) {
		return errorf(http.StatusConflict, "file is being printed")
	}
	if noOverwrite {
		if _, err := q.p.Files.Stat(target); err == nil {
			return errorf(http.StatusConflict, "file exists and noOverwrite is set")
		}
	}
	return nil
}

func (s actions) makeFolder(q *request, form uploadForm) (uploadResult, error) {
	if strings.ContainsAny(form.foldername, "/\\") {
		return uploadResult{}, errorf(http.StatusBadRequest, "folder name must not contain a slash")
	}
	p := joinPath(form.path, form.foldername)
	if err := q.p.Files.MkdirAll(p); err != nil {
		return uploadResult{}, err
	}
	info, err := q.p.Files.Stat(p)
	if err != nil {
		return uploadResult{}, err
	}
	return uploadResult{info: info, folder: true}, nil
}

func joinPath(folder, name string) string {
	if folder == "" {
		return name
	}
	return folder + "/" + name
}

func (s octoprint) opUpload(q *request) error {
	if err := checkOrigin(q); err != nil {
		return err
	}
	res, err := s.receiveUpload(q, "")
	if err != nil {
		return err
	}
	base := func(p string) string { return absURL(q.r, p) }
	loc := base("/api/files/local/" + fileURLPath(res.info.Path))
	q.w.Header().Set("Location", loc)
	f := octoFileOf(base, res.info)
	abridged := map[string]any{"name": f.Name, "display": f.Display, "path": f.Path, "origin": "local", "refs": f.Refs}
	if res.folder {
		writeJSON(q.w, http.StatusCreated, map[string]any{"folder": abridged, "done": true})
		return nil
	}
	writeJSON(q.w, http.StatusCreated, map[string]any{
		"files":           map[string]any{"local": abridged},
		"done":            true,
		"effectiveSelect": res.effectiveSelect,
		"effectivePrint":  res.effectivePrint,
	})
	return nil
}

// uploadPathParam reads the native API's ?path= folder.
func uploadPathParam(v url.Values) string { return strings.Trim(v.Get("path"), "/") }
