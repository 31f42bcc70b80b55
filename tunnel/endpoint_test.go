package tunnel

import (
	"context"
	"net/netip"
	"testing"
)

func TestResolveEndpoint(t *testing.T) {
	ctx := context.Background()
	for in, want := range map[string]string{
		"192.0.2.7:51820":      "192.0.2.7:51820",
		"[::ffff:192.0.2.7]:5": "192.0.2.7:5",
		"[2001:db8::1]:51820":  "[2001:db8::1]:51820",
		"localhost:51820":      "127.0.0.1:51820", // IPv4 first when a name has both
	} {
		got, err := ResolveEndpoint(ctx, nil, in)
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("ResolveEndpoint(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "host", "host:0", "host:65536", "host:+1", "host:http", "host:051820"} {
		if got, err := ResolveEndpoint(ctx, nil, bad); err == nil {
			t.Errorf("ResolveEndpoint(%q) = %v, want an error", bad, got)
		}
	}
}
