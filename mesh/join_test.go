package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// joiner is a gateway about to join: its key and the listener its node will run on, so the
// inviter can add it as a voter at that address before it runs (as the daemon does).
type joiner struct {
	tn *testNode
	ln net.Listener
}

func (c *cluster) newJoiner(name string) *joiner {
	c.t.Helper()
	ln := c.net.Listen(c.t, "")
	tn := &testNode{id: name, dir: filepath.Join(c.t.TempDir(), name), addr: ln.Addr().String(), key: newKey(c.t)}
	c.t.Cleanup(func() { ln.Close() })
	return &joiner{tn: tn, ln: ln}
}

// run opens the joiner's node on its listener, not bootstrapped: it waits to be reached.
func (c *cluster) run(j *joiner) {
	c.t.Helper()
	cfg := Config{ID: j.tn.id, Dir: j.tn.dir, Listener: j.ln, Dial: c.net.Dialer(j.tn.addr), Logf: testLogf(c.t)}
	if c.tune != nil {
		c.tune(&cfg)
	}
	n, err := Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	j.tn.Node = n
	c.nodes = append(c.nodes, j.tn)
	c.t.Cleanup(func() { n.Close() })
}

// raftAddrs maps the joiners' names to their listeners, as the daemon maps a gateway to its
// tunnel address and port 7100.
func raftAddrs(js ...*joiner) RaftAddrFunc {
	return func(g Gateway) string {
		for _, j := range js {
			if j.tn.id == g.Name {
				return j.tn.addr
			}
		}
		return "nowhere:1"
	}
}

// invite records a join token on via and returns its one-time key.
func (c *cluster) invite(via *testNode, expires time.Time) Key {
	c.t.Helper()
	k := newKey(c.t)
	c.retry("add join token", func() error {
		_, err := via.AddJoinToken(context.Background(), AddTokenCmd{PublicKey: k, Inviter: via.id, Expires: expires})
		return err
	})
	return k
}

// join runs one join conversation between inviter and a joiner over an in-memory connection.
func join(inviter *Node, from Key, req JoinRequest, raftAddr RaftAddrFunc) (JoinAnswer, error, error) {
	cli, srv := net.Pipe()
	defer cli.Close()
	served := make(chan error, 1)
	go func() {
		defer srv.Close()
		served <- inviter.ServeJoin(context.Background(), srv, from, raftAddr)
	}()
	a, err := Join(context.Background(), cli, req)
	return a, err, <-served
}

func (j *joiner) request(token Key) JoinRequest {
	return JoinRequest{Token: token, Name: j.tn.id, PublicKey: j.tn.key, Endpoint: "gw.example:51820"}
}

// joinSettled runs a join again while the mesh is unsettled (a new leader on a loaded
// machine), as a joiner retries, and returns the last answer.
func (c *cluster) joinSettled(inviter *Node, from Key, req JoinRequest, raftAddr RaftAddrFunc) (JoinAnswer, error) {
	c.t.Helper()
	var a JoinAnswer
	err := c.expect(func() error {
		var err error
		a, err, _ = join(inviter, from, req, raftAddr)
		return err
	})
	return a, err
}

