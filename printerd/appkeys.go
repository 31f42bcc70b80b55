package printerd

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/printgate/printgate/enroll"
)

// This file is OctoPrint's app-keys workflow (bundledplugins/appkeys.rst) and the passive
// login sessions. A client asks for a key (request), polls (202 while pending), and an admin
// decides in the web UI. The key that results belongs to the peer that asked and carries at
// most that peer's role: it can only narrow what the peer may do, never widen it.
//
//	request ──▶ pending ──admin approves──▶ approved ──first poll──▶ (key handed out, gone)
//	              │  └──admin denies──▶ denied ──poll──▶ 404
//	              └── not polled for appKeyPollTimeout, or older than appKeyMaxAge ──▶ gone (404)

const (
	appKeyPollTimeout = 60 * time.Second // OctoPrint: 5 s; longer so that the admin can walk over
	appKeyMaxAge      = 10 * time.Minute
	appKeyMaxPending  = 32
	appKeyRatePerMin  = 3 // requests per peer per minute, as OctoPrint
)

type appKeyState int

const (
	appKeyPending appKeyState = iota
	appKeyApproved
	appKeyDenied
)

// appKeyRequest is one pending request.
type appKeyRequest struct {
	Token    string      `json:"token"`
	App      string      `json:"app"`
	Peer     string      `json:"peer"`
	Role     enroll.Role `json:"role"` // the peer's role when it asked: the most the key may carry
	Created  time.Time   `json:"created"`
	lastPoll time.Time
	state    appKeyState
	key      string
}

type appKeys struct {
	now func() time.Time
	mu  struct {
		sync.Mutex
		reqs   map[string]*appKeyRequest // by token
		recent map[string][]time.Time    // peer → request times in the last minute
	}
}

func newAppKeys(now func() time.Time) *appKeys {
	a := &appKeys{now: now}
	a.mu.reqs = map[string]*appKeyRequest{}
	a.mu.recent = map[string][]time.Time{}
	return a
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// expireLocked drops requests nobody polls any more. Needs a.mu.
func (a *appKeys) expireLocked(now time.Time) {
	for t, r := range a.mu.reqs {
		if now.Sub(r.lastPoll) > appKeyPollTimeout || now.Sub(r.Created) > appKeyMaxAge {
			delete(a.mu.reqs, t)
		}
	}
}

func (a *appKeys) create(peer string, role enroll.Role, app string) (*appKeyRequest, error) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	var keep []time.Time
	for _, t := range a.mu.recent[peer] {
		if now.Sub(t) < time.Minute {
			keep = append(keep, t)
		}
	}
	if len(keep) >= appKeyRatePerMin {
		a.mu.recent[peer] = keep
		return nil, errorf(http.StatusTooManyRequests, "too many app key requests: try again in a minute")
	}
	if len(a.mu.reqs) >= appKeyMaxPending {
		return nil, errorf(http.StatusTooManyRequests, "too many pending app key requests")
	}
	a.mu.recent[peer] = append(keep, now)
	r := &appKeyRequest{Token: randomToken(), App: app, Peer: peer, Role: role, Created: now, lastPoll: now}
	a.mu.reqs[r.Token] = r
	return r, nil
}

// poll returns a request's state for the peer that made it; a token of another peer is
// unknown to this one. An approved key is handed out once.
func (a *appKeys) poll(peer, token string) (state appKeyState, key string, ok bool) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	r, ok := a.lookupLocked(token)
	if !ok || !keyEqual(r.Peer, peer) {
		return 0, "", false
	}
	r.lastPoll = now
	if r.state != appKeyPending {
		delete(a.mu.reqs, r.Token)
	}
	return r.state, r.key, true
}

// lookupLocked finds a request by token in constant time per entry. Needs a.mu.
func (a *appKeys) lookupLocked(token string) (*appKeyRequest, bool) {
	var found *appKeyRequest
	for t, r := range a.mu.reqs {
		if keyEqual(t, token) {
			found = r
		}
	}
	return found, found != nil
}

