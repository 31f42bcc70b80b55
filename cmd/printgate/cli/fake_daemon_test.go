package cli

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

// fakeDaemon answers the control protocol on a state directory's socket with canned
// answers and records what it was asked: the CLI's side of the protocol, without a gateway.
type fakeDaemon struct {
	mu    sync.Mutex
	reqs  []control.Request
	peers []enroll.PeerView
}

func (f *fakeDaemon) Handle(_ context.Context, req control.Request) control.Response {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	switch req.Op {
	case control.OpPeers:
		return control.Response{Peers: f.peers}
	case control.OpStatus:
		return control.Response{Status: &control.Status{Running: true, PublicKey: "fake-key", ListenPort: 51999,
			Addresses: []string{"10.9.0.1"}, URL: "http://10.9.0.1/", Peers: map[string]int{"active": 2},
			Printers: []control.PrinterInfo{{Name: "mk4", Address: "10.9.0.11", State: "operational"}}}}
	case control.OpEnroll:
		if req.Name == "taken" {
			return control.Response{Error: "enroll taken: already exists"}
		}
		exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		return control.Response{Enrollment: &control.EnrollResult{
			Peer:   enroll.PeerView{Name: req.Name, Role: enroll.Role(req.Role), State: enroll.Pending, Address: "10.9.0.100", ExpiresAt: &exp},
			Config: "[Interface]\nPrivateKey = fake\nAddress = 10.9.0.100/32\n", APIKey: "fake-api-key"}}
	case control.OpRevoke:
		return control.Response{Revoked: &control.RevokeResult{Peer: enroll.PeerView{Name: req.Name, Address: "10.9.0.100"}, AppliedSeconds: 0.002, ClosedConns: 3}}
	}
	return control.Response{Error: "unknown op"}
}

func (f *fakeDaemon) requests() []control.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]control.Request(nil), f.reqs...)
}

// startFakeDaemon serves a fakeDaemon with peers on dir's control socket until the test ends.
func startFakeDaemon(t *testing.T, dir string, peers ...enroll.PeerView) *fakeDaemon {
	t.Helper()
	ln, err := net.Listen("unix", control.Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{peers: peers}
	srv := &control.Server{Handler: control.HandlerFunc(func(ctx context.Context, req control.Request) control.Response {
		return f.Handle(ctx, req)
	}), Logf: t.Logf}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return f
}

// TestCLIAgainstFakeDaemon: every command that talks to the daemon sends the request the
// contract implies and shows the daemon's answer, never touching the state directory.
func TestCLIAgainstFakeDaemon(t *testing.T) {
	dir := t.TempDir() // no state at all: only the daemon can answer
	f := startFakeDaemon(t, dir, enroll.PeerView{Name: "phone", Role: enroll.Operator, State: enroll.Active, Address: "10.9.0.100", RxBytes: 2048})

	out, errOut, code := runCLI(t, "peers", "--state", dir, "--json")
	if code != 0 {
		t.Fatalf("peers --json: exit %d: %s", code, errOut)
	}
	var peers []map[string]any
	if err := json.Unmarshal([]byte(out), &peers); err != nil || len(peers) != 1 || peers[0]["name"] != "phone" || peers[0]["rx_bytes"] != 2048.0 {
		t.Errorf("peers --json = %s (%v), want the daemon's phone", out, err)
	}
	if out, _, code = runCLI(t, "peers", "--state", dir); code != 0 || !strings.Contains(out, "phone") || !strings.Contains(out, "2.0 KiB") {
		t.Errorf("peers = %d %q, want a table with phone", code, out)
	}

	out, errOut, code = runCLI(t, "status", "--state", dir, "--json")
	var st control.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Running || st.ListenPort != 51999 || len(st.Printers) != 1 {
		t.Errorf("status --json = %d %s %s, want the daemon's status", code, out, errOut)
	}

	conf := filepath.Join(t.TempDir(), "laptop.conf")
	out, errOut, code = runCLI(t, "enroll", "--state", dir, "laptop", "--role", "admin", "--ttl", "1h", "--qr", "none", "--conf", conf)
	if code != 0 || !strings.Contains(out, "enrolled laptop: role admin, address 10.9.0.100") || !strings.Contains(out, "fake-api-key") {
		t.Errorf("enroll = %d %q %q", code, out, errOut)
	}
	if _, errOut, code = runCLI(t, "enroll", "--state", dir, "taken", "--qr", "none"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("enroll of a taken name = %d %q, want exit 1 with the daemon's error", code, errOut)
	}

	out, errOut, code = runCLI(t, "revoke", "--state", dir, "laptop")
	if code != 0 || !strings.Contains(out, "revoked laptop (10.9.0.100)") || !strings.Contains(out, "3 open connections closed") {
		t.Errorf("revoke = %d %q %q", code, out, errOut)
	}

	want := []control.Request{
		{Op: control.OpPeers}, {Op: control.OpPeers}, {Op: control.OpStatus},
		{Op: control.OpEnroll, Name: "laptop", Role: "admin", TTL: "1h0m0s"},
		{Op: control.OpEnroll, Name: "taken", Role: "viewer", TTL: "15m0s"},
		{Op: control.OpRevoke, Name: "laptop"},
	}
	got := f.requests()
	if len(got) != len(want) {
		t.Fatalf("daemon got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestPeersJSONNames: `peers --json` prints the control socket's peer view unchanged, so its
// names are enroll.PeerView's, the ones the web API's device list uses (the gateway's
// TestPeerViewSameNames compares those two).
func TestPeersJSONNames(t *testing.T) {
	now := time.Now()
	age := 12.5
	full := enroll.PeerView{Name: "phone", Role: enroll.Admin, State: enroll.Pending, Address: "10.9.0.100", Address6: "fd00::100",
		PublicKey: "k", OwnKey: true, HasAPIKey: true, APIKeyRole: enroll.Viewer, Created: now, ExpiresAt: &now, RevokedAt: &now,
		LastHandshake: &now, LastHandshakeAge: &age, Endpoint: "192.0.2.1:5000", RxBytes: 1, TxBytes: 2, Clone: true}
	dir := t.TempDir()
	startFakeDaemon(t, dir, full)
	out, errOut, code := runCLI(t, "peers", "--state", dir, "--json")
	if code != 0 {
		t.Fatalf("peers --json: %s", errOut)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		t.Fatalf("peers --json = %s, %v", out, err)
	}
	want := map[string]any{}
	b, _ := json.Marshal(full)
	json.Unmarshal(b, &want)
	if len(got[0]) != len(want) {
		t.Errorf("peers --json names = %v, want enroll.PeerView's %v", got[0], want)
	}
	for k := range want {
		if _, ok := got[0][k]; !ok {
			t.Errorf("peers --json lacks %q", k)
		}
	}
	for _, k := range []string{"name", "role", "state", "address", "last_handshake_age_seconds"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("peers --json lacks the contract's %q", k)
		}
	}
}
