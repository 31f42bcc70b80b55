package control

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/printgate/printgate/enroll"
)

// pipeClient is a client whose every call runs srv on one end of an in-memory pipe: the
// protocol over a net.Conn that is not a Unix socket (as a tunnel connection would be).
func pipeClient(srv *Server) *Client {
	return &Client{Addr: "pipe", Dial: func(context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			srv.ServeConn(context.Background(), b)
		}()
		return a, nil
	}}
}

func TestCallOverAnyConn(t *testing.T) {
	srv := &Server{Handler: HandlerFunc(func(_ context.Context, req Request) Response {
		switch req.Op {
		case OpPeers:
			return Response{Peers: []enroll.PeerView{{Name: "phone", State: enroll.Active}}}
		case OpRevoke:
			return Response{Error: "revoke " + req.Name + ": not found"}
		}
		return Response{}
	})}
	c := pipeClient(srv)
	ctx := context.Background()
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0].Name != "phone" {
		t.Errorf("Peers() = %+v, %v; want phone", peers, err)
	}
	if _, err := c.Revoke(ctx, "ghost"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Revoke(ghost) = %v, want the server's error", err)
	}
	if _, err := c.Status(ctx); err == nil {
		t.Error("Status() with an empty reply succeeded")
	}
}

// TestServerRefusesMalformed: unknown fields and duplicate keys (in any case) never reach
// the handler: {"role":"viewer","role":"admin"} enrolls nobody.
func TestServerRefusesMalformed(t *testing.T) {
	for _, msg := range []string{
		`{"op":"peers","sudo":true}`,
		`{"op":"enroll","name":"eve","role":"viewer","role":"admin"}`,
		`{"op":"enroll","name":"eve","role":"viewer","ROLE":"admin"}`,
		`{"op":"enroll","name":"eve","op":"revoke"}`,
	} {
		srv := &Server{Handler: HandlerFunc(func(_ context.Context, req Request) Response {
			t.Errorf("handler called with %+v for %s", req, msg)
			return Response{}
		})}
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			srv.ServeConn(context.Background(), b)
		}()
		if _, err := a.Write([]byte(msg + "\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, _ := a.Read(buf)
		if !strings.Contains(string(buf[:n]), "bad request") {
			t.Errorf("reply to %s = %q, want a bad request error", msg, buf[:n])
		}
		a.Close()
	}
}

func TestNoDaemon(t *testing.T) {
	if _, err := Unix(t.TempDir()).Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Status without a daemon = %v, want ErrNoDaemon", err)
	}
}

func TestUnixServeAndClose(t *testing.T) {
	dir := t.TempDir()
	ln, err := ListenUnix(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: HandlerFunc(func(context.Context, Request) Response {
		return Response{Status: &Status{Running: true}}
	}), Allow: UnixPeerAllowed, Logf: t.Logf}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	st, err := Unix(dir).Status(context.Background())
	if err != nil || !st.Running {
		t.Fatalf("Status() = %+v, %v", st, err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("first Close = %v", err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close = %v, want net.ErrClosed", err)
	}
	if err := srv.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := Unix(dir).Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Status after Close = %v, want ErrNoDaemon (socket removed)", err)
	}
	if got := filepath.Base(Path(dir)); got != SocketName {
		t.Errorf("Path base = %q", got)
	}
}
