package debian

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// fakeBinary writes a small executable standing in for printgate: packaging does not care
// what the binary does.
func fakeBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "printgate")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho printgate test binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func buildDeb(t *testing.T, o Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(&buf, o); err != nil {
		t.Fatalf("Build(%+v) = %v", o, err)
	}
	return buf.Bytes()
}

// arMember is one member of an ar(1) archive.
type arMember struct {
	name string
	data []byte
}

// readAr parses the common ar format that .deb files use.
func readAr(b []byte) ([]arMember, error) {
	const magic = "!<arch>\n"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, errors.New("not an ar archive")
	}
	b = b[len(magic):]
	var ms []arMember
	for len(b) > 0 {
		if len(b) < 60 {
			return nil, fmt.Errorf("short ar header (%d bytes)", len(b))
		}
		h := b[:60]
		if string(h[58:60]) != "`\n" {
			return nil, fmt.Errorf("bad ar header terminator %q", h[58:60])
		}
		size, err := strconv.Atoi(strings.TrimSpace(string(h[48:58])))
		if err != nil || size < 0 || size > len(b)-60 {
			return nil, fmt.Errorf("bad ar member size %q", h[48:58])
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(h[:16])), "/")
		ms = append(ms, arMember{name: name, data: b[60 : 60+size]})
		b = b[60+size:]
		if size%2 == 1 && len(b) > 0 {
			b = b[1:]
		}
	}
	return ms, nil
}

type tarFile struct {
	hdr  *tar.Header
	data []byte
}

func readTarGz(t *testing.T, name string, b []byte) map[string]tarFile {
	t.Helper()
	if !strings.HasSuffix(name, ".tar.gz") {
		t.Fatalf("member %s: want a .tar.gz (nfpm's default compression)", name)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	tr := tar.NewReader(zr)
	files := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		files[strings.TrimPrefix(h.Name, ".")] = tarFile{h, data}
	}
	return files
}

