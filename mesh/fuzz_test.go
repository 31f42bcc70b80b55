package mesh

import (
	"encoding/json"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fuzzRoster is an FSM holding a mesh with two gateways, a printer, devices in every state
// (active, pending, activated, revoked, expired) and a join token: what a command from the
// log or from a follower meets.
func fuzzRoster(t testing.TB) (*FSM, uint64) {
	f := NewFSM()
	at := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	key := func(b byte) Key {
		var k Key
		for i := range k {
			k[i] = b
		}
		return k
	}
	cmds := []Command{
		{Init: &InitCmd{Prefix4: netip.MustParsePrefix("10.77.0.0/22"), Prefix6: netip.MustParsePrefix("fd00:9::/64"),
			Gateway: AddGatewayCmd{Name: "gw1", PublicKey: key(1), Endpoint: "gw1:51820"}}},
		{AddGateway: &AddGatewayCmd{Name: "gw2", PublicKey: key(2), Endpoint: "gw2:51820"}},
		{AddPrinter: &AddPrinterCmd{Name: "mk4", Gateway: "gw2"}},
		{Enroll: &EnrollCmd{Name: "active", Role: Admin, PublicKey: key(3), Home: "gw1", APIKeyHash: make([]byte, 32)}},
		{Enroll: &EnrollCmd{Name: "pending", Role: Viewer, PublicKey: key(4), Home: "gw2", ExpiresAt: at.Add(time.Hour)}},
		{Enroll: &EnrollCmd{Name: "activated", Role: Operator, PublicKey: key(5), Home: "gw1", ExpiresAt: at.Add(time.Hour), OwnKey: true}},
		{Activate: &ActivateCmd{Name: "activated", PublicKey: key(5)}},
		{Enroll: &EnrollCmd{Name: "revoked", Role: Viewer, PublicKey: key(6), Home: "gw1"}},
		{Revoke: &RevokeCmd{Name: "revoked"}},
		{Enroll: &EnrollCmd{Name: "expired", Role: Viewer, PublicKey: key(7), Home: "gw2", ExpiresAt: at.Add(time.Minute)}},
		{Revoke: &RevokeCmd{Name: "expired", PublicKey: key(7), Expired: true}},
		{AddToken: &AddTokenCmd{PublicKey: key(8), Inviter: "gw1", Expires: at.Add(time.Hour)}},
	}
	var index uint64
	for _, c := range cmds {
		c.At = at
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		index++
		if res := f.Apply(&raft.Log{Index: index, Data: b}).(applyResult); res.err != nil {
			t.Fatalf("seed %s: %v", c.op(), res.err)
		}
	}
	return f, index
}

// FuzzApply: any bytes as a log entry (a command from the leader's log, or from a follower
// through the leader) either change nothing, with an error, or leave a roster that survives
// a snapshot round trip intact: the invariants Restore checks (one holder per name, key and
// address) hold after every accepted command.
func FuzzApply(f *testing.F) {
	for _, s := range []string{
		`{"at":"2026-12-03T09:00:00Z","activate":{"name":"pending","public_key":"BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ="}}`,
		`{"at":"2026-12-03T09:00:00Z","revoke":{"name":"pending","expired":true}}`,
		`{"at":"2026-12-03T09:00:00Z","enroll":{"name":"new","role":"viewer","public_key":"CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=","home":"gw2","expires_at":"2026-12-03T10:00:00Z","own_key":true}}`,
		`{"at":"2026-12-03T09:00:00Z","set_api_key":{"name":"active","api_key_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","api_key_role":"viewer"}}`,
		`{"at":"2026-12-03T09:00:00Z","remove_gateway":{"name":"gw2"}}`,
		`{"at":"2026-12-03T09:00:00Z","consume_token":{"public_key":"CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=","by":"gw3"}}`,
		`{"activate":{},"revoke":{}}`,
		`{}`, `null`, `[]`, `{"at":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm, index := fuzzRoster(t)
		before := fsm.Roster()
		res := fsm.Apply(&raft.Log{Index: index + 1, Data: data}).(applyResult)
		after := fsm.Roster()
		if after.Index() != index+1 {
			t.Fatalf("index %d after applying entry %d", after.Index(), index+1)
		}
		if res.err != nil {
			if !after.Equal(before) {
				t.Fatalf("a refused command changed the roster: %v", res.err)
			}
			return
		}
		snap, err := fsm.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var sink bufSink
		if err := snap.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		g := NewFSM()
		if err := g.Restore(io.NopCloser(strings.NewReader(sink.String()))); err != nil {
			t.Fatalf("the roster after %q does not restore: %v", data, err)
		}
		if !g.Roster().Equal(after) {
			t.Fatalf("the roster after %q restores differently", data)
		}
	})
}

// FuzzRestore: any bytes as a snapshot are refused with an error or give a roster that
// snapshots to the same bytes again.
func FuzzRestore(f *testing.F) {
	fsm, _ := fuzzRoster(f)
	snap, err := fsm.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		f.Fatal(err)
	}
	f.Add(sink.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := NewFSM()
		if err := g.Restore(io.NopCloser(strings.NewReader(string(data)))); err != nil {
			return
		}
		snap, err := g.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var out bufSink
		if err := snap.Persist(&out); err != nil {
			t.Fatal(err)
		}
		h := NewFSM()
		if err := h.Restore(io.NopCloser(strings.NewReader(out.String()))); err != nil {
			t.Fatalf("a restored roster's own snapshot does not restore: %v", err)
		}
		if !h.Roster().Equal(g.Roster()) {
			t.Fatal("a restored roster's own snapshot restores differently")
		}
	})
}
