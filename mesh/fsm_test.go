package mesh

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

func newKey(t testing.TB) Key {
	t.Helper()
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

// fsmHarness applies commands to an FSM as raft would, one index after another.
type fsmHarness struct {
	t     *testing.T
	f     *FSM
	index uint64
	now   time.Time
}

func newHarness(t *testing.T, p4, p6 string) *fsmHarness {
	h := &fsmHarness{t: t, f: NewFSM(), now: t0}
	init := InitCmd{Prefix4: netip.MustParsePrefix(p4), Gateway: AddGatewayCmd{Name: "gw1", PublicKey: newKey(t), Endpoint: "gw1.example:51820"}}
	if p6 != "" {
		init.Prefix6 = netip.MustParsePrefix(p6)
	}
	h.mustApply(Command{Init: &init})
	return h
}

func (h *fsmHarness) apply(c Command) (Result, error) {
	h.t.Helper()
	if c.At.IsZero() {
		c.At = h.now
	}
	data, err := json.Marshal(c)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	res := h.f.Apply(&raft.Log{Index: h.index, Data: data}).(applyResult)
	return res.Result, res.err
}

func (h *fsmHarness) mustApply(c Command) Result {
	h.t.Helper()
	res, err := h.apply(c)
	if err != nil {
		h.t.Fatalf("apply %s: %v", c.op(), err)
	}
	return res
}

func (h *fsmHarness) enroll(name string) Device {
	h.t.Helper()
	return *h.mustApply(Command{Enroll: &EnrollCmd{Name: name, Role: Viewer, PublicKey: newKey(h.t), Home: "gw1"}}).Device
}

func TestEnrollAllocatesDeterministically(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "fd00:1:2:3::/64")
	gw, _ := h.f.Roster().Gateway("gw1")
	if gw.IPv4 != netip.MustParseAddr("10.77.0.1") || gw.IPv6 != netip.MustParseAddr("fd00:1:2:3::1") {
		t.Errorf("first gateway at %v %v, want 10.77.0.1 fd00:1:2:3::1", gw.IPv4, gw.IPv6)
	}
	for i, want := range []string{"10.77.0.100", "10.77.0.101"} {
		d := h.enroll("dev" + string(rune('a'+i)))
		if d.IPv4.String() != want || d.State != Active || !d.Created.Equal(t0) {
			t.Errorf("enroll #%d = %v created %v, want %s active at %v", i, d, d.Created, want, t0)
		}
	}
	d, _ := h.f.Roster().Device("devb")
	if d.IPv6 != netip.MustParseAddr("fd00:1:2:3::65") {
		t.Errorf("devb IPv6 = %v, want fd00:1:2:3::65 (offset 101)", d.IPv6)
	}
	if got, ok := h.f.Roster().WhoIs(netip.MustParseAddr("fd00:1:2:3::65")); !ok || got.Name != "devb" {
		t.Errorf("WhoIs(fd00:1:2:3::65) = %v, %v; want devb", got, ok)
	}
}

func TestAllocationSkipsDotZeroAndBroadcast(t *testing.T) {
	h := newHarness(t, "10.9.0.0/23", "")
	var last Device
	for i := 0; i < 500; i++ {
		d, err := h.apply(Command{Enroll: &EnrollCmd{Name: "d" + strconv.Itoa(i), Role: Viewer, PublicKey: newKey(t), Home: "gw1"}})
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("enroll #%d: %v", i, err)
			}
			// 100..510 minus 10.9.0.255 and 10.9.1.0: 409 usable, 511 is broadcast.
			if i != 409 {
				t.Errorf("exhausted after %d devices, want 409", i)
			}
			break
		}
		last = *d.Device
		if b := last.IPv4.As4()[3]; b == 0 || b == 255 {
			t.Errorf("device %d got %v", i, last.IPv4)
		}
	}
	if last.IPv4 != netip.MustParseAddr("10.9.1.254") {
		t.Errorf("last allocation %v, want 10.9.1.254", last.IPv4)
	}
}

