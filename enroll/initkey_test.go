package enroll

import (
	"path/filepath"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A joining gateway registers its key in the mesh before its state exists: Init keeps the
// key it is given.
func TestInitKeepsAGivenKey(t *testing.T) {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	g, err := Init(dir, InitOptions{Endpoint: "127.0.0.1:51820", PrivateKey: key})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	if g.PrivateKey != key {
		t.Error("Init made its own key although one was given")
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Gateway().PrivateKey != key {
		t.Error("the state on disk holds another key than the one given")
	}
}
