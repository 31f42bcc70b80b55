// Tests of the image pipeline that need no booted VM: the arm64 .deb in a real Debian arm64
// root filesystem (dpkg under qemu-user), customize.sh's result, and the package life cycle.
package image_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/printgate/printgate/deploy/debian"
)

// baseTarball finds the cached base root filesystem that deploy/image/build.sh makes.
func baseTarball(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PRINTGATE_IMAGE_BASE"); p != "" {
		return p
	}
	cache := os.Getenv("CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "printgate-image")
	}
	m, _ := filepath.Glob(filepath.Join(cache, "base-*-arm64-*.tar"))
	if len(m) == 0 {
		t.Skipf("no base root filesystem in %s: run deploy/image/build.sh --base-only (about 5 min) or set PRINTGATE_IMAGE_BASE", cache)
	}
	sort.Slice(m, func(i, j int) bool {
		a, _ := os.Stat(m[i])
		b, _ := os.Stat(m[j])
		return a.ModTime().After(b.ModTime())
	})
	return m[0]
}

func needRootAndQemu(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot, dpkg, file ownership)")
	}
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/qemu-aarch64"); err != nil {
		t.Skip("needs qemu-user-static with binfmt_misc for aarch64 (see docs/appliance.md, building the image)")
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out.String())
	}
	return out.String()
}

