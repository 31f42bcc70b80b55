package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/printgate/printgate/enroll"
)

// runCLIEnv runs printgate with $COLUMNS set to columns ("" unset).
func runCLIEnv(t *testing.T, columns string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string {
		if k == "COLUMNS" {
			return columns
		}
		return ""
	}}
	code := run(context.Background(), e, args)
	return out.String(), errb.String(), code
}

func initState(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "st")
	if _, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", "gw.example.org:51820"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	return dir
}

// TestEnrollConfigOnStdout: `enroll NAME --qr none > laptop.conf` gives a file wg-quick accepts:
// standard output is the config alone, the rest is on standard error.
func TestEnrollConfigOnStdout(t *testing.T) {
	dir := initState(t)
	out, errOut, code := runCLI(t, "enroll", "--state", dir, "laptop", "--role", "admin", "--qr", "none")
	if code != 0 {
		t.Fatalf("enroll: %s", errOut)
	}
	c, err := enroll.ParseConfig([]byte(out))
	if err != nil {
		t.Fatalf("enroll --qr none stdout is not a wg-quick config: %v\n%s", err, out)
	}
	if len(c.Peers) != 1 {
		t.Errorf("config = %+v", c)
	}
	// Nothing but [Interface]/[Peer] sections and key = value lines.
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && line != "[Interface]" && line != "[Peer]" && !regexp.MustCompile(`^[A-Za-z]+ = \S`).MatchString(line) {
			t.Errorf("stdout line %q is not config", line)
		}
	}
	for _, want := range []string{"enrolled laptop", "API key", "dies unused at"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	// Expiry times carry their zone.
	if !regexp.MustCompile(`dies unused at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+\n`).MatchString(errOut) {
		t.Errorf("expiry time without a zone:\n%s", errOut)
	}
}

func TestEnrollTTLDays(t *testing.T) {
	dir := initState(t)
	for _, tt := range []struct {
		ttl  string
		code int
	}{
		{"7d", 0},
		{"1d12h", 0},
		{"8d", exitUsage},
		{"169h", exitUsage},
	} {
		_, errOut, code := runCLI(t, "enroll", "--state", dir, "dev-"+strings.NewReplacer("d", "x").Replace(tt.ttl), "--qr", "none", "--ttl", tt.ttl)
		if code != tt.code {
			t.Errorf("enroll --ttl %s: exit %d (%s), want %d", tt.ttl, code, errOut, tt.code)
		}
		if code == exitUsage && !strings.Contains(errOut, "at most 7 days") {
			t.Errorf("enroll --ttl %s: error %q does not say the limit", tt.ttl, errOut)
		}
	}
}

// TestEnrollQRWidth: the terminal QR fits the terminal (80 columns when unknown), drawn with a
// narrower border if need be, or is replaced by a hint naming --png.
func TestEnrollQRWidth(t *testing.T) {
	dir := initState(t)
	ansi := regexp.MustCompile("\x1b\\[[0-9;]*m")
	for i, tt := range []struct {
		columns string
		drawn   bool
	}{
		{"", true}, // unknown: 80
		{"80", true},
		{"200", true},
		{"60", false},
	} {
		out, errOut, code := runCLIEnv(t, tt.columns, "enroll", "--state", dir, "phone"+string(rune('a'+i)))
		if code != 0 {
			t.Fatalf("enroll: %s", errOut)
		}
		width := 80
		if tt.columns != "" {
			width, _ = strconv.Atoi(tt.columns)
		}
		var qrLines int
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, "\x1b[") {
				continue
			}
			qrLines++
			if n := utf8.RuneCountInString(ansi.ReplaceAllString(line, "")); n > width {
				t.Errorf("COLUMNS=%q: a QR line is %d columns wide", tt.columns, n)
			}
		}
		if drawn := qrLines > 0; drawn != tt.drawn {
			t.Errorf("COLUMNS=%q: QR drawn = %v, want %v", tt.columns, drawn, tt.drawn)
		}
		if !tt.drawn && (!strings.Contains(errOut, "--png") || !strings.Contains(errOut, "columns")) {
			t.Errorf("COLUMNS=%q: no hint on stderr:\n%s", tt.columns, errOut)
		}
	}
}

// TestErrorPrefixOnce: an error is prefixed with the command once ("printgate init: init: ..."
// was doubled).
func TestErrorPrefixOnce(t *testing.T) {
	dir := initState(t)
	_, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", "gw.example.org:51820")
	if code == 0 {
		t.Fatal("init on an initialized directory succeeded")
	}
	if strings.Contains(errOut, "init: init:") || !strings.HasPrefix(errOut, "printgate init: ") {
		t.Errorf("init error = %q, want one \"printgate init: \" prefix", errOut)
	}
}

// TestRunRefusesMissingState: a mistyped --state never makes a new gateway identity; --init
// (the appliance's unit passes it) initializes an absent or empty directory.
func TestRunRefusesMissingState(t *testing.T) {
	base := t.TempDir()
	missing := filepath.Join(base, "typo")
	_, errOut, code := runCLI(t, "run", "--state", missing, "--interface", "none")
	if code == 0 || !strings.Contains(errOut, "printgate init --state "+missing) || !strings.Contains(errOut, "--init") {
		t.Errorf("run on a missing state = exit %d, %q; want a refusal naming printgate init and --init", code, errOut)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("run on a missing state made %s: %v", missing, err)
	}
	empty := filepath.Join(base, "empty") // as systemd's StateDirectory= leaves it
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "run", "--state", empty, "--interface", "none"); code == 0 {
		t.Errorf("run on an empty state directory succeeded")
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("run without --init wrote %d files into the empty state directory", len(ents))
	}

	// With --init: initialized with --endpoint, then the daemon starts; stop it at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" },
		signals: func(context.Context) (context.Context, context.CancelFunc) { return ctx, cancel }}
	run(context.Background(), e, []string{"run", "--state", empty, "--init", "--endpoint", "gw.example.org:51820", "--interface", "none"})
	r, err := enroll.Open(empty)
	if err != nil {
		t.Fatalf("run --init did not initialize the state: %v\n%s", err, errb.String())
	}
	g := r.Gateway()
	r.Close()
	if g.Endpoint != "gw.example.org:51820" || g.EndpointGuessed {
		t.Errorf("run --init --endpoint: endpoint %q (guessed %v)", g.Endpoint, g.EndpointGuessed)
	}
}
