// Tests of deploy/dist.sh: the release binaries are static, trimmed, for the right CPUs, and
// carry their version.
package deploy_test

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDistBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds printgate four times; skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool on PATH")
	}
	dist := t.TempDir()
	const version = "9.8.7-test"
	cmd := exec.Command("./dist.sh", "--deb", version)
	cmd.Env = append(os.Environ(), "DIST="+dist)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dist.sh: %v\n%s", err, out)
	}
	tests := []struct {
		file    string
		machine elf.Machine
		class   elf.Class
		goarch  string
		goarm   string
	}{
		{"printgate_linux_amd64", elf.EM_X86_64, elf.ELFCLASS64, "amd64", ""},
		{"printgate_linux_arm64", elf.EM_AARCH64, elf.ELFCLASS64, "arm64", ""},
		{"printgate_linux_armv6", elf.EM_ARM, elf.ELFCLASS32, "arm", "6"},
		{"printgate_linux_armv7", elf.EM_ARM, elf.ELFCLASS32, "arm", "7"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dist, tt.file)
			f, err := elf.Open(path)
			if err != nil {
				t.Fatalf("elf.Open(%s): %v", path, err)
			}
			defer f.Close()
			if f.Machine != tt.machine || f.Class != tt.class {
				t.Errorf("%s: machine %v %v, want %v %v", tt.file, f.Machine, f.Class, tt.machine, tt.class)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s has an ELF interpreter: not static", tt.file)
				}
			}
			bi, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatalf("buildinfo.ReadFile(%s): %v", path, err)
			}
			settings := map[string]string{}
			for _, s := range bi.Settings {
				settings[s.Key] = s.Value
			}
			want := map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": tt.goarch, "-trimpath": "true"}
			if tt.goarm != "" {
				want["GOARM"] = tt.goarm
			}
			for k, v := range want {
				if settings[k] != v {
					t.Errorf("%s build setting %s = %q, want %q", tt.file, k, settings[k], v)
				}
			}
			// -trimpath keeps -ldflags out of the build info; the stamped string is in the data.
			if b, err := os.ReadFile(path); err != nil || !bytes.Contains(b, []byte(version)) {
				t.Errorf("%s does not contain the version string %q (-X cli.Version)", tt.file, version)
			}
		})
	}
	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(dist, "printgate_linux_amd64"), "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), version) {
			t.Errorf("printgate version = %q, %v, want it to name %s", out, err, version)
		}
	})
	for _, deb := range []string{"printgate_9.8.7-test_amd64.deb", "printgate_9.8.7-test_arm64.deb", "printgate_9.8.7-test_armhf.deb"} {
		if _, err := os.Stat(filepath.Join(dist, deb)); err != nil {
			t.Errorf("dist.sh --deb made no %s: %v", deb, err)
		}
	}
}