func TestEnrollRefusals(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	k := newKey(t)
	first := h.mustApply(Command{Enroll: &EnrollCmd{Name: "alice", Role: Admin, PublicKey: k, Home: "gw1"}}).Device
	again := h.mustApply(Command{Enroll: &EnrollCmd{Name: "alice", Role: Admin, PublicKey: k, Home: "gw1"}}).Device
	if again.IPv4 != first.IPv4 {
		t.Errorf("retried enrollment got %v, want the same %v", again.IPv4, first.IPv4)
	}
	gwKey := h.f.Roster().Gateways()[0].PublicKey
	for _, tc := range []struct {
		name string
		e    EnrollCmd
		want error
	}{
		{"same name other key", EnrollCmd{Name: "alice", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}, ErrExists},
		{"same key other name", EnrollCmd{Name: "bob", Role: Viewer, PublicKey: k, Home: "gw1"}, ErrExists},
		{"gateway's key", EnrollCmd{Name: "bob", Role: Viewer, PublicKey: gwKey, Home: "gw1"}, ErrExists},
		{"bad name", EnrollCmd{Name: "-x", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}, ErrInvalid},
		{"bad role", EnrollCmd{Name: "bob", Role: "root", PublicKey: newKey(t), Home: "gw1"}, ErrInvalid},
		{"no key", EnrollCmd{Name: "bob", Role: Viewer, Home: "gw1"}, ErrInvalid},
		{"short hash", EnrollCmd{Name: "bob", Role: Viewer, PublicKey: newKey(t), Home: "gw1", APIKeyHash: []byte{1}}, ErrInvalid},
		{"unknown home", EnrollCmd{Name: "bob", Role: Viewer, PublicKey: newKey(t), Home: "gw9"}, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.f.Roster()
			if _, err := h.apply(Command{Enroll: &tc.e}); !errors.Is(err, tc.want) {
				t.Errorf("enroll = %v, want %v", err, tc.want)
			}
			if !before.Equal(h.f.Roster()) {
				t.Errorf("a refused enroll changed the roster")
			}
		})
	}
}