// parseControl reads the control file's fields (continuation lines joined with "\n").
func parseControl(b []byte) map[string]string {
	fields := map[string]string{}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, " ") && last != "" {
			fields[last] += "\n" + line
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = k
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

// TestDebLintianBasics builds the amd64 package and checks, by reading the archive, what
// lintian would check first: archive layout, control fields, conffiles, maintainer scripts,
// md5sums, file ownership and modes.
func TestDebLintianBasics(t *testing.T) {
	b := buildDeb(t, Options{Arch: "amd64", Version: "v1.2.3", Binary: fakeBinary(t)})
	ms, err := readAr(b)
	if err != nil {
		t.Fatalf("readAr: %v", err)
	}
	if len(ms) != 3 || ms[0].name != "debian-binary" || !strings.HasPrefix(ms[1].name, "control.tar") || !strings.HasPrefix(ms[2].name, "data.tar") {
		var names []string
		for _, m := range ms {
			names = append(names, m.name)
		}
		t.Fatalf("ar members = %q, want debian-binary, control.tar.*, data.tar.*", names)
	}
	if got := string(ms[0].data); got != "2.0\n" {
		t.Errorf("debian-binary = %q, want %q", got, "2.0\n")
	}
	control := readTarGz(t, ms[1].name, ms[1].data)
	data := readTarGz(t, ms[2].name, ms[2].data)

	t.Run("control fields", func(t *testing.T) {
		f := parseControl(control["/control"].data)
		want := map[string]string{
			"Package":      "printgate",
			"Version":      "1.2.3",
			"Architecture": "amd64",
			"Section":      "net",
			"Priority":     "optional",
			"Maintainer":   DefaultMaintainer,
			"Depends":      "adduser",
		}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("control %s = %q, want %q", k, f[k], v)
			}
		}
		if d := f["Description"]; !strings.HasPrefix(d, "WireGuard access gateway for 3D printers\n ") {
			t.Errorf("control Description = %q, want a synopsis line and a long description", d)
		}
		if n, err := strconv.Atoi(f["Installed-Size"]); err != nil || n <= 0 {
			t.Errorf("control Installed-Size = %q, want a positive number of KiB", f["Installed-Size"])
		}
	})

	t.Run("conffiles", func(t *testing.T) {
		cf, ok := control["/conffiles"]
		if !ok {
			t.Fatal("no conffiles in control.tar")
		}
		if got := strings.Fields(string(cf.data)); len(got) != 1 || got[0] != DefaultPath {
			t.Errorf("conffiles = %q, want exactly %s", got, DefaultPath)
		}
		if _, ok := data[DefaultPath]; !ok {
			t.Errorf("conffile %s not in data.tar", DefaultPath)
		}
	})

	t.Run("maintainer scripts", func(t *testing.T) {
		for _, name := range []string{"postinst", "prerm", "postrm"} {
			f, ok := control["/"+name]
			if !ok {
				t.Errorf("%s missing from control.tar", name)
				continue
			}
			if m := f.hdr.FileInfo().Mode().Perm(); m != 0o755 {
				t.Errorf("%s mode = %o, want 755", name, m)
			}
			if !bytes.HasPrefix(f.data, []byte("#!/bin/sh\n")) || !bytes.Contains(f.data, []byte("\nset -e\n")) {
				t.Errorf("%s: want #!/bin/sh and set -e", name)
			}
			if out, err := exec.Command("sh", "-n", "-c", string(f.data)).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v: %s", name, err, out)
			}
		}
		for _, name := range []string{"preinst", "config"} {
			if _, ok := control["/"+name]; ok {
				t.Errorf("unexpected %s in control.tar", name)
			}
		}
	})

	t.Run("md5sums", func(t *testing.T) {
		sums := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(control["/md5sums"].data)), "\n") {
			sum, path, ok := strings.Cut(line, "  ")
			if !ok {
				t.Fatalf("md5sums line %q: want \"SUM  PATH\"", line)
			}
			sums["/"+path] = sum
		}
		for name, f := range data {
			if f.hdr.Typeflag != tar.TypeReg {
				continue
			}
			sum := md5.Sum(f.data)
			if got := sums[name]; got != hex.EncodeToString(sum[:]) {
				t.Errorf("md5sums[%s] = %q, want %x", name, got, sum)
			}
		}
	})

	t.Run("data files", func(t *testing.T) {
		want := map[string]os.FileMode{BinaryPath: 0o755, UnitPath: 0o644, DefaultPath: 0o644}
		for path, mode := range want {
			f, ok := data[path]
			if !ok {
				t.Errorf("%s missing from data.tar", path)
				continue
			}
			if got := f.hdr.FileInfo().Mode().Perm(); got != mode {
				t.Errorf("%s mode = %o, want %o", path, got, mode)
			}
		}
		for path, f := range data {
			h := f.hdr
			if h.Uid != 0 || h.Gid != 0 || (h.Uname != "" && h.Uname != "root") || (h.Gname != "" && h.Gname != "root") {
				t.Errorf("%s owned by %s(%d):%s(%d), want root:root", path, h.Uname, h.Uid, h.Gname, h.Gid)
			}
			if m := h.FileInfo().Mode(); m.Perm()&0o002 != 0 {
				t.Errorf("%s is world-writable (%v)", path, m)
			}
			if m := h.FileInfo().Mode(); m&(os.ModeSetuid|os.ModeSetgid) != 0 {
				t.Errorf("%s is setuid/setgid (%v)", path, m)
			}
			if !strings.HasPrefix(path, "/usr/") && !strings.HasPrefix(path, "/lib/") && !strings.HasPrefix(path, "/etc/") {
				t.Errorf("%s outside /usr, /lib and /etc", path)
			}
		}
		if unit := string(data[UnitPath].data); unit != mustRead(t, "printgate.service") {
			t.Errorf("packaged unit differs from deploy/debian/printgate.service")
		}
	})
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := Files.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDebArchitectures(t *testing.T) {
	bin := fakeBinary(t)
	tests := []struct {
		arch, want string
	}{
		{"amd64", "printgate_0.1.0_amd64.deb"},
		{"arm64", "printgate_0.1.0_arm64.deb"},
		{"arm6", "printgate_0.1.0_armhf.deb"},
		{"arm7", "printgate_0.1.0_armhf.deb"},
	}
	for _, tt := range tests {
		t.Run(tt.arch, func(t *testing.T) {
			got, err := FileName(Options{Arch: tt.arch, Version: "0.1.0", Binary: bin})
			if err != nil || got != tt.want {
				t.Errorf("FileName(%q) = %q, %v, want %q", tt.arch, got, err, tt.want)
			}
		})
	}
}

