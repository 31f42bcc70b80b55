// Package files is the upload store: G-code files in folders under one uploads directory,
// opened with os.Root, written whole or not at all, and checked line by line on the way in.
//
// Put follows one path for every upload:
//
//  1. The folder and name are checked (names.go) before any disk access.
//  2. The body is streamed into a hidden temporary file (".upload-<random>.tmp") in the
//     uploads root through a size cap and a pipeline of bounded chunks (pipeline.go): the
//     Check function (the safety policy) reads every line, and each chunk it has read is
//     hashed (SHA-256), scanned for the slicer's estimate and written, while the next chunks
//     arrive and are checked.
//  3. Only when the body ended cleanly, fit the cap and passed Check: fsync the file (once),
//     create the folder if needed, rename the file to its name, fsync the folders. Any
//     failure removes the temporary file and creates nothing.
//
// Listings show only regular files with an accepted name: temporary files, dot files and
// symlinks are never listed, opened, moved or deleted.
package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxSize is the default upload cap: 256 MiB.
const DefaultMaxSize = 256 << 20

// Errors returned by the store; test with errors.Is. Missing files wrap fs.ErrNotExist
// (404), existing targets fs.ErrExist (409).
var (
	ErrTooLarge   = errors.New("file is larger than the upload limit")                   // 413
	ErrIncomplete = errors.New("upload ended before the end of the file")                // 400
	ErrNotRegular = errors.New("not a regular file or folder (symlinks are not served)") // 404
	ErrNotEmpty   = errors.New("folder is not empty")                                    // 409
)

// Config configures a Store.
type Config struct {
	// Dir is the uploads directory; it is created (mode 0700) if missing. Required.
	Dir string
	// MaxSize is the largest accepted file in bytes; zero means DefaultMaxSize.
	MaxSize int64
	// Check reads a whole upload and returns the first refusal (policy.Policy.CheckFile).
	// It must read r to its end when it returns nil. r is also an io.WriterTo that hands over
	// the pipeline's chunks without a copy; Check runs on a goroutine of its own while the
	// upload streams in. Nil means no check: tests only.
	Check func(ctx context.Context, r io.Reader) error
	// Logf logs verbose detail; nil discards.
	Logf func(format string, args ...any)
	// Reserve is the free space, in bytes, an upload must leave on the filesystem: an upload
	// that would leave less is refused with ErrNoSpace, looked at before it starts and while it
	// is written: before every chunk near the reserve, at least every 8 MiB far from it (see
	// spaceWatch). Zero means DefaultReserve, NoReserve none.
	Reserve int64
	// FreeSpace returns the bytes still free for the uploads directory; nil: statfs(2) of Dir.
	// Tests inject a small disk here.
	FreeSpace func() (int64, error)
	// Errorf logs errors no caller sees (a leftover upload that cannot be removed), each with
	// its cause; nil: Logf.
	Errorf func(format string, args ...any)
}

// FileInfo describes a stored file or folder.
type FileInfo struct {
	Name     string        `json:"name"`
	Path     string        `json:"path"` // slash-separated, relative to the uploads root
	Folder   bool          `json:"folder,omitempty"`
	Size     int64         `json:"size"`
	Date     time.Time     `json:"date"`               // modification time
	Hash     string        `json:"hash,omitempty"`     // hex SHA-256 of the content
	Estimate time.Duration `json:"estimate,omitempty"` // slicer's print time estimate; 0 unknown
}

// Store is the upload store. It is safe for concurrent use.
type Store struct {
	root    *os.Root
	maxSize int64
	reserve int64
	free    func() (int64, error)
	check   func(ctx context.Context, r io.Reader) error
	logf    func(string, ...any)
	errorf  func(string, ...any)
	closed  atomic.Bool
	putting atomic.Int64 // uploads in flight, for spaceWatch

	// meta caches hash and estimate per path, valid while size and mtime match.
	meta struct {
		sync.Mutex
		m map[string]meta
	}
}

type meta struct {
	size     int64
	mod      time.Time
	hash     string
	estimate time.Duration
}

