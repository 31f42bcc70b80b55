package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Errors a write can fail with. Each survives forwarding from the leader: errors.Is works on
// the follower that asked.
var (
	// ErrInvalid marks a command rejected for its input before anything changed.
	ErrInvalid = errors.New("invalid input")
	// ErrExists marks a name, key or printer that is already taken.
	ErrExists = errors.New("already exists")
	// ErrRevoked marks a name or key of a revoked device: revocation is for good.
	ErrRevoked = errors.New("revoked for good")
	// ErrNotFound marks a name or token the roster does not hold.
	ErrNotFound = errors.New("not found")
	// ErrExhausted marks a mesh prefix with no address left.
	ErrExhausted = errors.New("address space exhausted")
	// ErrHomed marks a gateway that still has devices homed on it.
	ErrHomed = errors.New("devices are homed there")
	// ErrTokenUsed marks a join token used before.
	ErrTokenUsed = errors.New("join token already used")
	// ErrTokenExpired marks a join token past its expiry.
	ErrTokenExpired = errors.New("join token expired")
	// ErrNoMesh marks a write before the mesh was bootstrapped or joined.
	ErrNoMesh = errNoMesh
	// ErrNoQuorum marks a write that could not commit: no leader, or the leader could not
	// reach a majority within the bound. The message always contains "quorum".
	ErrNoQuorum = errors.New("no quorum")
)

// quorumError is a write or confirmed read that could not complete within the bound.
type quorumError struct {
	op    string
	bound time.Duration
	cause error
}

func (e *quorumError) Error() string {
	return fmt.Sprintf("%s: no quorum: not committed within %v, a majority of the mesh's gateways is not reachable (%v)", e.op, e.bound, e.cause)
}

func (e *quorumError) Is(target error) bool { return target == ErrNoQuorum }

// errNoLeader is the cause of a quorum error when no leader was known.
var errNoLeader = errors.New("no leader")

// codes names each error on the wire.
var codes = map[string]error{
	"invalid": ErrInvalid, "exists": ErrExists, "revoked": ErrRevoked, "notfound": ErrNotFound,
	"exhausted": ErrExhausted, "homed": ErrHomed, "tokenused": ErrTokenUsed,
	"tokenexpired": ErrTokenExpired, "nomesh": ErrNoMesh, "noquorum": ErrNoQuorum,
	"notleader": errNotLeader,
}

func codeOf(err error) string {
	for c, e := range codes {
		if errors.Is(err, e) {
			return c
		}
	}
	return ""
}

// remoteError is an error that came back from the leader: its text, and the sentinel its
// code names.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

func decodeError(code, msg string) error {
	if msg == "" {
		return nil
	}
	return &remoteError{msg: msg, kind: codes[code]}
}

// Command is one write to the roster, as raft replicates it. Exactly one of the operation
// fields is set. At is the proposing leader's clock: Apply never reads a clock, so every
// replica reaches the same roster.
type Command struct {
	At            time.Time         `json:"at"`
	Init          *InitCmd          `json:"init,omitempty"`
	Enroll        *EnrollCmd        `json:"enroll,omitempty"`
	Revoke        *RevokeCmd        `json:"revoke,omitempty"`
	SetRole       *SetRoleCmd       `json:"set_role,omitempty"`
	SetAPIKey     *SetAPIKeyCmd     `json:"set_api_key,omitempty"`
	AddGateway    *AddGatewayCmd    `json:"add_gateway,omitempty"`
	RemoveGateway *RemoveGatewayCmd `json:"remove_gateway,omitempty"`
	AddPrinter    *AddPrinterCmd    `json:"add_printer,omitempty"`
	AddToken      *AddTokenCmd      `json:"add_token,omitempty"`
	ConsumeToken  *ConsumeTokenCmd  `json:"consume_token,omitempty"`
	Activate      *ActivateCmd      `json:"activate,omitempty"`
}

// InitCmd creates the mesh: its prefixes and its first gateway (offset 1). A single
// gateway's existing roster upgrades in place by coming along: its devices (active or
// revoked) and printers keep their addresses, and allocation resumes above NextOffset (the
// single gateway's high-water mark), so no address it ever handed out comes back.
type InitCmd struct {
	Prefix4 netip.Prefix  `json:"prefix4"`
	Prefix6 netip.Prefix  `json:"prefix6,omitzero"`
	Gateway AddGatewayCmd `json:"gateway"`
	// Devices are imported homed on Gateway; their Home is ignored.
	Devices []Device `json:"devices,omitempty"`
	// Printers are imported on Gateway; their Gateway is ignored.
	Printers   []Printer `json:"printers,omitempty"`
	NextOffset uint32    `json:"next_offset,omitempty"`
}

