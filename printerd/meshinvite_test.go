package printerd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// fakeMesh hands out join tokens, or refuses with err.
type fakeMesh struct {
	err  error
	ttls []time.Duration
}

func (m *fakeMesh) Invite(_ context.Context, ttl time.Duration) (string, time.Time, error) {
	m.ttls = append(m.ttls, ttl)
	if m.err != nil {
		return "", time.Time{}, m.err
	}
	return "pgjoin1.secret", time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), nil
}

func TestMeshInviteAPI(t *testing.T) {
	tests := []struct {
		name     string
		mesh     *fakeMesh
		body     string
		code     int
		wantBody string
		wantTTL  time.Duration
	}{
		{"default ttl", &fakeMesh{}, `{}`, http.StatusCreated, `"token":"pgjoin1.secret"`, 0},
		{"ttl", &fakeMesh{}, `{"ttl":"1h"}`, http.StatusCreated, `"expires_at":"2026-12-03T12:00:00Z"`, time.Hour},
		{"bad ttl", &fakeMesh{}, `{"ttl":"soon"}`, http.StatusBadRequest, "ttl", -1},
		{"unknown field", &fakeMesh{}, `{"ttl":"1h","role":"admin"}`, http.StatusBadRequest, "", -1},
		{"no quorum", &fakeMesh{err: fmt.Errorf("add join token: no quorum (%w)", enroll.ErrUnavailable)}, `{}`, http.StatusServiceUnavailable, "quorum", 0},
		{"refused ttl", &fakeMesh{err: fmt.Errorf("ttl 1s: want 1m to 168h: %w", enroll.ErrInvalid)}, `{"ttl":"1s"}`, http.StatusBadRequest, "1m to 168h", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.Mesh = tt.mesh })
			w := h.do(req{method: "POST", target: "/api/v1/mesh/invite", from: adminAddr, to: gwAddr, body: tt.body})
			if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Fatalf("POST /api/v1/mesh/invite %s = %d %s; want %d with %q", tt.body, w.Code, w.Body, tt.code, tt.wantBody)
			}
			if tt.wantTTL >= 0 && (len(tt.mesh.ttls) != 1 || tt.mesh.ttls[0] != tt.wantTTL) {
				t.Errorf("Invite called with %v, want [%v]", tt.mesh.ttls, tt.wantTTL)
			}
			if tt.wantTTL < 0 && len(tt.mesh.ttls) != 0 {
				t.Errorf("Invite called with %v for a refused request", tt.mesh.ttls)
			}
			if w.Code == http.StatusCreated && w.Header().Get("Cache-Control") != "no-store" {
				t.Error("the token's answer may be cached")
			}
			recs, _ := h.audit.Tail(10)
			b, _ := json.Marshal(recs)
			if strings.Contains(string(b), "pgjoin1") {
				t.Errorf("the audit log holds the token: %s", b)
			}
			if tt.wantTTL >= 0 && (len(recs) == 0 || recs[0].Action != "mesh.invite" || recs[0].Peer != "alice") {
				t.Errorf("audit records %+v, want mesh.invite by alice", recs)
			}
		})
	}
	// Not for operators (the route table test walks every role; this one reads the refusal).
	h := newHarness(t, func(c *Config) { c.Mesh = &fakeMesh{} })
	if w := h.do(req{method: "POST", target: "/api/v1/mesh/invite", from: operatorAddr, to: gwAddr, body: `{}`}); w.Code != http.StatusForbidden {
		t.Errorf("invite as operator = %d, want 403", w.Code)
	}
}