func (a *appKeys) pending() []appKeyRequest {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	out := []appKeyRequest{}
	for _, r := range a.mu.reqs {
		if r.state == appKeyPending {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// decide approves (with the key already issued) or denies a pending request.
func (a *appKeys) decide(token string, approve bool, key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.lookupLocked(token)
	if !ok || r.state != appKeyPending {
		return false
	}
	if approve {
		r.state, r.key = appKeyApproved, key
	} else {
		r.state = appKeyDenied
	}
	return true
}

func (a *appKeys) get(token string) (appKeyRequest, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(a.now())
	r, ok := a.lookupLocked(token)
	if !ok || r.state != appKeyPending {
		return appKeyRequest{}, false
	}
	return *r, true
}

func (s octoprint) opAppKeysProbe(q *request) error {
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s octoprint) opAppKeysRequest(q *request) error {
	var body struct {
		App  string `json:"app"`
		User string `json:"user"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	if body.App == "" || len(body.App) > 64 {
		return errorf(http.StatusBadRequest, "app name missing or too long")
	}
	if s.cfg.Devices == nil {
		return errorf(http.StatusServiceUnavailable, "app keys are not available on this gateway")
	}
	r, err := s.appkeys.create(q.caller.Name, q.role, body.App)
	if err != nil {
		return err
	}
	s.record(q, "appkey.request", map[string]string{"app": body.App}, nil)
	q.w.Header().Set("Location", absURL(q.r, "/plugin/appkeys/request/"+r.Token))
	// Cura indexes auth_dialog and opens it in a browser: the web UI page where an admin
	// decides, or this address when the gateway's is not configured.
	dialog := absURL(q.r, "/")
	if s.cfg.GatewayURL != "" {
		dialog = s.cfg.GatewayURL + "/#/devices"
	}
	out := map[string]any{"app_token": r.Token, "auth_dialog": dialog}
	writeJSON(q.w, http.StatusCreated, out)
	return nil
}

func (s octoprint) opAppKeysPoll(q *request) error {
	state, key, ok := s.appkeys.poll(q.caller.Name, q.r.PathValue("token"))
	if !ok {
		return errorf(http.StatusNotFound, "no such app key request (denied, expired or unknown)")
	}
	switch state {
	case appKeyApproved:
		writeJSON(q.w, http.StatusOK, map[string]string{"api_key": key})
	case appKeyDenied:
		return errorf(http.StatusNotFound, "app key request denied")
	default:
		writeJSON(q.w, http.StatusAccepted, map[string]string{"message": "Awaiting decision"})
	}
	return nil
}

// nAppKeys lists pending requests for the admin UI.
func (s native) nAppKeys(q *request) error {
	writeJSON(q.w, http.StatusOK, map[string]any{"requests": s.appkeys.pending()})
	return nil
}

// nAppKeyDecision approves or denies a request. An approval issues the requesting peer's API
// key with the peer's role at request time, or a narrower role the admin picks.
func (s native) nAppKeyDecision(q *request) error {
	var body struct {
		Decision bool        `json:"decision"`
		Role     enroll.Role `json:"role"`
	}
	if err := decodeJSON(q, &body); err != nil {
		return err
	}
	token := q.r.PathValue("token")
	r, ok := s.appkeys.get(token)
	if !ok {
		return errorf(http.StatusNotFound, "no such pending app key request")
	}
	args := map[string]string{"app": r.App, "device": r.Peer}
	if !body.Decision {
		s.appkeys.decide(token, false, "")
		s.record(q, "appkey.deny", args, nil)
		q.w.WriteHeader(http.StatusNoContent)
		return nil
	}
	role := r.Role
	if body.Role != "" {
		if !r.Role.Includes(body.Role) {
			return errorf(http.StatusBadRequest, "role %q is more than the device's %s", clip(string(body.Role), 20), r.Role)
		}
		role = body.Role
	}
	if s.cfg.Devices == nil {
		return errorf(http.StatusServiceUnavailable, "devices are not available on this gateway")
	}
	args["role"] = string(role)
	var key string
	err := s.act(q, "appkey.grant", args, func() error {
		var err error
		key, err = s.cfg.Devices.RotateAPIKey(r.Peer, role)
		return err
	})
	var he *httpError
	if errors.As(err, &he) {
		return err
	}
	if err != nil {
		return conflict(err)
	}
	if !s.appkeys.decide(token, true, key) {
		return errorf(http.StatusNotFound, "the request expired meanwhile")
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// sessions are the passive-login sessions that push clients name in their auth message.
type sessions struct {
	mu struct {
		sync.Mutex
		m map[string]sessionEntry // token → peer
	}
}

type sessionEntry struct {
	peer    string
	created time.Time
}

const sessionMaxAge = 24 * time.Hour

func newSessions() *sessions {
	s := &sessions{}
	s.mu.m = map[string]sessionEntry{}
	return s
}

func (s *sessions) create(peer string, now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, e := range s.mu.m {
		if now.Sub(e.created) > sessionMaxAge {
			delete(s.mu.m, t)
		}
	}
	if len(s.mu.m) > 1024 {
		s.mu.m = map[string]sessionEntry{} // bounded: clients simply log in again
	}
	t := randomToken()
	s.mu.m[t] = sessionEntry{peer: peer, created: now}
	return t
}

// valid reports whether token is a session of peer.
func (s *sessions) valid(peer, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := false
	for t, e := range s.mu.m {
		if keyEqual(t, token) && e.peer == peer {
			ok = true
		}
	}
	return ok
}