// EnrollCmd adds a device; Apply allocates its addresses.
type EnrollCmd struct {
	Name       string `json:"name"`
	Role       Role   `json:"role"`
	PublicKey  Key    `json:"public_key"`
	APIKeyHash []byte `json:"api_key_hash,omitempty"`
	APIKeyRole Role   `json:"api_key_role,omitempty"`
	Home       string `json:"home"`
	// OwnKey is true when the device brought its own key (no private key was ever made).
	OwnKey bool `json:"own_key,omitempty"`
	// ExpiresAt, when set, makes the device pending: it is to make its first handshake with
	// its home gateway before then (ActivateCmd records it), or its home expires it. Zero:
	// active from the start.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// RevokeCmd revokes a device for good. PublicKey, when set, must match the device's: a
// revocation made on one replica names exactly the device it saw.
type RevokeCmd struct {
	Name      string `json:"name"`
	PublicKey Key    `json:"public_key,omitzero"`
	// Expired marks the revocation of a pending device whose home gateway saw no handshake
	// before its ExpiresAt: the device is shown expired, not revoked, everywhere. It has no
	// effect on a device that was activated.
	Expired bool `json:"expired,omitempty"`
}

// ActivateCmd records a pending device's first handshake with its home gateway: from then on
// it is active on every gateway's view, and no longer expires. Activating an active device
// again changes nothing.
type ActivateCmd struct {
	Name      string `json:"name"`
	PublicKey Key    `json:"public_key"`
	// At is the first handshake as the home gateway saw it; zero: the command's time.
	At time.Time `json:"at,omitzero"`
}

// SetRoleCmd changes an active device's role.
type SetRoleCmd struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// SetAPIKeyCmd replaces an active device's API key hash (a rotation at its home gateway) and
// its narrowing role (empty: the device's role); the old key stops working everywhere.
type SetAPIKeyCmd struct {
	Name       string `json:"name"`
	APIKeyHash []byte `json:"api_key_hash"`
	APIKeyRole Role   `json:"api_key_role,omitempty"`
}

// AddGatewayCmd adds a gateway; Apply allocates its addresses. Adding the same name with the
// same key again returns the existing gateway, with Endpoint updated when it differs (a
// gateway whose address or port changed announces itself so).
type AddGatewayCmd struct {
	Name      string `json:"name"`
	PublicKey Key    `json:"public_key"`
	Endpoint  string `json:"endpoint"`
}

// RemoveGatewayCmd removes a gateway and its printers; refused while active devices are
// homed there.
type RemoveGatewayCmd struct {
	Name string `json:"name"`
}

// AddPrinterCmd adds a printer to a gateway; Apply allocates its addresses. Names are unique
// across the mesh; the same name on the same gateway again returns the existing printer.
type AddPrinterCmd struct {
	Name    string `json:"name"`
	Gateway string `json:"gateway"`
}

// AddTokenCmd records a join token's one-time public key, pending until used or expired.
type AddTokenCmd struct {
	PublicKey Key       `json:"public_key"`
	Inviter   string    `json:"inviter"`
	Expires   time.Time `json:"expires"`
}

// ConsumeTokenCmd uses a join token: once, before it expires (by the command's At). By names
// who used it (the joining gateway); the same By again is the same use, so a retried
// consume after an unclear outcome succeeds.
type ConsumeTokenCmd struct {
	PublicKey Key    `json:"public_key"`
	By        string `json:"by"`
}

// op names the operation, for messages.
func (c *Command) op() string {
	switch {
	case c.Init != nil:
		return "init"
	case c.Enroll != nil:
		return "enroll " + c.Enroll.Name
	case c.Revoke != nil:
		return "revoke " + c.Revoke.Name
	case c.SetRole != nil:
		return "set role of " + c.SetRole.Name
	case c.SetAPIKey != nil:
		return "set api key of " + c.SetAPIKey.Name
	case c.AddGateway != nil:
		return "add gateway " + c.AddGateway.Name
	case c.RemoveGateway != nil:
		return "remove gateway " + c.RemoveGateway.Name
	case c.AddPrinter != nil:
		return "add printer " + c.AddPrinter.Name
	case c.AddToken != nil:
		return "add join token"
	case c.ConsumeToken != nil:
		return "use join token"
	case c.Activate != nil:
		return "activate " + c.Activate.Name
	}
	return "empty command"
}

// Result is what an applied command returns: the record it made or touched.
type Result struct {
	Device  *Device    `json:"device,omitempty"`
	Gateway *Gateway   `json:"gateway,omitempty"`
	Printer *Printer   `json:"printer,omitempty"`
	Token   *JoinToken `json:"token,omitempty"`
}

// applyResult is what FSM.Apply hands back to raft.
type applyResult struct {
	Result
	err error
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("mesh: marshal %T: %v", v, err))
	}
	return string(b)
}

// validName checks a device, gateway or printer name with enroll's rules: 1 to 32 ASCII
// letters, digits, '-', '_' and '.', starting with a letter or digit.
func validName(what, name string) error {
	if name == "" || len(name) > 32 {
		return fmt.Errorf("%s name %q: want 1 to 32 characters: %w", what, name, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return fmt.Errorf("%s name %q: character %q at %d not allowed (letters, digits, '-', '_', '.'; start with a letter or digit): %w",
				what, name, rune(c), i, ErrInvalid)
		}
	}
	return nil
}