func TestRevokeIsForGood(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	k := newKey(t)
	d := *h.mustApply(Command{Enroll: &EnrollCmd{Name: "alice", Role: Admin, PublicKey: k, Home: "gw1"}}).Device
	old := h.f.Roster()
	h.now = t0.Add(time.Minute)
	h.mustApply(Command{Revoke: &RevokeCmd{Name: "alice", PublicKey: k}})
	if got, _ := old.Device("alice"); got.State != Active {
		t.Errorf("a published roster changed: alice is %s in the old one", got.State)
	}
	got, _ := h.f.Roster().WhoIs(d.IPv4)
	if got.State != Revoked || !got.RevokedAt.Equal(h.now) {
		t.Errorf("after revoke WhoIs = %v at %v, want revoked at %v", got, got.RevokedAt, h.now)
	}
	h.mustApply(Command{Revoke: &RevokeCmd{Name: "alice"}}) // idempotent
	for _, tc := range []struct {
		name string
		c    Command
		want error
	}{
		{"name again", Command{Enroll: &EnrollCmd{Name: "alice", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}}, ErrRevoked},
		{"key again", Command{Enroll: &EnrollCmd{Name: "alice2", Role: Viewer, PublicKey: k, Home: "gw1"}}, ErrRevoked},
		{"same enrollment again", Command{Enroll: &EnrollCmd{Name: "alice", Role: Admin, PublicKey: k, Home: "gw1"}}, ErrRevoked},
		{"role of revoked", Command{SetRole: &SetRoleCmd{Name: "alice", Role: Viewer}}, ErrRevoked},
		{"unknown", Command{Revoke: &RevokeCmd{Name: "nobody"}}, ErrNotFound},
		{"wrong key", Command{Revoke: &RevokeCmd{Name: "alice", PublicKey: newKey(t)}}, ErrNotFound},
	} {
		if _, err := h.apply(tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if next := h.enroll("carol"); next.IPv4 == d.IPv4 {
		t.Errorf("revoked address %v handed out again", d.IPv4)
	}
}

func TestSetRole(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	h.enroll("alice")
	d := h.mustApply(Command{SetRole: &SetRoleCmd{Name: "alice", Role: Operator}}).Device
	if d.Role != Operator {
		t.Errorf("role = %s, want operator", d.Role)
	}
	if _, err := h.apply(Command{SetRole: &SetRoleCmd{Name: "alice", Role: "god"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("set role god = %v, want ErrInvalid", err)
	}
}

func TestGateways(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	k2 := newKey(t)
	gw2 := *h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: k2, Endpoint: "gw2:51820"}}).Gateway
	if gw2.IPv4 != netip.MustParseAddr("10.77.0.2") {
		t.Errorf("gw2 at %v, want 10.77.0.2", gw2.IPv4)
	}
	if again := h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: k2, Endpoint: "gw2:51820"}}).Gateway; again.IPv4 != gw2.IPv4 {
		t.Errorf("re-adding gw2 moved it to %v", again.IPv4)
	}
	if _, err := h.apply(Command{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: newKey(t), Endpoint: "x:1"}}); !errors.Is(err, ErrExists) {
		t.Errorf("gw2 with another key = %v, want ErrExists", err)
	}
	for _, n := range []string{"zed", "amy"} {
		h.mustApply(Command{Enroll: &EnrollCmd{Name: n, Role: Viewer, PublicKey: newKey(t), Home: "gw2"}})
	}
	h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "mk4", Gateway: "gw2"}})
	_, err := h.apply(Command{RemoveGateway: &RemoveGatewayCmd{Name: "gw2"}})
	if !errors.Is(err, ErrHomed) || !strings.Contains(err.Error(), "amy, zed") {
		t.Fatalf("remove gw2 with devices = %v, want ErrHomed listing amy, zed", err)
	}
	h.mustApply(Command{Revoke: &RevokeCmd{Name: "amy"}})
	h.mustApply(Command{Revoke: &RevokeCmd{Name: "zed"}})
	h.mustApply(Command{RemoveGateway: &RemoveGatewayCmd{Name: "gw2"}})
	h.mustApply(Command{RemoveGateway: &RemoveGatewayCmd{Name: "gw2"}}) // retried: the same removal
	r := h.f.Roster()
	if _, ok := r.Gateway("gw2"); ok {
		t.Error("gw2 still in the roster")
	}
	if _, ok := r.Printer("mk4"); ok {
		t.Error("gw2's printer mk4 still in the roster")
	}
	gw3 := *h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw3", PublicKey: newKey(t), Endpoint: "gw3:51820"}}).Gateway
	if gw3.IPv4 == gw2.IPv4 {
		t.Errorf("gw3 got removed gw2's address %v", gw3.IPv4)
	}
	p := *h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "mk4", Gateway: "gw3"}}).Printer
	if p.IPv4 == netip.MustParseAddr("10.77.0.11") {
		t.Errorf("printer got the retired address %v", p.IPv4)
	}
	if _, err := h.apply(Command{RemoveGateway: &RemoveGatewayCmd{Name: "nope"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove unknown = %v, want ErrNotFound", err)
	}
	// A removed gateway may come back (a new address), and then be removed again.
	back := *h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: newKey(t), Endpoint: "gw2:51820"}}).Gateway
	if back.IPv4 == gw2.IPv4 {
		t.Errorf("gw2 back at its retired address %v", back.IPv4)
	}
	h.mustApply(Command{RemoveGateway: &RemoveGatewayCmd{Name: "gw2"}})
}

func TestGatewayRangeOverflowsToPool(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	h.enroll("first") // takes pool offset 100
	var last Gateway
	for i := 2; i <= 11; i++ {
		last = *h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw" + strconv.Itoa(i), PublicKey: newKey(t), Endpoint: "x:1"}}).Gateway
	}
	if last.IPv4 != netip.MustParseAddr("10.77.0.101") {
		t.Errorf("11th gateway at %v, want the pool's next 10.77.0.101", last.IPv4)
	}
	if d := h.enroll("second"); d.IPv4 != netip.MustParseAddr("10.77.0.102") {
		t.Errorf("device after the overflow at %v, want 10.77.0.102", d.IPv4)
	}
}

