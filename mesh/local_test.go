package mesh

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// openOffline opens a node on dir with the offline transport, as the CLI does.
func openOffline(t *testing.T, id, dir string) *Node {
	t.Helper()
	n, err := Open(Config{ID: id, Dir: dir, Listener: OfflineListener("10.77.0.1:7100"), Dial: OfflineDial, Logf: testLogf(t)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOfflineMeshOfOne: a mesh of one opened with no network elects itself and commits; its
// Changed channel fires for the enrollment and, before anything commits, for a revocation.
func TestOfflineMeshOfOne(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := openOffline(t, "gw1", dir)
	if _, err := n.Bootstrap(ctx, InitCmd{Prefix4: netip.MustParsePrefix("10.77.0.0/22"),
		Gateway: AddGatewayCmd{Name: "gw1", PublicKey: newKey(t), Endpoint: "gw1.test:51820"}}); err != nil {
		t.Fatal(err)
	}
	ch := n.Changed()
	if _, err := n.Enroll(ctx, EnrollCmd{Name: "phone", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(eventually):
		t.Fatal("Changed did not fire for an enrollment")
	}
	ch = n.Changed()
	if _, err := n.Revoke(ctx, "phone"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("Changed not closed when Revoke returned")
	}
	if d, _ := n.Roster().Device("phone"); d.State != Revoked {
		t.Errorf("phone is %s after Revoke", d.State)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// Opened again offline, it elects itself again and has everything.
	n = openOffline(t, "gw1", dir)
	defer n.Close()
	if _, err := n.Enroll(ctx, EnrollCmd{Name: "laptop", Role: Viewer, PublicKey: newKey(t), Home: "gw1"}); err != nil {
		t.Fatalf("enroll after reopening offline: %v", err)
	}
	if d, ok := n.Roster().Device("phone"); !ok || d.State != Revoked {
		t.Errorf("phone after reopening = %v, %v", d, ok)
	}

	// An API key rotation: the hash and a narrowing role, never a widening one.
	hash := make([]byte, 32)
	hash[0] = 7
	if _, err := n.SetAPIKey(ctx, "laptop", hash, Admin); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetAPIKey widening a viewer to admin = %v, want ErrInvalid", err)
	}
	if _, err := n.SetAPIKey(ctx, "phone", hash, ""); !errors.Is(err, ErrRevoked) {
		t.Errorf("SetAPIKey on a revoked device = %v, want ErrRevoked", err)
	}
	if d, err := n.SetAPIKey(ctx, "laptop", hash, Viewer); err != nil || d.APIKeyHash[0] != 7 || d.APIKeyRole != Viewer {
		t.Errorf("SetAPIKey = %+v, %v", d, err)
	}

	// A gateway announcing itself again with a new endpoint keeps its addresses.
	gw, _ := n.Roster().Gateway("gw1")
	moved, err := n.AddGateway(ctx, AddGatewayCmd{Name: "gw1", PublicKey: gw.PublicKey, Endpoint: "gw1.test:51821"})
	if err != nil || moved.Endpoint != "gw1.test:51821" || moved.IPv4 != gw.IPv4 {
		t.Errorf("AddGateway with a new endpoint = %+v, %v", moved, err)
	}
}

// TestOfflineMeshOfSeveral: a member of a larger mesh opened offline refuses writes with
// "quorum" and still revokes locally at once.
func TestOfflineMeshOfSeveral(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.CommitTimeout = time.Second })
	c.enroll(c.leader(), "phone")
	tn := c.nodes[2]
	c.converged()
	c.stop(tn)
	n, err := Open(Config{ID: tn.id, Dir: tn.dir, Listener: OfflineListener(tn.addr), Dial: OfflineDial,
		CommitTimeout: time.Second, Logf: testLogf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	_, err = n.Enroll(context.Background(), EnrollCmd{Name: "laptop", Role: Viewer, PublicKey: newKey(t), Home: tn.id})
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "quorum") {
		t.Errorf("offline enroll in a mesh of three = %v, want a quorum error", err)
	}
	if committed, err := n.Revoke(context.Background(), "phone"); err != nil || committed {
		t.Errorf("offline revoke = %v, %v; want applied locally, not committed", committed, err)
	}
	if d, _ := n.Roster().Device("phone"); d.State != Revoked {
		t.Errorf("phone is %s after an offline revoke", d.State)
	}
}
