package enroll

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// MaxNameLen bounds a peer or printer name.
const MaxNameLen = 32

// DefaultTTL is how long a new peer may stay pending before it is dropped.
const DefaultTTL = 15 * time.Minute

// MaxTTL bounds --ttl: a pending peer is a live credential nobody has used yet.
const MaxTTL = 7 * 24 * time.Hour

// ErrInvalid marks input rejected before anything changed.
var ErrInvalid = errors.New("invalid input")

// ValidateName checks a peer or printer name: 1 to MaxNameLen characters from the ASCII
// letters, digits, '-', '_' and '.', starting with a letter or digit. So a name can never carry
// a control character, a space, '=', a newline or a path separator into UAPI text, a config, a
// log line or a file name, and never looks like a command-line flag.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("name is empty: %w", ErrInvalid)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name is %d bytes long, at most %d allowed: %w", len(name), MaxNameLen, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return fmt.Errorf("name %q: character %q at %d not allowed (use letters, digits, '-', '_', '.'; start with a letter or digit): %w",
				name, rune(c), i, ErrInvalid)
		}
	}
	return nil
}

// ParseRole parses a role name; the empty string is Viewer.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case "":
		return Viewer, nil
	case Viewer, Operator, Admin:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want viewer, operator or admin: %w", s, ErrInvalid)
}

// rank orders the roles; unknown roles rank below every real one.
func (r Role) rank() int {
	switch r {
	case Viewer:
		return 1
	case Operator:
		return 2
	case Admin:
		return 3
	}
	return 0
}

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// Includes reports whether r may do everything o may (admin includes operator includes
// viewer). An invalid role includes nothing and is included in nothing.
func (r Role) Includes(o Role) bool { return r.Valid() && o.Valid() && r.rank() >= o.rank() }

// ParseTTL parses a --ttl value such as "15m", "2h", "7d" or "1d12h" (Go durations, and a
// leading whole number of days): positive and at most MaxTTL.
func ParseTTL(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(t, 'd'); i > 0 {
		n, err := strconv.ParseUint(t[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("ttl %q: want a duration such as 15m, 2h, 7d or 1d12h: %w", s, ErrInvalid)
		}
		days, t = time.Duration(n)*24*time.Hour, t[i+1:]
		if t == "" {
			t = "0s"
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("ttl %q: want a duration such as 15m, 2h, 7d or 1d12h: %w", s, ErrInvalid)
	}
	d += days
	if err := checkTTL(d); err != nil {
		return 0, fmt.Errorf("ttl %q: want more than 0 and at most 7 days (7d): %w", s, ErrInvalid)
	}
	return d, nil
}

// CheckTTL checks a pending TTL as Enroll does: more than zero, at most MaxTTL.
func CheckTTL(d time.Duration) error { return checkTTL(d) }

func checkTTL(d time.Duration) error {
	if d <= 0 || d > MaxTTL {
		return fmt.Errorf("ttl %v: want more than 0 and at most %v: %w", d, MaxTTL, ErrInvalid)
	}
	return nil
}

// ParsePublicKey parses a device's own public key (--pubkey) as `wg pubkey` prints it: 44
// characters of standard base64. The all-zero key is refused.
func ParsePublicKey(s string) (wgtypes.Key, error) {
	s = strings.TrimSpace(s)
	if len(s) != 44 || s[43] != '=' {
		return wgtypes.Key{}, fmt.Errorf("public key: want the 44 base64 characters `wg pubkey` prints, got %d characters: %w", len(s), ErrInvalid)
	}
	for i := 0; i < 43; i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return wgtypes.Key{}, fmt.Errorf("public key: character %d is not base64: %w", i, ErrInvalid)
		}
	}
	// Strict: non-zero padding bits would let two spellings name one key.
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("public key: not canonical base64: %w", ErrInvalid)
	}
	k, err := wgtypes.NewKey(b)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("public key: %w", errors.Join(ErrInvalid, err))
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, fmt.Errorf("public key is all zeros: %w", ErrInvalid)
	}
	return k, nil
}

// ParseEndpoint checks the HOST:PORT devices dial. A bare host or address takes defaultPort.
// It returns the canonical form (IPv6 literals in brackets).
func ParseEndpoint(s string, defaultPort int) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("endpoint is empty: %w", ErrInvalid)
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// A bare hostname or address (an IPv6 literal with or without brackets).
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		portStr = strconv.Itoa(defaultPort)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", fmt.Errorf("endpoint %q: port must be 1-65535: %w", s, ErrInvalid)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return "", fmt.Errorf("endpoint %q: not a unicast address devices can dial: %w", s, ErrInvalid)
		}
		return netip.AddrPortFrom(a.Unmap(), uint16(port)).String(), nil
	}
	if !validHostname(host) {
		return "", fmt.Errorf("endpoint %q: not a host name or IP address: %w", s, ErrInvalid)
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(port)), nil
}

// validHostname accepts RFC 1123 host names (labels of letters, digits and inner hyphens).
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