func TestPrinterNamesUniqueAcrossMesh(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: newKey(t), Endpoint: "gw2:1"}})
	p := *h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "mk4", Gateway: "gw1"}}).Printer
	if p.IPv4 != netip.MustParseAddr("10.77.0.11") {
		t.Errorf("first printer at %v, want 10.77.0.11", p.IPv4)
	}
	if again := *h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "mk4", Gateway: "gw1"}}).Printer; again != p {
		t.Errorf("same printer on the same gateway = %+v, want %+v", again, p)
	}
	_, err := h.apply(Command{AddPrinter: &AddPrinterCmd{Name: "mk4", Gateway: "gw2"}})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already used on gateway gw1") {
		t.Errorf("mk4 on gw2 = %v, want ErrExists naming gw1", err)
	}
}

func TestJoinTokens(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	k, stale := newKey(t), newKey(t)
	h.mustApply(Command{AddToken: &AddTokenCmd{PublicKey: stale, Inviter: "gw1", Expires: t0.Add(time.Minute)}})
	h.mustApply(Command{AddToken: &AddTokenCmd{PublicKey: k, Inviter: "gw1", Expires: t0.Add(15 * time.Minute)}})
	h.mustApply(Command{AddToken: &AddTokenCmd{PublicKey: k, Inviter: "gw1", Expires: t0.Add(15 * time.Minute)}}) // retried
	if _, err := h.apply(Command{AddToken: &AddTokenCmd{PublicKey: k, Inviter: "gw1", Expires: t0.Add(time.Hour)}}); !errors.Is(err, ErrExists) {
		t.Errorf("the same token key with another expiry = %v, want ErrExists", err)
	}
	if _, err := h.apply(Command{AddToken: &AddTokenCmd{PublicKey: newKey(t), Inviter: "gw1", Expires: t0}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("token expiring now = %v, want ErrInvalid", err)
	}
	h.now = t0.Add(2 * time.Minute)
	if _, err := h.apply(Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: stale, By: "gw2"}}); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("expired token = %v, want ErrTokenExpired", err)
	}
	tok := h.mustApply(Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: k, By: "gw2"}}).Token
	if !tok.Used.Equal(h.now) || tok.By != "gw2" {
		t.Errorf("used token = %+v", tok)
	}
	h.mustApply(Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: k, By: "gw2"}}) // the same use, retried
	if _, err := h.apply(Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: k, By: "gw3"}}); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("second use = %v, want ErrTokenUsed", err)
	}
	// A later add prunes the unused expired token; the used one stays to refuse reuse.
	h.mustApply(Command{AddToken: &AddTokenCmd{PublicKey: newKey(t), Inviter: "gw1", Expires: h.now.Add(time.Hour)}})
	if _, ok := h.f.Roster().Token(stale); ok {
		t.Error("expired unused token not pruned")
	}
	if _, err := h.apply(Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: stale, By: "gw2"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("pruned token = %v, want ErrNotFound", err)
	}
	if _, err := h.apply(Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: k, By: "gw3"}}); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("used token after pruning = %v, want ErrTokenUsed", err)
	}
}

func TestInitRetried(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	gw, _ := h.f.Roster().Gateway("gw1")
	same := InitCmd{Prefix4: netip.MustParsePrefix("10.77.0.0/22"), Gateway: AddGatewayCmd{Name: "gw1", PublicKey: gw.PublicKey, Endpoint: gw.Endpoint}}
	if got := h.mustApply(Command{Init: &same}).Gateway; got.IPv4 != gw.IPv4 {
		t.Errorf("retried init = %v", got)
	}
	other := same
	other.Gateway.PublicKey = newKey(t)
	if _, err := h.apply(Command{Init: &other}); !errors.Is(err, ErrExists) {
		t.Errorf("a second, different init = %v, want ErrExists", err)
	}
}

func TestBeforeInit(t *testing.T) {
	f := NewFSM()
	data, _ := json.Marshal(Command{At: t0, Enroll: &EnrollCmd{Name: "a", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}})
	if res := f.Apply(&raft.Log{Index: 1, Data: data}).(applyResult); !errors.Is(res.err, ErrNoMesh) {
		t.Errorf("enroll before init = %v, want ErrNoMesh", res.err)
	}
	for _, data := range [][]byte{[]byte("{"), []byte(`{"at":"2026-12-03T08:00:00Z"}`), []byte(`{"bogus":1}`)} {
		if res := f.Apply(&raft.Log{Index: 2, Data: data}).(applyResult); !errors.Is(res.err, ErrInvalid) {
			t.Errorf("apply %s = %v, want ErrInvalid", data, res.err)
		}
	}
	bad := InitCmd{Prefix4: netip.MustParsePrefix("8.8.8.0/24"), Gateway: AddGatewayCmd{Name: "gw1", PublicKey: newKey(t), Endpoint: "x:1"}}
	data, _ = json.Marshal(Command{At: t0, Init: &bad})
	if res := f.Apply(&raft.Log{Index: 3, Data: data}).(applyResult); !errors.Is(res.err, ErrInvalid) {
		t.Errorf("init with a public prefix = %v, want ErrInvalid", res.err)
	}
}