func TestBuildRejectsBadOptions(t *testing.T) {
	bin := fakeBinary(t)
	tests := []struct {
		name string
		o    Options
	}{
		{"no arch", Options{Version: "1", Binary: bin}},
		{"no version", Options{Arch: "amd64", Binary: bin}},
		{"no binary", Options{Arch: "amd64", Version: "1"}},
		{"missing binary", Options{Arch: "amd64", Version: "1", Binary: filepath.Join(t.TempDir(), "nope")}},
		{"binary is a directory", Options{Arch: "amd64", Version: "1", Binary: t.TempDir()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Build(&buf, tt.o); err == nil {
				t.Errorf("Build(%+v) = nil, want an error", tt.o)
			}
			if buf.Len() != 0 {
				t.Errorf("Build(%+v) wrote %d bytes on error", tt.o, buf.Len())
			}
		})
	}
}

// TestPostinstCalls runs postinst with stand-ins for adduser, deb-systemd-helper and friends
// on PATH and checks what it asks of them on a fresh install and on an upgrade.
func TestPostinstCalls(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		userExist bool
		systemd   bool
		want      []string
		wantNot   []string
	}{
		{
			name: "fresh install",
			args: []string{"configure", ""},
			want: []string{
				"addgroup --quiet --system printgate",
				"adduser --quiet --system --ingroup printgate --no-create-home --home /var/lib/printgate --shell /usr/sbin/nologin --gecos printgate gateway printgate",
				"adduser --quiet printgate dialout",
				"deb-systemd-helper unmask printgate.service",
				"deb-systemd-helper enable printgate.service",
			},
			wantNot: []string{"deb-systemd-invoke"},
		},
		{
			name:      "upgrade keeps a running print",
			args:      []string{"configure", "0.1.0"},
			userExist: true,
			systemd:   true,
			want: []string{
				"adduser --quiet printgate dialout",
				"deb-systemd-helper enable printgate.service",
				"systemctl --system daemon-reload",
			},
			wantNot: []string{"addgroup", "--system --ingroup", "deb-systemd-invoke restart", "deb-systemd-invoke start"},
		},
	}
	script := filepath.Join(t.TempDir(), "postinst")
	if err := os.WriteFile(script, []byte(mustRead(t, "postinst")), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.systemd {
				if _, err := os.Stat("/run/systemd/system"); err != nil {
					t.Skip("needs /run/systemd/system (a systemd host) to take the running-systemd path")
				}
			}
			bin := t.TempDir()
			log := filepath.Join(t.TempDir(), "calls")
			record := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> " + log + "\n"
			for _, tool := range []string{"addgroup", "adduser", "deb-systemd-helper", "deb-systemd-invoke", "systemctl"} {
				if err := os.WriteFile(filepath.Join(bin, tool), []byte(record+"exit 0\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			getent := "#!/bin/sh\ncase \"$2\" in dialout) exit 0;; esac\nexit 2\n"
			if tt.userExist {
				getent = "#!/bin/sh\nexit 0\n"
			}
			if err := os.WriteFile(filepath.Join(bin, "getent"), []byte(getent), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(script, tt.args...)
			cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("postinst %q: %v: %s", tt.args, err, out)
			}
			b, _ := os.ReadFile(log)
			calls := string(b)
			for _, w := range tt.want {
				if !strings.Contains(calls, w+"\n") {
					t.Errorf("postinst %q calls:\n%s\nwant a call %q", tt.args, calls, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(calls, w) {
					t.Errorf("postinst %q calls:\n%s\nwant no call containing %q", tt.args, calls, w)
				}
			}
		})
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for [^:]+: ([0-9]+\.[0-9]+)`)

// maxExposure is the goal for `systemd-analyze security`.
const maxExposure = 2.0

// TestUnitSecurityExposure runs systemd's own offline assessment on the unit and fails above
// maxExposure. It also fails if any capability check is not satisfied.
func TestUnitSecurityExposure(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "printgate.service")
	if err := os.WriteFile(unit, []byte(mustRead(t, "printgate.service")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	if err != nil && bytes.Contains(out, []byte("--offline")) {
		t.Skipf("systemd-analyze has no --offline (needs systemd >= 252): %s", out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v; no exposure level in:\n%s", err, out)
	}
	exposure, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security exposure: %.1f", exposure)
	if exposure > maxExposure {
		t.Errorf("exposure = %.1f, want <= %.1f:\n%s", exposure, maxExposure, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "CapabilityBoundingSet=") && !strings.Contains(line, "✓") {
			t.Errorf("capability granted: %s", strings.TrimSpace(line))
		}
		if strings.Contains(line, "AmbientCapabilities=") && !strings.Contains(line, "✓") {
			t.Errorf("ambient capability: %s", strings.TrimSpace(line))
		}
	}
}

// TestUnitDirectives pins the directives the issue names, so a later edit cannot drop one
// silently (the exposure score alone would hide some, e.g. Restart or TimeoutStopSec).
func TestUnitDirectives(t *testing.T) {
	unit := mustRead(t, "printgate.service")
	set := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		set[k] = append(set[k], v)
	}
	want := map[string]string{
		"Type":                   "notify",
		"Restart":                "on-failure",
		"User":                   "printgate",
		"Group":                  "printgate",
		"SupplementaryGroups":    "dialout",
		"CapabilityBoundingSet":  "",
		"AmbientCapabilities":    "",
		"NoNewPrivileges":        "yes",
		"ProtectSystem":          "strict",
		"ProtectHome":            "yes",
		"PrivateTmp":             "yes",
		"StateDirectory":         "printgate",
		"StateDirectoryMode":     "0700",
		"DevicePolicy":           "closed",
		"UMask":                  "0077",
		"MemoryDenyWriteExecute": "yes",
		"EnvironmentFile":        "-/etc/default/printgate",
		"ExecStart":              "/usr/bin/printgate run --state /var/lib/printgate $PRINTGATE_ARGS",
		"WantedBy":               "multi-user.target",
	}
	for k, v := range want {
		if got := set[k]; len(got) != 1 || got[0] != v {
			t.Errorf("unit %s = %q, want exactly [%q]", k, got, v)
		}
	}
	if _, ok := set["PrivateDevices"]; ok {
		t.Errorf("unit sets PrivateDevices, which hides the serial ports")
	}
	if got := strings.Join(set["DeviceAllow"], ","); !strings.Contains(got, "char-ttyACM rw") || !strings.Contains(got, "char-ttyUSB rw") {
		t.Errorf("unit DeviceAllow = %q, want char-ttyACM rw and char-ttyUSB rw", got)
	}
	if len(set["WatchdogSec"]) != 1 {
		t.Errorf("unit has no WatchdogSec")
	}
	if v := set["TimeoutStopSec"]; len(v) != 1 {
		t.Errorf("unit TimeoutStopSec = %q, want one value", v)
	} else if n, err := strconv.Atoi(v[0]); err != nil || n < 20 {
		t.Errorf("unit TimeoutStopSec = %q, want >= 20 s for the heaters-off path", v[0])
	}
}

func TestDebDoc(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "appliance.md")
	if err := os.WriteFile(doc, []byte("# appliance\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := buildDeb(t, Options{Arch: "arm64", Version: "1", Binary: fakeBinary(t), Doc: doc})
	ms, err := readAr(b)
	if err != nil {
		t.Fatal(err)
	}
	data := readTarGz(t, ms[2].name, ms[2].data)
	f, ok := data[DocPath]
	if !ok {
		t.Fatalf("%s not in the package", DocPath)
	}
	if m := f.hdr.FileInfo().Mode().Perm(); m != 0o644 || string(f.data) != "# appliance\n" {
		t.Errorf("%s: mode %o, content %q; want 644 and the doc", DocPath, m, f.data)
	}
}

func TestDebVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"v0.3.0-4-gabc1234", "0.3.0-4-gabc1234"},
		{"f8d2b97-dirty", "0~gitf8d2b97.dirty"},
		{"dev", "0~gitdev"},
		{"feature/x_y", "0~gitfeature.x.y"},
	}
	for _, tt := range tests {
		got := DebVersion(tt.in)
		if got != tt.want || !debVersionRE.MatchString(got) {
			t.Errorf("DebVersion(%q) = %q, want %q (valid for dpkg)", tt.in, got, tt.want)
		}
	}
	if _, err := FileName(Options{Arch: "amd64", Version: "1.0-", Binary: fakeBinary(t)}); err == nil {
		t.Errorf("FileName with version %q = nil error, want one", "1.0-")
	}
}