// buildDeb packages a real arm64 printgate binary.
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "printgate")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/printgate")
	cmd.Dir = "../.." // the root module: deploy/ is a module of its own
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build arm64 printgate: %v\n%s", err, out)
	}
	deb := filepath.Join(dir, "printgate_"+version+"_arm64.deb")
	f, err := os.Create(deb)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := debian.Build(f, debian.Options{Arch: "arm64", Version: version, Binary: bin}); err != nil {
		t.Fatalf("debian.Build: %v", err)
	}
	return deb
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestDebInArm64Rootfs installs the arm64 package into the Debian arm64 root filesystem with
// customize.sh (dpkg -i under qemu-user), then checks the result and the package life cycle:
// upgrade keeps the edited conffile, remove keeps state, purge removes it.
func TestDebInArm64Rootfs(t *testing.T) {
	needRootAndQemu(t)
	base := baseTarball(t)
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "tar", "--numeric-owner", "-xpf", base, "-C", root)
	deb1 := buildDeb(t, "0.1.0")
	run(t, "./customize.sh", root, deb1)
	chroot := func(args ...string) string {
		t.Helper()
		return run(t, "chroot", append([]string{root}, args...)...)
	}

	t.Run("installed and enabled", func(t *testing.T) {
		if got := chroot("dpkg-query", "-W", "-f=${Status} ${Version} ${Architecture}", "printgate"); got != "install ok installed 0.1.0 arm64" {
			t.Errorf("dpkg-query printgate = %q, want installed 0.1.0 arm64", got)
		}
		link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/printgate.service")
		if target, err := os.Readlink(link); err != nil || target != debian.UnitPath {
			t.Errorf("enable link = %q, %v, want -> %s", target, err, debian.UnitPath)
		}
		if got := strings.Fields(chroot("id", "-nG", "printgate")); !slices.Contains(got, "dialout") {
			t.Errorf("id -nG printgate = %q, want dialout among the groups", got)
		}
		pw := strings.Split(strings.TrimSpace(chroot("getent", "passwd", "printgate")), ":")
		if len(pw) != 7 || pw[6] != "/usr/sbin/nologin" {
			t.Errorf("passwd entry %q, want a nologin system user", pw)
		} else if uid, _ := strconv.Atoi(pw[2]); uid >= 1000 || uid == 0 {
			t.Errorf("printgate uid %d, want a system uid (1-999)", uid)
		}
		if got := chroot("dpkg-query", "-W", "-f=${Conffiles}", "printgate"); !strings.Contains(got, debian.DefaultPath) {
			t.Errorf("conffiles = %q, want %s", got, debian.DefaultPath)
		}
		if exists(filepath.Join(root, "var/lib/printgate")) {
			t.Errorf("/var/lib/printgate exists in the image: state must be made on first boot")
		}
	})

	t.Run("customized", func(t *testing.T) {
		fstab, _ := os.ReadFile(filepath.Join(root, "etc/fstab"))
		for _, want := range []string{"LABEL=rootfs", "LABEL=BOOTFS", "/boot/firmware", "x-systemd.device-timeout=90s"} {
			if !bytes.Contains(fstab, []byte(want)) {
				t.Errorf("fstab lacks %q:\n%s", want, fstab)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(root, "etc/machine-id")); len(b) != 0 {
			t.Errorf("machine-id baked into the image: %q", b)
		}
		if !exists(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/systemd-networkd.service")) {
			t.Errorf("systemd-networkd not enabled")
		}
		cmdline, _ := os.ReadFile(filepath.Join(root, "boot/firmware/cmdline.txt"))
		if !bytes.Contains(cmdline, []byte("root=LABEL=rootfs")) || bytes.Contains(cmdline, []byte("mmcblk0p2")) {
			t.Errorf("cmdline.txt = %q, want root=LABEL=rootfs", cmdline)
		}
	})

	t.Run("exposure with the appliance drop-in", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("systemd-analyze not installed")
		}
		out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", "--root="+root, "printgate.service").CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for printgate.service: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure in:\n%s", out)
		}
		if v, _ := strconv.ParseFloat(string(m[1]), 64); v > 2.0 {
			t.Errorf("exposure in the image = %.1f, want <= 2.0", v)
		}
		t.Logf("exposure in the image (unit + appliance drop-in): %s", m[1])
	})

	t.Run("upgrade keeps the edited conffile", func(t *testing.T) {
		def := filepath.Join(root, "etc/default/printgate")
		edited := []byte("PRINTGATE_ARGS=\"--printer mk3=/dev/ttyACM0\"\n")
		if err := os.WriteFile(def, edited, 0o644); err != nil {
			t.Fatal(err)
		}
		deb2 := buildDeb(t, "0.2.0")
		if err := os.WriteFile(filepath.Join(root, "tmp/p.deb"), must(os.ReadFile(deb2)), 0o644); err != nil {
			t.Fatal(err)
		}
		chroot("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "--force-confdef", "--force-confold", "/tmp/p.deb")
		if got, _ := os.ReadFile(def); !bytes.Equal(got, edited) {
			t.Errorf("after upgrade /etc/default/printgate = %q, want the edit %q kept", got, edited)
		}
		if got := chroot("dpkg-query", "-W", "-f=${Version}", "printgate"); got != "0.2.0" {
			t.Errorf("version after upgrade = %q, want 0.2.0", got)
		}
		if !exists(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/printgate.service")) {
			t.Errorf("unit no longer enabled after upgrade")
		}
	})

	t.Run("remove keeps state, purge removes it", func(t *testing.T) {
		state := filepath.Join(root, "var/lib/printgate")
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "roster.json"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		chroot("dpkg", "-r", "printgate")
		if exists(filepath.Join(root, "usr/bin/printgate")) || exists(filepath.Join(root, "lib/systemd/system/printgate.service")) {
			t.Errorf("binary or unit left after remove")
		}
		if !exists(filepath.Join(state, "roster.json")) || !exists(filepath.Join(root, "etc/default/printgate")) {
			t.Errorf("remove deleted state or the conffile; only purge may")
		}
		chroot("dpkg", "--purge", "printgate")
		for _, p := range []string{"var/lib/printgate", "etc/default/printgate", "etc/systemd/system/multi-user.target.wants/printgate.service", "etc/systemd/system/printgate.service"} {
			if exists(filepath.Join(root, p)) {
				t.Errorf("/%s left after purge", p)
			}
		}
		if got := chroot("sh", "-c", "dpkg-query -W -f='${Status}' printgate 2>&1 || true"); strings.Contains(got, "installed") && !strings.Contains(got, "not-installed") {
			t.Errorf("dpkg status after purge = %q", got)
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