type bufSink struct{ bytes.Buffer }

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "fd00:9::/64")
	h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: newKey(t), Endpoint: "gw2:1"}})
	for _, n := range []string{"a", "b", "c"} {
		h.enroll(n)
	}
	h.mustApply(Command{Revoke: &RevokeCmd{Name: "b"}})
	h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "p1", Gateway: "gw2"}})
	h.mustApply(Command{AddGateway: &AddGatewayCmd{Name: "gw3", PublicKey: newKey(t), Endpoint: "gw3:1"}})
	h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "p3", Gateway: "gw3"}})
	h.mustApply(Command{RemoveGateway: &RemoveGatewayCmd{Name: "gw3"}})
	h.mustApply(Command{AddToken: &AddTokenCmd{PublicKey: newKey(t), Inviter: "gw1", Expires: t0.Add(time.Hour)}})

	snap, _ := h.f.Snapshot()
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	raw := sink.String()
	g := NewFSM()
	if err := g.Restore(io.NopCloser(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	if !g.Roster().Equal(h.f.Roster()) || g.Roster().Index() != h.f.Roster().Index() {
		t.Fatalf("restored roster differs:\n got %s\nwant %s", mustJSON(mustMarshal(g.Roster())), raw)
	}
	// The restored roster allocates exactly as the original does.
	h2 := &fsmHarness{t: t, f: g, index: h.index, now: t0}
	if a, b := h.enroll("next"), h2.enroll("next2"); a.IPv4 != b.IPv4 {
		t.Errorf("after restore the next device gets %v, the original %v", b.IPv4, a.IPv4)
	}

	for _, tc := range []struct{ name, from, to string }{
		{"version", `"version":1`, `"version":2`},
		{"unknown field", `"version":1`, `"version":1,"extra":true`},
		{"duplicate address", `"ipv4":"10.77.0.102"`, `"ipv4":"10.77.0.100"`},
	} {
		bad := strings.Replace(raw, tc.from, tc.to, 1)
		if bad == raw {
			t.Fatalf("%s: %q not in the snapshot", tc.name, tc.from)
		}
		if err := NewFSM().Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
			t.Errorf("restore with bad %s: no error", tc.name)
		}
	}
}

func mustMarshal(r *Roster) rosterJSON {
	j, _ := r.marshal()
	return j
}