// New opens the store rooted at cfg.Dir and removes temporary files left by a crash.
func New(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("files: no uploads directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("files: create %s: %w", cfg.Dir, err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("files: open %s: %w", cfg.Dir, err)
	}
	s := &Store{root: root, maxSize: cfg.MaxSize, check: cfg.Check, logf: cfg.Logf}
	if s.maxSize <= 0 {
		s.maxSize = DefaultMaxSize
	}
	switch s.reserve = cfg.Reserve; {
	case s.reserve == 0:
		s.reserve = DefaultReserve
	case s.reserve < 0:
		s.reserve = 0
	}
	s.free = cfg.FreeSpace
	if s.free == nil {
		dir := cfg.Dir
		s.free = func() (int64, error) { return statfsFree(dir) }
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	s.errorf = cfg.Errorf
	if s.errorf == nil {
		s.errorf = s.logf
	}
	s.meta.m = map[string]meta{}
	s.removeTemps(".", 0)
	return s, nil
}

// Close closes the store's root; every later call fails. A second Close returns an error
// wrapping fs.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return fmt.Errorf("files: close: %w", fs.ErrClosed)
	}
	return s.root.Close()
}

// removeTemps deletes leftover temporary files in dir and its folders.
func (s *Store) removeTemps(dir string, depth int) {
	if depth > MaxDepth {
		return
	}
	ents, err := s.readDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := e.Name()
		if dir != "." {
			p = dir + "/" + p
		}
		switch {
		case isTemp(e.Name()) && e.Type().IsRegular():
			s.logf("files: removing leftover upload %s", p)
			if err := s.root.Remove(p); err != nil {
				s.errorf("files: remove leftover upload %s: %v", p, err)
			}
		case e.IsDir() && !strings.HasPrefix(e.Name(), "."):
			s.removeTemps(p, depth+1)
		}
	}
}

const tempPrefix, tempSuffix = ".upload-", ".tmp"

func isTemp(name string) bool {
	return strings.HasPrefix(name, tempPrefix) && strings.HasSuffix(name, tempSuffix)
}

func (s *Store) readDir(dir string) ([]fs.DirEntry, error) {
	d, err := s.root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir(-1)
}

// noLinks checks that no component of p (a cleaned relative path) is a symlink or, except
// the last, anything but a folder. os.Root keeps every access inside the root; this keeps the
// store from following links that point elsewhere inside it. It returns the last
// component's info, or an error wrapping fs.ErrNotExist.
func (s *Store) noLinks(p string) (fs.FileInfo, error) {
	var fi fs.FileInfo
	parts := strings.Split(p, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		var err error
		fi, err = s.root.Lstat(sub)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s: %w", sub, ErrNotRegular)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return nil, fmt.Errorf("%s: %w", sub, ErrNotRegular)
		}
	}
	return fi, nil
}

