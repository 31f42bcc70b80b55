package printgate_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// TestLintWithoutGit: `make lint` (which `make test` runs first) works in a tree that is not a
// git checkout, an unpacked source tarball, and never reads standard input: its stdin here is a
// pipe that is never written or closed, so a read would hang until the deadline. The gofmt step
// must still find an unformatted file. Vet is left out (GO=true): it is the same either way.
func TestLintWithoutGit(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("needs make: %v", err)
	}
	tree := t.TempDir()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != "." && (strings.HasPrefix(n, ".") || n == "bin" || n == "out" || n == "dist") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(tree, path), 0o755)
		}
		if path != "Makefile" && !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tree, path), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	lint := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "lint", "GO=true")
		cmd.Dir = tree
		// On the deadline kill the whole process group (gofmt under make's shell, too), and
		// stop waiting for pipes a straggler may still hold.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		cmd.Env = append(os.Environ(), "GIT_DIR="+filepath.Join(tree, "no-such-git-dir"), "GIT_CEILING_DIRECTORIES="+filepath.Dir(tree))
		stdin, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		defer w.Close()
		cmd.Stdin = stdin // an *os.File: the child gets it directly, no copying goroutine
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("make lint still running after a minute (reading standard input?):\n%s", out)
		}
		return string(out), err
	}
	if out, err := lint(); err != nil {
		t.Fatalf("make lint in a tree without .git: %v\n%s", err, out)
	} else if strings.Contains(out, "not a git repository") {
		t.Errorf("make lint asked git in a tree without .git:\n%s", out)
	}
	bad := filepath.Join(tree, "zz_unformatted.go")
	if err := os.WriteFile(bad, []byte("package printgate_test\nvar  x=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := lint(); err == nil || !strings.Contains(out, "zz_unformatted.go") {
		t.Errorf("make lint with an unformatted file = %v, want failure naming it:\n%s", err, out)
	}
}

// TestReadmePackagesMatchCI: the Debian packages the README tells a user to install for the
// tests are exactly those .ci/run installs.
func TestReadmePackagesMatchCI(t *testing.T) {
	pkgs := func(file string) map[string]bool {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// The install command may continue over lines ending in a backslash.
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			_, rest, ok := strings.Cut(line, "apt-get install")
			if !ok {
				continue
			}
			set := map[string]bool{}
			for _, f := range strings.Fields(rest) {
				if !strings.HasPrefix(f, "-") && !strings.ContainsAny(f, ">&|;") {
					set[f] = true
				}
			}
			return set
		}
		t.Fatalf("%s has no apt-get install line", file)
		return nil
	}
	ci, readme := pkgs(".ci/run"), pkgs("README.md")
	for p := range ci {
		if !readme[p] {
			t.Errorf(".ci/run installs %s, README.md does not list it", p)
		}
	}
	for p := range readme {
		if !ci[p] {
			t.Errorf("README.md lists %s, .ci/run does not install it", p)
		}
	}
}

// TestOneTTLStory: the README and the enrollment docs tell the default TTL the code has (the
// demo uses it too: TestDemo).
func TestOneTTLStory(t *testing.T) {
	if enroll.DefaultTTL != 15*time.Minute {
		t.Fatalf("enroll.DefaultTTL = %v; update README.md, docs/enroll.md and docs/threat-model.md", enroll.DefaultTTL)
	}
	for _, f := range []string{"README.md", "docs/enroll.md", "docs/threat-model.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "15 minutes") || strings.Contains(string(b), "pending for 1 hour") {
			t.Errorf("%s does not say an enrollment dies unused after 15 minutes", f)
		}
	}
}

// TestMakeInstall: `make install` puts the binary the README's commands call in
// $(DESTDIR)$(PREFIX)/bin/printgate, and it runs.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("needs make: %v", err)
	}
	dest := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "install", "DESTDIR="+dest, "PREFIX=/opt/pg")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	bin := filepath.Join(dest, "opt/pg/bin/printgate")
	fi, err := os.Stat(bin)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("%s: %v, want an executable (0755)", bin, err)
	}
	if out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "printgate") {
		t.Errorf("installed printgate version: %v %q", err, out)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "make install") {
		t.Errorf("README.md's commands call printgate but never say how it gets on the PATH (make install)")
	}
}
