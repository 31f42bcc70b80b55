package tunnel

import (
	"slices"
	"strings"
	"testing"

	"github.com/printgate/printgate/netstack"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestApplyReconcilesAfterFailure: after a failed IpcSet the device state is unknown, so the
// next Apply reads the device's real peers, removes strays and sets every wanted peer.
func TestApplyReconcilesAfterFailure(t *testing.T) {
	st, err := netstack.New(netstack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, _ := wgtypes.GeneratePrivateKey()
	d, err := New(Config{PrivateKey: k, TUN: st.TUN()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, b, stray := peer(1, "10.0.0.2"), peer(2, "10.0.0.3"), peer(3, "10.0.0.4")
	if err := d.Apply([]Peer{a, b}); err != nil {
		t.Fatal(err)
	}
	// Someone else (wg set over UAPI, or a half-applied set) added a peer; our record is lost.
	if err := d.dev.IpcSet("public_key=" + hexKey(stray.PublicKey) + "\nallowed_ip=10.0.0.4/32\n"); err != nil {
		t.Fatal(err)
	}
	d.mu.applied = nil
	if err := d.Apply([]Peer{a, b}); err != nil {
		t.Fatalf("Apply after failure: %v", err)
	}
	st2, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range st2 {
		got = append(got, s.PublicKey.String())
	}
	slices.Sort(got)
	want := []string{a.PublicKey.String(), b.PublicKey.String()}
	slices.Sort(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("device peers after reconcile = %v, want %v", got, want)
	}
}