// Put stores the body r as folder/name, replacing a file of that name. See the package doc
// for the steps. The error wraps a *NameError, ErrTooLarge, ErrIncomplete (r failed before
// io.EOF, e.g. an unterminated multipart body), the Check function's refusal (with its line
// number and rule), or a disk error. On any error nothing is stored or listed.
func (s *Store) Put(ctx context.Context, folder, name string, r io.Reader) (FileInfo, error) {
	if _, err := CleanFolder(folder); err != nil {
		return FileInfo{}, err
	}
	if err := CleanName(name); err != nil {
		return FileInfo{}, err
	}
	p := join(folder, name)
	if len(p) > MaxPathBytes {
		return FileInfo{}, badName(p, "path longer than %d bytes", MaxPathBytes)
	}
	if err := s.checkFolder(folder); err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
	}
	if fi, err := s.noLinks(p); err == nil && !fi.Mode().IsRegular() {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, ErrNotRegular)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
	}

	if err := s.room(0); err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
	}
	// The temporary file lives in the root, so a failed upload leaves no new folder behind.
	tmp, f, err := s.createTemp("")
	if err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, noSpace(err))
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			s.root.Remove(tmp)
		}
	}()

	body := &capReader{ctx: ctx, r: r, left: s.maxSize}
	check := s.check
	if check == nil {
		check = func(_ context.Context, r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
	}
	s.putting.Add(1)
	defer s.putting.Add(-1)
	space := &spaceWatch{s: s}
	pp, err := runPipe(body, f, func(r io.Reader) error { return check(ctx, r) }, space.room)
	if err != nil {
		return FileInfo{}, s.putError(p, body, noSpace(err))
	}
	if err := f.Sync(); err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, noSpace(err))
	}
	if err := f.Close(); err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, noSpace(err))
	}
	if folder != "" {
		if err := s.mkdirAll(folder); err != nil {
			return FileInfo{}, fmt.Errorf("files: put %s: %w", p, noSpace(err))
		}
	}
	if fi, err := s.noLinks(p); err == nil && !fi.Mode().IsRegular() {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, ErrNotRegular)
	}
	if err := s.root.Rename(tmp, p); err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
	}
	ok = true
	if err := s.syncDir(folder); err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
	}
	if folder != "" {
		if err := s.syncDir(""); err != nil { // the temporary name left the root
			return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
		}
	}
	fi, err := s.root.Lstat(p)
	if err != nil {
		return FileInfo{}, fmt.Errorf("files: put %s: %w", p, err)
	}
	m := meta{size: fi.Size(), mod: fi.ModTime(), hash: hex.EncodeToString(pp.h.Sum(nil)), estimate: pp.est.estimate()}
	s.meta.Lock()
	s.meta.m[p] = m
	s.meta.Unlock()
	return s.info(p, fi, m), nil
}

// putError classifies a failed upload: the body's own error (too large, cut short, context)
// wins over whatever Check made of it.
func (s *Store) putError(p string, body *capReader, err error) error {
	switch {
	case body.err != nil && errors.Is(body.err, ErrTooLarge):
		return fmt.Errorf("files: put %s: %w (limit %d bytes)", p, ErrTooLarge, s.maxSize)
	case body.err != nil && (errors.Is(body.err, context.Canceled) || errors.Is(body.err, context.DeadlineExceeded)):
		return fmt.Errorf("files: put %s: %w", p, body.err)
	case body.err != nil:
		return fmt.Errorf("files: put %s: %w: %w", p, ErrIncomplete, body.err)
	}
	return fmt.Errorf("files: put %s: %w", p, err)
}

// createTemp makes a new hidden temporary file in folder.
func (s *Store) createTemp(folder string) (string, *os.File, error) {
	for range 10 {
		var b [12]byte
		rand.Read(b[:])
		name := join(folder, tempPrefix+hex.EncodeToString(b[:])+tempSuffix)
		f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|directFlag, 0o600)
		if err != nil && directFlag != 0 && !errors.Is(err, fs.ErrExist) {
			// A filesystem without O_DIRECT (EINVAL), which may have created the file first:
			// the page cache it is.
			s.root.Remove(name)
			f, err = s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return name, f, err
	}
	return "", nil, errors.New("no free temporary name")
}

func (s *Store) syncDir(folder string) error {
	if folder == "" {
		folder = "."
	}
	d, err := s.root.Open(folder)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// capReader passes at most left bytes of r, checks ctx, and remembers r's error.
type capReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
	err  error // the first error other than io.EOF
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	if int64(n) > c.left {
		c.err = ErrTooLarge
		return int(c.left), ErrTooLarge
	}
	c.left -= int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// checkFolder fails if an existing component of folder is a symlink or not a folder. Missing
// components are fine: Put creates them once the upload succeeded.
func (s *Store) checkFolder(folder string) error {
	if folder == "" {
		return nil
	}
	parts := strings.Split(folder, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		fi, err := s.root.Lstat(sub)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", sub, ErrNotRegular)
		}
	}
	return nil
}

// MkdirAll creates a folder and its parents.
func (s *Store) MkdirAll(folder string) error {
	if _, err := CleanFolder(folder); err != nil {
		return err
	}
	if folder == "" {
		return nil
	}
	if err := s.mkdirAll(folder); err != nil {
		return fmt.Errorf("files: mkdir %s: %w", folder, err)
	}
	return nil
}

