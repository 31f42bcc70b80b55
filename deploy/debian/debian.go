// Package debian builds printgate's Debian package with the nfpm library: the binary, the
// hardened systemd unit, /etc/default/printgate as a kept conffile, and maintainer scripts.
package debian

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// Files holds the packaging sources: printgate.service, default, postinst, prerm, postrm.
//
//go:embed printgate.service default postinst prerm postrm
var Files embed.FS

// Installed paths.
const (
	BinaryPath  = "/usr/bin/printgate"
	UnitPath    = "/lib/systemd/system/printgate.service"
	DefaultPath = "/etc/default/printgate"
	DocPath     = "/usr/share/doc/printgate/appliance.md"
)

// DefaultMaintainer is the Maintainer field unless Options says otherwise.
const DefaultMaintainer = "printgate developers <dev@printgate.invalid>"

// Options says what to package. Arch, Version and Binary are required.
type Options struct {
	// Arch is a Go architecture name as nfpm knows it: amd64, arm64, arm6 or arm7 (both
	// armhf; build the armhf binary with GOARM=6 so it runs on every Raspberry Pi).
	Arch string
	// Version is the release version; DebVersion makes the package version of it.
	Version string
	// Binary is the path of the printgate executable built for Arch.
	Binary string
	// Doc, if set, is installed as DocPath (docs/appliance.md).
	Doc string
	// Maintainer is the Maintainer field; empty: DefaultMaintainer.
	Maintainer string
	// MTime stamps every file; zero: the Unix epoch, for reproducible packages.
	MTime time.Time
}

// Info returns the nfpm description of the package. Scripts and the unit are written into dir,
// which must outlive the call to Build that uses the Info.
func Info(o Options, dir string) (*nfpm.Info, error) {
	if o.Arch == "" || o.Version == "" || o.Binary == "" {
		return nil, errors.New("debian: info: Arch, Version and Binary are required")
	}
	if st, err := os.Stat(o.Binary); err != nil {
		return nil, fmt.Errorf("debian: info: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("debian: info: %s is not a regular file", o.Binary)
	}
	if v := DebVersion(o.Version); !debVersionRE.MatchString(v) {
		return nil, fmt.Errorf("debian: info: version %q (as %q) is not a Debian version", o.Version, v)
	}
	if o.Maintainer == "" {
		o.Maintainer = DefaultMaintainer
	}
	mtime := o.MTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0).UTC()
	}
	if err := writeFiles(dir); err != nil {
		return nil, err
	}
	src := func(name string) string { return filepath.Join(dir, name) }
	file := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: mtime}
	}
	contents := files.Contents{
		{Source: o.Binary, Destination: BinaryPath, FileInfo: file(0o755)},
		{Source: src("printgate.service"), Destination: UnitPath, FileInfo: file(0o644)},
		{Source: src("default"), Destination: DefaultPath, Type: files.TypeConfigNoReplace, FileInfo: file(0o644)},
	}
	if o.Doc != "" {
		contents = append(contents, &files.Content{Source: o.Doc, Destination: DocPath, FileInfo: file(0o644)})
	}
	info := &nfpm.Info{
		Name:        "printgate",
		Arch:        o.Arch,
		Platform:    "linux",
		Version:     DebVersion(o.Version),
		Section:     "net",
		Priority:    "optional",
		Maintainer:  o.Maintainer,
		Homepage:    "https://github.com/printgate/printgate",
		Description: "WireGuard access gateway for 3D printers\n" + longDescription,
		MTime:       mtime,
		Overridables: nfpm.Overridables{
			// adduser for the system user; deb-systemd-helper comes with init-system-helpers,
			// which is Priority: required.
			Depends:  []string{"adduser"},
			Contents: contents,
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PostInstall: src("postinst"),
				PreRemove:   src("prerm"),
				PostRemove:  src("postrm"),
			},
		},
	}
	// VersionSchema "none" keeps versions like "0.1.0-3-gabcdef" as they are.
	info.VersionSchema = "none"
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return nil, fmt.Errorf("debian: info: %w", err)
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("debian: info: %w", err)
	}
	return info, nil
}

// debVersionRE is what dpkg accepts (without an epoch): a digit first, then
// alphanumerics and . + ~ -, not ending in a hyphen.
var debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*[A-Za-z0-9.+~]$|^[0-9]$`)

// DebVersion turns a release version into a Debian one: a leading "v" is dropped ("v1.2.3"
// -> "1.2.3"), and a version that does not start with a digit, such as an untagged `git
// describe` ("f8d2b97-dirty"), sorts before every release as "0~git" + it, with the
// characters dpkg refuses and hyphens turned into dots ("0~gitf8d2b97.dirty").
func DebVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v != "" && v[0] >= '0' && v[0] <= '9' {
		return v
	}
	var b strings.Builder
	b.WriteString("0~git")
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '+', c == '~', c == '.':
			b.WriteRune(c)
		default:
			b.WriteByte('.')
		}
	}
	return b.String()
}

const longDescription = ` printgate puts 3D printers on a private WireGuard mesh and nowhere else: a
 userspace WireGuard device on an in-process TCP/IP stack serves the printer
 control API (OctoPrint-compatible) only inside the tunnel. The host sees one
 silent UDP port. Phones enroll by scanning a QR code with the WireGuard app.
 .
 The service runs unprivileged and sandboxed, with access to USB serial ports.`

// Build writes the .deb for o to w.
func Build(w io.Writer, o Options) error {
	dir, err := os.MkdirTemp("", "printgate-deb-")
	if err != nil {
		return fmt.Errorf("debian: build: %w", err)
	}
	defer os.RemoveAll(dir)
	info, err := Info(o, dir)
	if err != nil {
		return err
	}
	if err := deb.Default.Package(info, w); err != nil {
		return fmt.Errorf("debian: build %s: %w", o.Arch, err)
	}
	return nil
}

// FileName is the Debian file name for o (printgate_VERSION_DEBARCH.deb).
func FileName(o Options) (string, error) {
	dir, err := os.MkdirTemp("", "printgate-deb-")
	if err != nil {
		return "", fmt.Errorf("debian: file name: %w", err)
	}
	defer os.RemoveAll(dir)
	info, err := Info(o, dir)
	if err != nil {
		return "", err
	}
	return deb.Default.ConventionalFileName(info), nil
}

// writeFiles copies the embedded sources into dir with their modes (scripts executable).
func writeFiles(dir string) error {
	return fs.WalkDir(Files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := Files.ReadFile(name)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(string(b), "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			return fmt.Errorf("debian: write %s: %w", name, err)
		}
		return nil
	})
}