func TestJoinMeshOfOneGrowsToTwo(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, nil)
	gw1 := c.nodes[0]
	j := c.newJoiner("gw2")
	tok := c.invite(gw1, time.Now().Add(15*time.Minute))

	// The new gateway is not running yet: the mesh's packets to it are dropped, so raft
	// cannot commit the membership of two. The join completes anyway.
	c.net.Partition(j.tn.addr)
	a, err := c.joinSettled(gw1.Node, tok, j.request(tok), raftAddrs(j))
	if err != nil {
		t.Fatalf("join = %v", err)
	}
	if a.Gateway.Name != "gw2" || a.Gateway.IPv4.String() != "10.77.0.2" || a.Gateway.IPv6.String() != "fd77::2" {
		t.Errorf("joined as %+v, want gw2 at 10.77.0.2, fd77::2", a.Gateway)
	}
	if a.Prefix4.String() != "10.77.0.0/20" || a.Prefix6.String() != "fd77::/64" {
		t.Errorf("prefixes %v %v, want the mesh's", a.Prefix4, a.Prefix6)
	}
	if len(a.Gateways) != 2 || a.Gateways[0].Name != "gw1" || a.Gateways[0].PublicKey != gw1.key {
		t.Errorf("gateways %+v, want gw1 and gw2", a.Gateways)
	}

	// Meanwhile the mesh of two has no quorum; a second use of the token is refused as such
	// from the replica all the same.
	early := c.newJoiner("gw9")
	if _, err, _ := join(gw1.Node, tok, early.request(tok), raftAddrs(early)); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("second use while the mesh waits for gw2 = %v, want ErrTokenUsed", err)
	}

	// The new gateway runs (not bootstrapped) and the mesh completes its membership.
	c.net.Heal(j.tn.addr)
	c.run(j)
	r := c.converged()
	if len(r.Gateways()) != 2 {
		t.Fatalf("roster has %d gateways, want 2", len(r.Gateways()))
	}
	c.waitFor("two voters that agree on a leader", func() bool {
		s1, s2 := gw1.Status(), j.tn.Status()
		return len(s1.Servers) == 2 && s1.Leader != "" && s1.Leader == s2.Leader && s2.Quorum
	})
	d := c.enroll(j.tn, "phone")
	if d.Home != "gw2" {
		t.Errorf("enrolled on the new gateway: home %s", d.Home)
	}

	// A retried join by the same name and key (the answer was lost) gets the same answer.
	again, err := c.joinSettled(gw1.Node, tok, j.request(tok), raftAddrs(j))
	if err != nil || again.Gateway != a.Gateway {
		t.Errorf("retried join = %+v, %v; want %+v", again.Gateway, err, a.Gateway)
	}
	// The retry also works on the new gateway, whose replica holds the same.
	if again, err := c.joinSettled(j.tn.Node, tok, j.request(tok), raftAddrs(j)); err != nil || again.Gateway != a.Gateway {
		t.Errorf("retried join at gw2 = %+v, %v; want %+v", again.Gateway, err, a.Gateway)
	}

	// A second use of the token, by anyone else, is refused as such.
	other := c.newJoiner("gw3")
	_, err = c.joinSettled(gw1.Node, tok, other.request(tok), raftAddrs(other))
	if !errors.Is(err, ErrTokenUsed) || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second use = %v, want ErrTokenUsed saying so", err)
	}
	if _, ok := c.converged().Gateway("gw3"); ok {
		t.Error("a second use of the token added a gateway")
	}
}

func TestJoinThroughFollower(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	f := c.follower()
	j := c.newJoiner("gw4")
	tok := c.invite(f, time.Now().Add(time.Hour))
	a, err := c.joinSettled(f.Node, tok, j.request(tok), raftAddrs(j))
	if err != nil {
		t.Fatalf("join through follower %s = %v", f.id, err)
	}
	if len(a.Gateways) != 4 {
		t.Errorf("answer lists %d gateways, want 4", len(a.Gateways))
	}
	c.run(j)
	c.converged()
	c.waitFor("four voters", func() bool {
		n := 0
		for _, s := range c.leader().Status().Servers {
			if s.Voter {
				n++
			}
		}
		return n == 4
	})
	c.enroll(j.tn, "laptop")
}