// mkdirAll creates a cleaned folder path one component at a time, refusing symlinks.
func (s *Store) mkdirAll(folder string) error {
	parts := strings.Split(folder, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		fi, err := s.root.Lstat(sub)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := s.root.Mkdir(sub, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			parent := strings.Join(parts[:i], "/")
			if err := s.syncDir(parent); err != nil {
				return err
			}
			if fi, err = s.root.Lstat(sub); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", sub, ErrNotRegular)
		}
	}
	return nil
}

// Stat describes a stored file or folder.
func (s *Store) Stat(p string) (FileInfo, error) {
	if folder, err := CleanFolder(p); err == nil && folder != "" {
		if fi, err := s.noLinks(p); err == nil && fi.IsDir() {
			return s.info(p, fi, meta{}), nil
		}
	}
	if _, _, err := CleanPath(p); err != nil {
		return FileInfo{}, err
	}
	fi, err := s.noLinks(p)
	if err != nil {
		return FileInfo{}, fmt.Errorf("files: stat %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return FileInfo{}, fmt.Errorf("files: stat %s: %w", p, ErrNotRegular)
	}
	m, err := s.metaFor(p, fi)
	if err != nil {
		return FileInfo{}, fmt.Errorf("files: stat %s: %w", p, err)
	}
	return s.info(p, fi, m), nil
}

func (s *Store) info(p string, fi fs.FileInfo, m meta) FileInfo {
	i := FileInfo{Name: fi.Name(), Path: p, Date: fi.ModTime().UTC()}
	if fi.IsDir() {
		i.Folder = true
		return i
	}
	i.Size, i.Hash, i.Estimate = fi.Size(), m.hash, m.estimate
	return i
}

// metaFor returns the cached hash and estimate of p, computing them if the file changed.
func (s *Store) metaFor(p string, fi fs.FileInfo) (meta, error) {
	s.meta.Lock()
	m, ok := s.meta.m[p]
	s.meta.Unlock()
	if ok && m.size == fi.Size() && m.mod.Equal(fi.ModTime()) {
		return m, nil
	}
	f, err := s.openRegular(p)
	if err != nil {
		return meta{}, err
	}
	defer f.Close()
	h := sha256.New()
	est := &estimator{}
	if _, err := io.Copy(io.MultiWriter(h, est), f); err != nil {
		return meta{}, err
	}
	m = meta{size: fi.Size(), mod: fi.ModTime(), hash: hex.EncodeToString(h.Sum(nil)), estimate: est.estimate()}
	s.meta.Lock()
	s.meta.m[p] = m
	s.meta.Unlock()
	return m, nil
}

// openRegular opens p for reading if it is a regular file reached without symlinks, and
// checks that what was opened is what was checked.
func (s *Store) openRegular(p string) (*os.File, error) {
	fi, err := s.noLinks(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, ErrNotRegular
	}
	f, err := s.root.Open(p)
	if err != nil {
		return nil, err
	}
	ofi, err := f.Stat()
	if err != nil || !os.SameFile(fi, ofi) {
		f.Close()
		return nil, fmt.Errorf("%s changed while opening: %w", p, ErrNotRegular)
	}
	return f, nil
}

// List returns the folders and files in folder ("" for the root), sorted by path, and those
// of every folder below it when recursive. Hidden, temporary, badly named and non-regular
// entries (symlinks, devices) are skipped.
func (s *Store) List(folder string, recursive bool) ([]FileInfo, error) {
	if _, err := CleanFolder(folder); err != nil {
		return nil, err
	}
	dir := folder
	if dir == "" {
		dir = "."
	} else if fi, err := s.noLinks(dir); err != nil {
		return nil, fmt.Errorf("files: list %s: %w", folder, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("files: list %s: %w", folder, ErrNotRegular)
	}
	var out []FileInfo
	if err := s.list(folder, dir, recursive, strings.Count(folder, "/"), &out); err != nil {
		return nil, fmt.Errorf("files: list %s: %w", folder, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func (s *Store) list(folder, dir string, recursive bool, depth int, out *[]FileInfo) error {
	ents, err := s.readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		p := join(folder, name)
		switch {
		case e.IsDir():
			if checkComponent(name) != nil || depth+1 > MaxDepth {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			*out = append(*out, s.info(p, fi, meta{}))
			if recursive {
				if err := s.list(p, p, true, depth+1, out); err != nil {
					return err
				}
			}
		case e.Type().IsRegular():
			if CleanName(name) != nil {
				continue // temporary, hidden or foreign files
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			m, err := s.metaFor(p, fi)
			if err != nil {
				continue
			}
			*out = append(*out, s.info(p, fi, m))
		}
	}
	return nil
}

// File is an open stored file, for the controller: an io.ReaderAt with its size.
type File struct {
	f    *os.File
	Info FileInfo
}

// ReadAt implements io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// Read implements io.Reader, for streaming from the start.
func (f *File) Read(p []byte) (int, error) { return f.f.Read(p) }

// Size is the file's size in bytes when opened.
func (f *File) Size() int64 { return f.Info.Size }

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Open opens a stored file for reading. The file stays readable until closed even if it is
// replaced or deleted meanwhile.
func (s *Store) Open(p string) (*File, error) {
	if _, _, err := CleanPath(p); err != nil {
		return nil, err
	}
	f, err := s.openRegular(p)
	if err != nil {
		return nil, fmt.Errorf("files: open %s: %w", p, err)
	}
	readAhead(f)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("files: open %s: %w", p, err)
	}
	m, err := s.metaFor(p, fi)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("files: open %s: %w", p, err)
	}
	return &File{f: f, Info: s.info(p, fi, m)}, nil
}

// Delete removes a stored file or an empty folder.
func (s *Store) Delete(p string) error {
	isFolder := false
	if _, _, err := CleanPath(p); err != nil {
		if _, ferr := CleanFolder(p); ferr != nil || p == "" {
			return err
		}
		isFolder = true
	}
	fi, err := s.noLinks(p)
	if err != nil {
		return fmt.Errorf("files: delete %s: %w", p, err)
	}
	switch {
	case fi.IsDir():
		ents, err := s.readDir(p)
		if err != nil {
			return fmt.Errorf("files: delete %s: %w", p, err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("files: delete %s: %w", p, ErrNotEmpty)
		}
	case isFolder || !fi.Mode().IsRegular():
		return fmt.Errorf("files: delete %s: %w", p, ErrNotRegular)
	}
	if err := s.root.Remove(p); err != nil {
		return fmt.Errorf("files: delete %s: %w", p, err)
	}
	s.meta.Lock()
	delete(s.meta.m, p)
	s.meta.Unlock()
	return s.syncDir(parent(p))
}

// Move renames a stored file to another folder or name; the target must not exist.
func (s *Store) Move(from, to string) error {
	if _, _, err := CleanPath(from); err != nil {
		return err
	}
	toFolder, _, err := CleanPath(to)
	if err != nil {
		return err
	}
	fi, err := s.noLinks(from)
	if err != nil {
		return fmt.Errorf("files: move %s: %w", from, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("files: move %s: %w", from, ErrNotRegular)
	}
	if toFolder != "" {
		if fi, err := s.noLinks(toFolder); err != nil {
			return fmt.Errorf("files: move %s: %w", from, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("files: move %s: %w", from, ErrNotRegular)
		}
	}
	if _, err := s.root.Lstat(to); err == nil {
		return fmt.Errorf("files: move %s to %s: %w", from, to, fs.ErrExist)
	}
	if err := s.root.Rename(from, to); err != nil {
		return fmt.Errorf("files: move %s: %w", from, err)
	}
	s.meta.Lock()
	delete(s.meta.m, from)
	s.meta.Unlock()
	if err := s.syncDir(toFolder); err != nil {
		return err
	}
	return s.syncDir(parent(from))
}

func parent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}
