package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// joinOptions are `init --join`'s inputs.
type joinOptions struct {
	state      string
	token      string
	endpoint   string
	name       string
	listenPort int
	timeout    time.Duration
}

// joinInit joins the mesh that issued the token and creates the state directory from its
// answer: gateway.json (name, addresses, the mesh's prefixes) and mesh/join.json (the
// gateways). Nothing is written unless the join succeeded; the token is checked (damage,
// expiry) and the directory too before any packet is sent.
func joinInit(ctx context.Context, e *env, o joinOptions) error {
	tok, err := mesh.ParseToken(o.token)
	if err != nil {
		return fmt.Errorf("init --join: %w", err)
	}
	if tok.Expired(time.Now()) {
		return fmt.Errorf("init --join: the join token expired at %s (%s): %w; ask for a new one with `printgate mesh invite` on a gateway of the mesh",
			tok.Expires.UTC().Format(time.RFC3339), tok, mesh.ErrTokenExpired)
	}
	if o.endpoint == "" {
		return usagef("init", "--join needs --endpoint HOST:PORT: the address the other gateways and devices dial to reach this one")
	}
	ep, err := enroll.ParseEndpoint(o.endpoint, o.listenPort)
	if err != nil {
		return usagef("init", "--endpoint: %v", err)
	}
	name := o.name
	if name == "" {
		host, _ := os.Hostname()
		name = enroll.SanitizeName(host)
	}
	if err := enroll.ValidateName(name); err != nil {
		return usagef("init", "--name %q: %v", name, err)
	}
	created, err := checkFreshState(o.state)
	if err != nil {
		return fmt.Errorf("init --join: %w", err)
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fmt.Errorf("init --join: gateway key: %w", err)
	}

	fmt.Fprintf(e.stderr, "joining the mesh through %s as %s ...\n", tok.InviterEndpoint, name)
	a, err := gateway.JoinMesh(ctx, gateway.JoinConfig{Token: tok, Name: name, PublicKey: key.PublicKey(), Endpoint: ep, Timeout: o.timeout})
	if err != nil {
		return fmt.Errorf("init --join: %w", err)
	}

	// The mesh holds this gateway now; its key and addresses go to disk, or nothing does.
	if err := gateway.WriteJoinFile(o.state, gateway.JoinFile{Name: name, Gateways: a.Gateways}); err != nil {
		removeJoinState(o.state, created)
		return fmt.Errorf("init --join: joined the mesh as %s but could not save the state: %w; remove %s on a gateway of the mesh (`printgate mesh remove %s`) and join again",
			name, err, name, name)
	}
	g, err := enroll.Init(o.state, enroll.InitOptions{Endpoint: ep, ListenPort: o.listenPort, Prefix4: a.Prefix4, Prefix6: a.Prefix6,
		Name: name, Addr4: a.Gateway.IPv4, Addr6: a.Gateway.IPv6, PrivateKey: key})
	if err != nil {
		removeJoinState(o.state, created)
		return fmt.Errorf("init --join: joined the mesh as %s but could not save the state: %w; remove %s on a gateway of the mesh (`printgate mesh remove %s`) and join again",
			name, err, name, name)
	}
	names := make([]string, len(a.Gateways))
	for i, gw := range a.Gateways {
		names[i] = gw.Name
	}
	fmt.Fprintf(e.stdout, "joined the mesh as %s; initialized %s\n", name, o.state)
	fmt.Fprintf(e.stdout, "  public key   %s\n", g.PublicKey())
	fmt.Fprintf(e.stdout, "  listen port  udp %d\n", g.ListenPort)
	fmt.Fprintf(e.stdout, "  mesh         %v, %v (gateway %v, %v)\n", g.Prefix4, g.Prefix6, g.Addr4(), g.Addr6())
	fmt.Fprintf(e.stdout, "  endpoint     %s\n", g.Endpoint)
	fmt.Fprintf(e.stdout, "  gateways     %s\n", strings.Join(names, ", "))
	fmt.Fprintf(e.stdout, "next: printgate run --state %s\n", o.state)
	if len(a.Gateways) == 2 {
		fmt.Fprintf(e.stderr, "note: a mesh of two needs both gateways for quorum: until this one runs, the mesh refuses enrollments and invitations. Start it now.\n")
	} else {
		fmt.Fprintf(e.stderr, "note: the mesh counts this gateway as a member from now on; start it now.\n")
	}
	return nil
}

// checkFreshState checks, before the join, that dir can become a new state directory: not
// initialized, no join file, its parent there. created reports whether dir does not exist
// yet (so a failed write removes it again).
func checkFreshState(dir string) (created bool, err error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(filepath.Clean(dir))
		if pfi, err := os.Stat(parent); err != nil || !pfi.IsDir() {
			return false, fmt.Errorf("state directory %s: its parent %s is not a directory", dir, parent)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("state directory: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("state directory %s is not a directory", dir)
	}
	for _, name := range []string{enroll.FileGatewayKey, enroll.FileGateway, enroll.FileRoster, filepath.Join(gateway.MeshDir, gateway.FileJoin)} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("state directory %s is already initialized (%s exists); refusing to overwrite it", dir, name)
		}
	}
	return false, nil
}

// removeJoinState removes what a failed joinInit wrote.
func removeJoinState(dir string, created bool) {
	meshDir := filepath.Join(dir, gateway.MeshDir)
	os.Remove(filepath.Join(meshDir, gateway.FileJoin))
	os.Remove(meshDir) // only if empty
	if created {
		os.Remove(dir) // only if empty
	}
}