func TestJoinRefusals(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64 // nanoseconds added to the wall clock: the leader's Now
	now := func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	c := newCluster(t, 1, func(cfg *Config) { cfg.Now = now })
	gw1 := c.nodes[0]
	j := c.newJoiner("gw2")

	t.Run("expired", func(t *testing.T) {
		tok := c.invite(gw1, now().Add(time.Minute))
		clock.Add(int64(2 * time.Minute))
		_, err := c.joinSettled(gw1.Node, tok, j.request(tok), raftAddrs(j))
		if !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("join with an expired token = %v, want ErrTokenExpired saying so", err)
		}
	})
	t.Run("never issued", func(t *testing.T) {
		k := newKey(t)
		_, err := c.joinSettled(gw1.Node, k, j.request(k), raftAddrs(j))
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("join with an unknown token = %v, want ErrNotFound", err)
		}
	})
	tok := c.invite(gw1, now().Add(time.Hour))
	t.Run("another peer's token", func(t *testing.T) {
		_, err, served := join(gw1.Node, newKey(t), j.request(tok), raftAddrs(j))
		if !errors.Is(err, ErrInvalid) || !errors.Is(served, ErrInvalid) {
			t.Errorf("join from another one-time peer = %v (server: %v), want ErrInvalid", err, served)
		}
	})
	t.Run("name taken", func(t *testing.T) {
		req := j.request(tok)
		req.Name = "gw1"
		_, err := c.joinSettled(gw1.Node, tok, req, raftAddrs(j))
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--name") {
			t.Errorf("join as gw1 = %v, want ErrExists with advice", err)
		}
	})
	t.Run("oversized request", func(t *testing.T) {
		cli, srv := net.Pipe()
		defer cli.Close()
		served := make(chan error, 1)
		go func() {
			defer srv.Close()
			served <- gw1.ServeJoin(context.Background(), srv, tok, raftAddrs(j))
		}()
		go func() {
			fmt.Fprintf(cli, `{"name":"%s"`, strings.Repeat("x", MaxJoinRequest))
		}()
		var rep joinReply
		if err := json.NewDecoder(cli).Decode(&rep); err != nil || rep.Code != "invalid" {
			t.Errorf("answer to an oversized request = %+v, %v; want a refusal, invalid", rep, err)
		}
		if err := <-served; !errors.Is(err, ErrInvalid) {
			t.Errorf("ServeJoin = %v, want ErrInvalid", err)
		}
	})
	// None of the refusals burned the token.
	if _, err := c.joinSettled(gw1.Node, tok, j.request(tok), raftAddrs(j)); err != nil {
		t.Errorf("join after the refusals = %v", err)
	}
}

func TestParseJoinRequest(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	good := fmt.Sprintf(`{"token":%q,"name":"gw2","public_key":%q,"endpoint":"203.0.113.7:51820"}`, k1, k2)
	if req, err := ParseJoinRequest([]byte(good)); err != nil || req.Token != k1 || req.PublicKey != k2 || req.Name != "gw2" {
		t.Fatalf("ParseJoinRequest(%s) = %+v, %v", good, req, err)
	}
	tests := []struct{ name, in, want string }{
		{"unknown field", strings.Replace(good, `"name"`, `"admin":true,"name"`, 1), "unknown field"},
		{"duplicate key", strings.Replace(good, `"name":"gw2"`, `"name":"gw2","Name":"gw1"`, 1), "duplicate"},
		{"trailing data", good + `{}`, "trailing"},
		{"bad name", strings.Replace(good, `"gw2"`, `"-gw"`, 1), "gateway name"},
		{"no endpoint port", strings.Replace(good, `:51820`, ``, 1), "HOST:PORT"},
		{"port zero", strings.Replace(good, `:51820`, `:0`, 1), "port"},
		{"space in endpoint", strings.Replace(good, `203.0.113.7`, `a b`, 1), "printable"},
		{"same keys", strings.Replace(good, k2.String(), k1.String(), 1), "one-time key"},
		{"zero token", strings.Replace(good, k1.String(), Key{}.String(), 1), "zeros"},
		{"not json", `pgjoin1.xyz`, "invalid"},
		{"too long", `{"name":"` + strings.Repeat("a", MaxJoinRequest) + `"}`, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseJoinRequest([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseJoinRequest(%.80q) = %v, want ErrInvalid with %q", tt.in, err, tt.want)
			}
		})
	}
}

