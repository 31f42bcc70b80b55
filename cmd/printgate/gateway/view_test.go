package gateway

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

// keysOf returns the sorted keys of the object in list whose "name" is name.
func keysOf(t *testing.T, what string, list []map[string]any, name string) []string {
	t.Helper()
	for _, o := range list {
		if o["name"] == name {
			return slices.Sorted(maps.Keys(o))
		}
	}
	t.Fatalf("%s: no %s in %v", what, name, list)
	return nil
}

// peerViewNames are the JSON names enroll.PeerView can carry.
func peerViewNames() map[string]bool {
	out := map[string]bool{}
	rt := reflect.TypeFor[enroll.PeerView]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		out[name] = true
	}
	return out
}

// TestPeerViewSameNames: the control socket (what `peers --json` prints) and the web API's
// device list show a peer under the same JSON names, all of them enroll.PeerView's, and
// never a secret.
func TestPeerViewSameNames(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	adminEn, err := g.Enroll(enroll.Request{Name: "admin", Role: enroll.Admin})
	if err != nil {
		t.Fatal(err)
	}
	pendingEn, err := g.Enroll(enroll.Request{Name: "waiting", Role: enroll.Viewer})
	if err != nil {
		t.Fatal(err)
	}
	admin := newClient(t, adminEn.Config)
	hc := admin.httpClient(false)
	base := "http://" + g.Addrs()[0].String()

	web := func() []map[string]any {
		body, err := get(hc, base+"/api/v1/devices")
		if err != nil {
			return nil
		}
		var v struct {
			Devices []map[string]any `json:"devices"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("devices: %v: %s", err, body)
		}
		return v.Devices
	}
	wire := func() []map[string]any {
		conn, err := control.Unix(dir).Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, `{"op":"peers"}`+"\n")
		raw, err := io.ReadAll(conn)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Peers []map[string]any `json:"peers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("control peers: %v: %s", err, raw)
		}
		for _, secret := range []string{adminEn.APIKey, adminEn.Peer.PresharedKey.String(), pendingEn.APIKey, pendingEn.Peer.PresharedKey.String()} {
			if strings.Contains(string(raw), secret) {
				t.Fatalf("control peers reply holds a secret: %s", raw)
			}
		}
		return v.Peers
	}
	// Once the stats loop has seen the admin's handshake and endpoint, both faces know them.
	var w, c []map[string]any
	waitFor(t, "the admin's handshake in both views", func() bool {
		w, c = web(), wire()
		if w == nil {
			return false
		}
		for _, list := range [][]map[string]any{w, c} {
			for _, o := range list {
				if o["name"] == "admin" && (o["endpoint"] == nil || o["last_handshake_age_seconds"] == nil || o["state"] != "active") {
					return false
				}
			}
		}
		return true
	})
	names := peerViewNames()
	for _, peer := range []string{"admin", "waiting"} {
		wk, ck := keysOf(t, "web", w, peer), keysOf(t, "control", c, peer)
		if !slices.Equal(wk, ck) {
			t.Errorf("%s: web API names %v, control socket names %v; want the same", peer, wk, ck)
		}
		for _, k := range wk {
			if !names[k] {
				t.Errorf("%s: name %q is not one of enroll.PeerView's", peer, k)
			}
		}
	}
}
