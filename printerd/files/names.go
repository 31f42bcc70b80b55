package files

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on names and paths.
const (
	MaxNameBytes = 128 // one file or folder name
	MaxPathBytes = 512 // folder path plus name
	MaxDepth     = 8   // folders below the uploads root
)

// extensions are the accepted file name endings, compared without case. Binary G-code
// (.bgcode) is refused: its lines cannot be checked by the policy.
var extensions = []string{".gcode", ".gco", ".g"}

// Name errors. Test with errors.Is; the HTTP layer maps both to 400 (ErrBadExtension to 415
// if it prefers).
var (
	ErrBadName      = errors.New("bad file or folder name")
	ErrBadExtension = errors.New("not a G-code file name (.gcode, .gco, .g)")
)

// NameError says which name was refused and why.
type NameError struct {
	Name   string // the name as given, quoted with %q when printed
	Reason string
	Kind   error // ErrBadName or ErrBadExtension
}

func (e *NameError) Error() string { return fmt.Sprintf("files: name %q: %s", e.Name, e.Reason) }

func (e *NameError) Unwrap() error { return e.Kind }

func badName(name, format string, args ...any) error {
	if len(name) > MaxPathBytes+16 {
		name = name[:MaxPathBytes+16] + "..."
	}
	return &NameError{Name: name, Reason: fmt.Sprintf(format, args...), Kind: ErrBadName}
}

// Names are decoded exactly once, by the HTTP layer (URL path unescaping, multipart
// filename). The store takes the decoded text and accepts only a plain, portable subset:
//
//   - ASCII letters, digits, space and . _ - + ( ) [ ] , @ ~ ; nothing else. This refuses
//     '/' and '\' inside a name, NUL and control characters, '%' (so a name can never be
//     decoded a second time into something else), and every non-ASCII look-alike such as
//     U+2215 DIVISION SLASH, U+FF0E FULLWIDTH FULL STOP or U+2024 ONE DOT LEADER.
//   - No leading '.' (hidden and temporary files, "." and ".."), no leading '-' or ' ', no
//     trailing ' ' or '.', and no ".." anywhere.
//   - At most MaxNameBytes per name, MaxPathBytes per path, MaxDepth folders.
//
// Folders are slash-separated relative paths of such names: no leading '/', no empty
// component. Names are case-sensitive; extensions are matched without case.
func checkComponent(c string) error {
	switch {
	case c == "":
		return badName(c, "empty name")
	case len(c) > MaxNameBytes:
		return badName(c, "name longer than %d bytes", MaxNameBytes)
	case c[0] == '.':
		return badName(c, "name starts with '.'")
	case c[0] == '-' || c[0] == ' ':
		return badName(c, "name starts with %q", c[0])
	case c[len(c)-1] == ' ' || c[len(c)-1] == '.':
		return badName(c, "name ends with %q", c[len(c)-1])
	case strings.Contains(c, ".."):
		return badName(c, "name contains \"..\"")
	}
	for i := 0; i < len(c); i++ {
		if !nameByte(c[i]) {
			return badName(c, "byte %d (%q) is not allowed in a name", i, c[i])
		}
	}
	return nil
}

func nameByte(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte(" ._-+()[],@~", b) >= 0
}

// CleanFolder checks a folder path ("" is the uploads root) and returns it unchanged when
// it is acceptable.
func CleanFolder(folder string) (string, error) {
	if folder == "" {
		return "", nil
	}
	if len(folder) > MaxPathBytes {
		return "", badName(folder, "path longer than %d bytes", MaxPathBytes)
	}
	if folder[0] == '/' {
		return "", badName(folder, "absolute path")
	}
	parts := strings.Split(folder, "/")
	if len(parts) > MaxDepth {
		return "", badName(folder, "more than %d folders deep", MaxDepth)
	}
	for _, p := range parts {
		if err := checkComponent(p); err != nil {
			return "", badName(folder, "%s", err.(*NameError).Reason)
		}
	}
	return folder, nil
}

// CleanName checks a file name (one component with a G-code extension).
func CleanName(name string) error {
	if err := checkComponent(name); err != nil {
		return err
	}
	if !hasExtension(name) {
		return &NameError{Name: name, Reason: "only .gcode, .gco and .g files are accepted", Kind: ErrBadExtension}
	}
	return nil
}

func hasExtension(name string) bool {
	lower := strings.ToLower(name)
	for _, ext := range extensions {
		if strings.HasSuffix(lower, ext) && len(lower) > len(ext) {
			return true
		}
	}
	return false
}

// CleanPath checks a stored file's path "folder/name" (or "name") and splits it.
func CleanPath(p string) (folder, name string, err error) {
	if len(p) > MaxPathBytes {
		return "", "", badName(p, "path longer than %d bytes", MaxPathBytes)
	}
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		folder, name = p[:i], p[i+1:]
		if _, err := CleanFolder(folder); err != nil {
			return "", "", err
		}
		if folder == "" {
			return "", "", badName(p, "absolute path")
		}
	} else {
		name = p
	}
	if err := CleanName(name); err != nil {
		return "", "", err
	}
	return folder, name, nil
}

// join returns folder/name, or name in the root.
func join(folder, name string) string {
	if folder == "" {
		return name
	}
	return folder + "/" + name
}