func FuzzParseJoinRequest(f *testing.F) {
	var k1, k2 Key
	k1[0], k2[0] = 1, 2
	f.Add([]byte(fmt.Sprintf(`{"token":%q,"name":"gw2","public_key":%q,"endpoint":"[2001:db8::1]:51820"}`, k1, k2)))
	f.Add([]byte(`{"token":"","name":"","public_key":"","endpoint":""}`))
	f.Add([]byte(`{"name":"a","name":"b"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseJoinRequest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseJoinRequest(%q) = %v, not ErrInvalid", data, err)
			}
			return
		}
		// What parses is a valid request that survives a round trip unchanged.
		if err := req.Check(); err != nil {
			t.Fatalf("ParseJoinRequest(%q) accepted %+v, which fails Check: %v", data, req, err)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseJoinRequest(b)
		if err != nil || again != req {
			t.Fatalf("round trip of %+v = %+v, %v", req, again, err)
		}
	})
}

func FuzzParseJoinReply(f *testing.F) {
	var tk, gk, ik Key
	tk[0], gk[0], ik[0] = 1, 2, 3
	req := JoinRequest{Token: tk, Name: "gw2", PublicKey: gk, Endpoint: "gw2.example:51820"}
	good := joinReply{Answer: &JoinAnswer{Prefix4: netip.MustParsePrefix("10.77.0.0/22"), Prefix6: netip.MustParsePrefix("fd77::/64"),
		Gateway: Gateway{Name: "gw2", PublicKey: gk, Endpoint: "gw2.example:51820", IPv4: netip.MustParseAddr("10.77.0.2"), IPv6: netip.MustParseAddr("fd77::2")}}}
	good.Answer.Gateways = []Gateway{{Name: "gw1", PublicKey: ik, Endpoint: "gw1.example:51820", IPv4: netip.MustParseAddr("10.77.0.1")}, good.Answer.Gateway}
	b, err := json.Marshal(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"code":"tokenused","err":"used at 2026-12-03 10:00:00Z: join token already used"}`))
	f.Add([]byte(`{"answer":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := parseJoinReply(data, req)
		if err != nil {
			return
		}
		// What is accepted is an answer for req inside the mesh's prefixes.
		if a.Gateway.Name != req.Name || a.Gateway.PublicKey != req.PublicKey || !a.Prefix4.Contains(a.Gateway.IPv4) {
			t.Fatalf("parseJoinReply(%q) accepted %+v", data, a)
		}
	})
}

func TestParseJoinReply(t *testing.T) {
	var tk, gk Key
	tk[0], gk[0] = 1, 2
	req := JoinRequest{Token: tk, Name: "gw2", PublicKey: gk, Endpoint: "gw2.example:51820"}
	gw := fmt.Sprintf(`{"name":"gw2","public_key":%q,"endpoint":"e:1","ipv4":"10.77.0.2","added":"2026-12-03T10:00:00Z"}`, gk)
	tests := []struct {
		name, in string
		want     error
	}{
		{"used", `{"code":"tokenused","err":"used at X: join token already used"}`, ErrTokenUsed},
		{"expired", `{"code":"tokenexpired","err":"expired at X: join token expired"}`, ErrTokenExpired},
		{"quorum", `{"code":"noquorum","err":"no quorum"}`, ErrNoQuorum},
		{"unknown field", `{"answer":null,"admin":true}`, ErrInvalid},
		{"nothing", `{}`, ErrInvalid},
		{"another gateway", `{"answer":{"prefix4":"10.77.0.0/22","gateway":` + strings.Replace(gw, `"gw2"`, `"gw1"`, 1) + `,"gateways":[]}}`, ErrInvalid},
		{"outside the prefix", `{"answer":{"prefix4":"10.78.0.0/22","gateway":` + gw + `,"gateways":[` + gw + `]}}`, ErrInvalid},
		{"not listed", `{"answer":{"prefix4":"10.77.0.0/22","gateway":` + gw + `,"gateways":[]}}`, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseJoinReply([]byte(tt.in), req); !errors.Is(err, tt.want) {
				t.Errorf("parseJoinReply(%s) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
	ok := `{"answer":{"prefix4":"10.77.0.0/22","gateway":` + gw + `,"gateways":[` + gw + `]}}`
	if a, err := parseJoinReply([]byte(ok), req); err != nil || a.Gateway.IPv4.String() != "10.77.0.2" {
		t.Errorf("parseJoinReply(%s) = %+v, %v", ok, a, err)
	}
}
