package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/mesh"
)

func testJoinToken(t *testing.T, expires time.Time, endpoint string) mesh.Token {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mesh.NewToken(expires, netip.MustParseAddr("10.77.0.60"), mesh.Key(k.PublicKey()), netip.MustParseAddr("10.77.0.1"), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func testGatewayKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func TestJoinMeshExpiredTokenSendsNothing(t *testing.T) {
	tok := testJoinToken(t, time.Now().Add(time.Minute), "127.0.0.1:1")
	resolved := false
	_, err := JoinMesh(context.Background(), JoinConfig{Token: tok, Name: "gw2", PublicKey: testGatewayKey(t), Endpoint: "127.0.0.1:51821",
		Now: func() time.Time { return time.Now().Add(2 * time.Minute) },
		Resolve: func(context.Context, string) (netip.AddrPort, error) {
			resolved = true
			return netip.AddrPort{}, errors.New("no")
		}})
	if !errors.Is(err, mesh.ErrTokenExpired) || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("JoinMesh with an expired token = %v, want ErrTokenExpired saying when", err)
	}
	if resolved {
		t.Error("JoinMesh with an expired token looked up the inviter")
	}
}

func TestJoinMeshUnreachableInviter(t *testing.T) {
	// A UDP port nobody answers on: WireGuard's handshake goes unanswered.
	port := freeUDPPort(t)
	ep := fmt.Sprintf("127.0.0.1:%d", port)
	tok := testJoinToken(t, time.Now().Add(time.Hour), ep)
	_, err := JoinMesh(context.Background(), JoinConfig{Token: tok, Name: "gw2", PublicKey: testGatewayKey(t), Endpoint: "127.0.0.1:51821",
		Timeout: 2 * time.Second, Logf: t.Logf})
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Handshake {
		t.Fatalf("JoinMesh to a silent port = %v, want an UnreachableError without handshake", err)
	}
	for _, want := range []string{"unreachable", ep, "2s", fmt.Sprintf("UDP port %d", port)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestJoinMeshRefusesABadRequestLocally(t *testing.T) {
	tok := testJoinToken(t, time.Now().Add(time.Hour), "127.0.0.1:1")
	_, err := JoinMesh(context.Background(), JoinConfig{Token: tok, Name: "-bad", PublicKey: testGatewayKey(t), Endpoint: "127.0.0.1:51821"})
	if !errors.Is(err, mesh.ErrInvalid) {
		t.Errorf("JoinMesh named -bad = %v, want ErrInvalid", err)
	}
}
