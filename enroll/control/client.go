package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/printgate/printgate/enroll"
)

// Client calls a gateway. Its zero value is not usable: set Dial, or use Unix.
type Client struct {
	// Dial opens one connection to the gateway for one call. An error wrapping ErrNoDaemon
	// means nobody answers there.
	Dial func(ctx context.Context) (net.Conn, error)
	// Addr names the gateway in errors (a socket path, a tunnel address).
	Addr string
}

// Unix returns a client for the control socket of the gateway running on stateDir.
func Unix(stateDir string) *Client {
	path := Path(stateDir)
	return &Client{Addr: path, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil && (errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
			return nil, fmt.Errorf("%w: %w", ErrNoDaemon, err)
		}
		return c, err
	}}
}

// Call sends req and returns the gateway's answer. A Response with Error set is returned
// along with that error.
func (c *Client) Call(ctx context.Context, req Request) (*Response, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("control %s: %w", c.Addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(DefaultTimeout))
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("control %s: send: %w", req.Op, err)
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(conn, MaxMessage)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("control %s: read reply: %w", req.Op, err)
	}
	if resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// Enroll enrolls a peer; req.Op is set for the caller.
func (c *Client) Enroll(ctx context.Context, req Request) (*EnrollResult, error) {
	req.Op = OpEnroll
	resp, err := c.Call(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.Enrollment == nil {
		return nil, fmt.Errorf("control %s: empty reply", OpEnroll)
	}
	return resp.Enrollment, nil
}

// Revoke revokes the peer named name.
func (c *Client) Revoke(ctx context.Context, name string) (*RevokeResult, error) {
	resp, err := c.Call(ctx, Request{Op: OpRevoke, Name: name})
	if err != nil {
		return nil, err
	}
	if resp.Revoked == nil {
		return nil, fmt.Errorf("control %s: empty reply", OpRevoke)
	}
	return resp.Revoked, nil
}

// Peers lists every peer, never nil.
func (c *Client) Peers(ctx context.Context) ([]enroll.PeerView, error) {
	resp, err := c.Call(ctx, Request{Op: OpPeers})
	if err != nil {
		return nil, err
	}
	if resp.Peers == nil {
		return []enroll.PeerView{}, nil
	}
	return resp.Peers, nil
}

// Status returns the gateway's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, err := c.Call(ctx, Request{Op: OpStatus})
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("control %s: empty reply", OpStatus)
	}
	return resp.Status, nil
}