func TestInitUpgradesSingleGateway(t *testing.T) {
	p4, p6 := netip.MustParsePrefix("10.77.0.0/22"), netip.MustParsePrefix("fd00:5::/64")
	gw := AddGatewayCmd{Name: "gw1", PublicKey: newKey(t), Endpoint: "gw1:51820"}
	alice := Device{Name: "alice", Role: Admin, State: Active, PublicKey: newKey(t), Home: "elsewhere",
		IPv4: netip.MustParseAddr("10.77.0.100"), IPv6: netip.MustParseAddr("fd00:5::64"), APIKeyHash: make([]byte, 32), Created: t0}
	bob := Device{Name: "bob", Role: Viewer, State: Revoked, PublicKey: newKey(t),
		IPv4: netip.MustParseAddr("10.77.0.102"), IPv6: netip.MustParseAddr("fd00:5::66"), Created: t0, RevokedAt: t0}
	mk4 := Printer{Name: "mk4", IPv4: netip.MustParseAddr("10.77.0.11"), IPv6: netip.MustParseAddr("fd00:5::b")}
	upgrade := func(mod func(*InitCmd)) (*fsmHarness, error) {
		h := &fsmHarness{t: t, f: NewFSM(), now: t0}
		init := InitCmd{Prefix4: p4, Prefix6: p6, Gateway: gw, Devices: []Device{alice, bob}, Printers: []Printer{mk4}, NextOffset: 104}
		if mod != nil {
			mod(&init)
		}
		_, err := h.apply(Command{Init: &init})
		return h, err
	}
	h, err := upgrade(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := h.f.Roster()
	if d, _ := r.WhoIs(alice.IPv4); d.Name != "alice" || d.Home != "gw1" || d.State != Active || d.IPv6 != alice.IPv6 {
		t.Errorf("alice after the upgrade = %v home %s", d, d.Home)
	}
	if d, _ := r.Device("bob"); d.State != Revoked {
		t.Errorf("bob after the upgrade is %s, want revoked", d.State)
	}
	if p, _ := r.Printer("mk4"); p.IPv4 != mk4.IPv4 || p.Gateway != "gw1" {
		t.Errorf("mk4 after the upgrade = %+v", p)
	}
	if g, _ := r.Gateway("gw1"); g.IPv4 != netip.MustParseAddr("10.77.0.1") {
		t.Errorf("gateway at %v, want 10.77.0.1 as before", g.IPv4)
	}
	if d := h.enroll("carol"); d.IPv4 != netip.MustParseAddr("10.77.0.104") {
		t.Errorf("first enrollment after the upgrade at %v, want 10.77.0.104 (above the old mark)", d.IPv4)
	}
	if p := h.mustApply(Command{AddPrinter: &AddPrinterCmd{Name: "xl", Gateway: "gw1"}}).Printer; p.IPv4 != netip.MustParseAddr("10.77.0.12") {
		t.Errorf("next printer at %v, want 10.77.0.12", p.IPv4)
	}
	if _, err := h.apply(Command{Enroll: &EnrollCmd{Name: "bob", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}}); !errors.Is(err, ErrRevoked) {
		t.Errorf("re-enrolling imported revoked bob = %v, want ErrRevoked", err)
	}

	for _, tc := range []struct {
		name string
		mod  func(*InitCmd)
		want error
	}{
		{"address outside", func(c *InitCmd) { c.Devices[0].IPv4 = netip.MustParseAddr("10.78.0.100") }, ErrInvalid},
		{"v6 not paired", func(c *InitCmd) { c.Devices[0].IPv6 = netip.MustParseAddr("fd00:5::99") }, ErrInvalid},
		{"address twice", func(c *InitCmd) { c.Devices[1].IPv4, c.Devices[1].IPv6 = alice.IPv4, alice.IPv6 }, ErrExists},
		{"key twice", func(c *InitCmd) { c.Devices[1].PublicKey = alice.PublicKey }, ErrExists},
		{"name twice", func(c *InitCmd) { c.Devices[1].Name = "alice" }, ErrExists},
		{"gateway's key", func(c *InitCmd) { c.Devices[0].PublicKey = gw.PublicKey }, ErrInvalid},
		{"device in printer range", func(c *InitCmd) { c.Devices[0].IPv4, c.Devices[0].IPv6 = mk4.IPv4, mk4.IPv6; c.Printers = nil }, ErrInvalid},
		{"pending state", func(c *InitCmd) { c.Devices[0].State = "pending" }, ErrInvalid},
		{"printer on gateway address", func(c *InitCmd) {
			c.Printers[0].IPv4, c.Printers[0].IPv6 = netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd00:5::1")
		}, ErrExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Fresh copies: mod edits the slices.
			alice, bob, mk4 := alice, bob, mk4
			_, err := upgrade(func(c *InitCmd) {
				c.Devices, c.Printers = []Device{alice, bob}, []Printer{mk4}
				tc.mod(c)
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("upgrade = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	k := newKey(t)
	if got, err := ParseKey(k.String()); err != nil || got != k {
		t.Errorf("ParseKey(%q) = %v, %v; want %v", k.String(), got, err, k)
	}
	b, err := json.Marshal(k)
	if err != nil || string(b) != `"`+k.String()+`"` {
		t.Errorf("json.Marshal(key) = %s, %v", b, err)
	}
	for _, s := range []string{"", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", k.String()[:43], k.String()[:42] + "!=", strings.Repeat("A", 44)} {
		if _, err := ParseKey(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseKey(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// TestPendingActivateExpire: a device enrolled with a TTL is pending on every replica until
// its home records the first handshake, and a TTL that ran out shows as expired, not revoked.
func TestPendingActivateExpire(t *testing.T) {
	h := newHarness(t, "10.77.0.0/22", "")
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	ttl := t0.Add(15 * time.Minute)
	a := *h.mustApply(Command{Enroll: &EnrollCmd{Name: "alice", Role: Viewer, PublicKey: ka, Home: "gw1", ExpiresAt: ttl, OwnKey: true}}).Device
	if !a.Pending() || !a.ExpiresAt.Equal(ttl) || !a.OwnKey {
		t.Fatalf("enrolled with a TTL: %+v, want pending until %v with own key", a, ttl)
	}
	h.mustApply(Command{Enroll: &EnrollCmd{Name: "bob", Role: Viewer, PublicKey: kb, Home: "gw1", ExpiresAt: ttl}})
	if d := *h.mustApply(Command{Enroll: &EnrollCmd{Name: "carol", Role: Viewer, PublicKey: kc, Home: "gw1"}}).Device; d.Pending() {
		t.Errorf("enrolled without a TTL: pending, want active from the start")
	}

	hs := t0.Add(time.Minute)
	h.now = t0.Add(2 * time.Minute)
	for _, tc := range []struct {
		name string
		c    ActivateCmd
		want error
	}{
		{"unknown", ActivateCmd{Name: "nobody", PublicKey: ka}, ErrNotFound},
		{"wrong key", ActivateCmd{Name: "alice", PublicKey: kb}, ErrNotFound},
	} {
		if _, err := h.apply(Command{Activate: &tc.c}); !errors.Is(err, tc.want) {
			t.Errorf("activate %s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if got, _ := h.f.Roster().Device("alice"); !got.Pending() {
		t.Fatalf("a refused activation changed alice: %+v", got)
	}
	d := *h.mustApply(Command{Activate: &ActivateCmd{Name: "alice", PublicKey: ka, At: hs}}).Device
	if d.Pending() || !d.Activated.Equal(hs) || d.State != Active {
		t.Errorf("activated: %+v, want active since %v", d, hs)
	}
	h.now = t0.Add(3 * time.Minute)
	if d := *h.mustApply(Command{Activate: &ActivateCmd{Name: "alice", PublicKey: ka}}).Device; !d.Activated.Equal(hs) {
		t.Errorf("activated again: first handshake moved to %v, want %v kept", d.Activated, hs)
	}
	// The same enrollment retried (a new TTL computed by the retry) is still the same one.
	if d := *h.mustApply(Command{Enroll: &EnrollCmd{Name: "alice", Role: Viewer, PublicKey: ka, Home: "gw1", ExpiresAt: ttl.Add(time.Minute)}}).Device; !d.Activated.Equal(hs) {
		t.Errorf("a retried enrollment reset the activation: %+v", d)
	}

	// Expiry: bob never handshook; an expiry of alice (activated) is an ordinary revocation.
	h.now = ttl.Add(time.Second)
	if d := *h.mustApply(Command{Revoke: &RevokeCmd{Name: "bob", PublicKey: kb, Expired: true}}).Device; d.State != Revoked || !d.Expired {
		t.Errorf("bob expired: %+v, want revoked as expired", d)
	}
	if d := *h.mustApply(Command{Revoke: &RevokeCmd{Name: "alice", PublicKey: ka, Expired: true}}).Device; d.State != Revoked || d.Expired {
		t.Errorf("alice (activated) expired: %+v, want revoked, not expired", d)
	}
	if _, err := h.apply(Command{Activate: &ActivateCmd{Name: "bob", PublicKey: kb}}); !errors.Is(err, ErrRevoked) {
		t.Errorf("activate after expiry: %v, want ErrRevoked", err)
	}

	// Every field survives a snapshot.
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	f2 := NewFSM()
	if err := f2.Restore(io.NopCloser(strings.NewReader(sink.String()))); err != nil {
		t.Fatal(err)
	}
	if !f2.Roster().Equal(h.f.Roster()) {
		t.Errorf("restored roster differs")
	}
	if b, _ := f2.Roster().Device("bob"); !b.Expired || !b.ExpiresAt.Equal(ttl) {
		t.Errorf("restored bob: %+v", b)
	}
}
