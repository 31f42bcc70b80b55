package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// runCLI runs printgate with args and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code := run(context.Background(), e, args)
	return out.String(), errb.String(), code
}

// contract is DESIGN.md's "Command line" section: every command and flag it names.
var contract = map[string][]string{
	"init":    {"--state", "--endpoint", "--listen-port", "--prefix"},
	"run":     {"--state", "--printer", "--interface", "--boot-dir"},
	"enroll":  {"--state", "--role", "--pubkey", "--qr", "--png", "--conf", "--ttl"},
	"peers":   {"--state", "--json"},
	"revoke":  {"--state"},
	"status":  {"--state", "--json"},
	"mesh":    {"--state", "--json"},
	"sim":     {"--baud", "--latency", "--advanced-ok"},
	"demo":    {},
	"audit":   {"--state"},
	"recover": {"--state"},
	"version": {},
	"help":    {},
}

func TestHelpComplete(t *testing.T) {
	top, _, code := runCLI(t, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d, want 0", code)
	}
	for name, flags := range contract {
		if !regexp.MustCompile(`(?m)^  ` + name + ` `).MatchString(top) {
			t.Errorf("printgate --help does not list %s", name)
		}
		for _, args := range [][]string{{name, "--help"}, {"help", name}} {
			out, _, code := runCLI(t, args...)
			if code != 0 {
				t.Errorf("printgate %v exit %d, want 0", args, code)
			}
			if !strings.HasPrefix(out, "Usage: printgate "+name) {
				t.Errorf("printgate %v does not start with its usage line:\n%s", args, out)
			}
			for _, f := range flags {
				if !strings.Contains(out, "\n  "+f) {
					t.Errorf("printgate %v does not document %s", args, f)
				}
			}
		}
	}
	// Every flag a command declares is in its help (nothing undocumented).
	for _, c := range commands() {
		out, _, _ := runCLI(t, c.name, "--help")
		for _, f := range regexp.MustCompile(`(?m)^  (--[a-z0-9-]+)`).FindAllStringSubmatch(out, -1) {
			if !strings.Contains(c.synopsis+c.long, f[1]) && !strings.Contains(out, f[1]) {
				t.Errorf("%s: flag %s undocumented", c.name, f[1])
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := [][]string{
		{},
		{"frobnicate"},
		{"init"},
		{"init", "--state", "x", "extra"},
		{"enroll", "--state", "x"},
		{"enroll", "--state", "x", "a", "b"},
		{"enroll", "--state", "x", "phone", "--role", "root"},
		{"enroll", "--state", "x", "phone", "--qr", "sixel"},
		{"enroll", "--state", "x", "phone", "--ttl", "-5m"},
		{"enroll", "--state", "x", "bad=name"},
		{"enroll", "--state", "x", "phone", "--pubkey", "abc"},
		{"revoke", "--state", "x"},
		{"run", "--state", "x", "--printer", "nope"},
		{"audit", "--state", "x"},
		{"audit", "check", "--state", "x"},
		{"peers", "--bogus"},
	}
	for _, args := range tests {
		_, errOut, code := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("printgate %q exit %d, want %d (stderr %q)", args, code, exitUsage, errOut)
		}
	}
}

func TestInterspersedFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "st")
	if _, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", "127.0.0.1:51820"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	out, errOut, code := runCLI(t, "enroll", "--state", dir, "laptop", "--role", "operator", "--qr", "none")
	if code != 0 {
		t.Fatalf("enroll: %s", errOut)
	}
	if out == "" || !strings.Contains(errOut, "role operator") { // --qr none: the config alone on stdout
		t.Errorf("enroll NAME --role operator ignored the flag after NAME:\n%s", errOut)
	}
}

// TestEnrollOffline: with no daemon, enroll changes the state directory directly; the .conf
// and PNG are 0600, the API key is printed (also with --qr none), and the device's private
// key is in no file of the state directory.
func TestEnrollOffline(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "st")
	if _, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", "gw.example.org:51820"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	conf, png := filepath.Join(base, "phone.conf"), filepath.Join(base, "phone.png")
	out, errOut, code := runCLI(t, "enroll", "--state", dir, "phone", "--role", "admin", "--qr", "none", "--conf", conf, "--png", png)
	if code != 0 {
		t.Fatalf("enroll: %s", errOut)
	}
	if !regexp.MustCompile(`API key .*: [A-Za-z0-9_-]{43}\n`).MatchString(out) {
		t.Errorf("enroll --qr none printed no API key:\n%s", out)
	}
	for _, p := range []string{conf, png} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", p, err, fi.Mode())
		}
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`PrivateKey = (\S+)`).FindSubmatch(text)
	if m == nil {
		t.Fatalf("config has no PrivateKey:\n%s", text)
	}
	k, err := wgtypes.ParseKey(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	needles := []string{k.String(), hex.EncodeToString(k[:])}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s holds the device's private key", p)
			}
		}
		return nil
	})
	// Refused: overwriting, and writing into the state directory.
	for _, args := range [][]string{
		{"enroll", "--state", dir, "tablet", "--conf", conf},
		{"enroll", "--state", dir, "tablet", "--png", filepath.Join(dir, "x.png")},
	} {
		if _, _, code := runCLI(t, args...); code == 0 {
			t.Errorf("printgate %q succeeded, want a refusal", args)
		}
	}
	out, errOut, code = runCLI(t, "peers", "--state", dir, "--json")
	if code != 0 {
		t.Fatalf("peers: %s", errOut)
	}
	var peers []map[string]any
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		t.Fatalf("peers --json: %v\n%s", err, out)
	}
	if len(peers) != 1 {
		t.Fatalf("peers = %d, want 1 (refused enrollments change nothing)", len(peers))
	}
	for _, key := range []string{"name", "role", "state", "address"} {
		if _, ok := peers[0][key]; !ok {
			t.Errorf("peers --json object lacks %q: %v", key, peers[0])
		}
	}
	if _, _, code := runCLI(t, "revoke", "--state", dir, "phone"); code != 0 {
		t.Errorf("offline revoke failed")
	}
	out, _, _ = runCLI(t, "status", "--state", dir, "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil || st["running"] != false || st["addresses"] == nil {
		t.Errorf("status --json = %v, %v", st, err)
	}
}

func TestRedact(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	in := "PrivateKey = " + k.String() + "\nprivate_key=" + hex.EncodeToString(k[:]) + "\nAPI key: " + strings.Repeat("a", 43)
	out := redact(in)
	if strings.Contains(out, k.String()) || strings.Contains(out, hex.EncodeToString(k[:])) || strings.Contains(out, strings.Repeat("a", 43)) {
		t.Errorf("redact(%q) = %q, secrets remain", in, out)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "printgate "+Version) {
		t.Errorf("version = %q, %d", out, code)
	}
}
