package enroll

// The state directory and its crash-safe files (DESIGN.md invariant 7).
//
//	DIR/               mode 0700
//	  gateway.key      the gateway's private key, base64 as `wg genkey` prints it, mode 0600
//	  gateway.json     listen port, prefixes, endpoint: an envelope, written once by Init
//	  roster.json      peers and printers: an envelope, generation N
//	  roster.prev.json the previous generation, N-1
//	  lock             flock(2)ed while a Registry is open; holds the holder's pid
//
// An envelope is JSON {"format", "version", "sha256", "body"}: sha256 is the hex SHA-256 of
// the compacted body, so a torn, truncated or edited file fails to verify instead of loading
// as something else. A write is: temp file in DIR → write → fsync → close → rename → fsync(DIR).
// Before the roster is replaced, the current file is hard-linked to roster.prev.json (renamed
// into place, DIR fsynced), so at every instant roster.json is the old or the new generation
// and roster.prev.json is the one before.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll/statefile"
)

// File names inside the state directory.
const (
	FileGatewayKey = "gateway.key"
	FileGateway    = "gateway.json"
	FileRoster     = "roster.json"
	FileRosterPrev = "roster.prev.json"
	FileLock       = "lock"
)

// FormatVersion is the envelope version this package writes and the only one it reads.
const FormatVersion = 1

const (
	kindRoster  = "printgate-roster"
	kindGateway = "printgate-gateway"
)

// ErrCorrupt marks a state file that is empty, truncated, fails its checksum, has an unknown
// version or does not validate. The gateway must not bring the tunnel up on it.
var ErrCorrupt = errors.New("state file is corrupt")

// ErrInUse marks a state directory another Registry (another process) holds open.
var ErrInUse = errors.New("state directory in use")

// InUseError says which process holds the state directory.
type InUseError struct {
	Dir string
	PID int // 0 when unknown
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("state directory %s in use by %s (a running `printgate run` owns it: use the control socket, or stop it)", e.Dir, who)
}

func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// CorruptError describes a state file that failed to load and what to do about it.
type CorruptError struct {
	Path   string // the file that failed
	Reason string // e.g. "checksum mismatch"
	// Prev is the previous generation's path and PrevGeneration its generation when it
	// verifies, so `printgate recover` can promote it; empty when there is none.
	Prev           string
	PrevGeneration uint64
	Dir            string
}

func (e *CorruptError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is corrupt (%s); the tunnel stays down until it is fixed: ", e.Path, e.Reason)
	if e.Prev != "" {
		fmt.Fprintf(&b, "the previous generation %d at %s verifies: inspect it, then run `printgate recover --state %s` to restore it",
			e.PrevGeneration, e.Prev, e.Dir)
	} else {
		fmt.Fprintf(&b, "no valid previous generation: restore %s from a backup", e.Dir)
	}
	return b.String()
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

type envelope struct {
	Format  string          `json:"format"`
	Version int             `json:"version"`
	SHA256  string          `json:"sha256"`
	Body    json.RawMessage `json:"body"`
}

// seal wraps body in a checksummed envelope.
func seal(kind string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", kind, err)
	}
	sum := sha256.Sum256(b)
	out, err := json.MarshalIndent(envelope{Format: kind, Version: FormatVersion, SHA256: hex.EncodeToString(sum[:]), Body: b}, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", kind, err)
	}
	return append(out, '\n'), nil
}

// errReason is a decode failure whose text is the reason shown in a CorruptError.
type errReason string

func (e errReason) Error() string { return string(e) }

// unseal verifies an envelope of the given kind and strictly decodes its body into v.
func unseal(kind string, data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errReason("the file is empty")
	}
	var env envelope
	if err := strictDecode(data, &env); err != nil {
		return errReason("not a readable envelope, truncated or damaged: " + err.Error())
	}
	if env.Format != kind {
		return errReason(fmt.Sprintf("format %q, want %q", env.Format, kind))
	}
	if env.Version != FormatVersion {
		return errReason(fmt.Sprintf("unknown version %d, this printgate reads version %d", env.Version, FormatVersion))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, env.Body); err != nil || compact.Len() == 0 {
		return errReason("body is missing or damaged")
	}
	sum := sha256.Sum256(compact.Bytes())
	want, err := hex.DecodeString(env.SHA256)
	if err != nil || !bytes.Equal(sum[:], want) {
		return errReason("checksum mismatch")
	}
	if err := strictDecode(compact.Bytes(), v); err != nil {
		return errReason("body does not decode: " + err.Error())
	}
	return nil
}

// strictDecode decodes exactly one JSON value, rejecting unknown fields, duplicate keys and
// trailing data.
func strictDecode(data []byte, v any) error { return DecodeStrict(data, v) }

// writeFileAtomic replaces dir/name with data the crash-safe way (package statefile).
func writeFileAtomic(dir, name string, data []byte, perm fs.FileMode) error {
	return statefile.Write(filepath.Join(dir, name), data, perm)
}

// keepPrevious makes the current roster the previous generation, atomically.
func keepPrevious(dir string) error {
	return statefile.KeepPrevious(filepath.Join(dir, FileRoster), filepath.Join(dir, FileRosterPrev))
}

// removeStaleTemps deletes temp files a killed writer left behind (called under the lock).
func removeStaleTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if statefile.IsTemp(n) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// lockDir takes the exclusive lock on dir, recording our pid in the lock file.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, FileLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	if err := flockExclusive(f); err != nil {
		defer f.Close()
		if errors.Is(err, errLockHeld) {
			b, _ := io.ReadAll(io.LimitReader(f, 32))
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return nil, &InUseError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// lockDirWait is lockDir, retried while another process holds the lock, for up to wait.
func lockDirWait(dir string, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := lockDir(dir)
		if err == nil || !errors.Is(err, ErrInUse) || !time.Now().Before(deadline) {
			return f, err
		}
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
	}
}

// unlockDir releases the lock. The pid is cleared first so a reader never blames us later.
func unlockDir(f *os.File) error {
	f.Truncate(0)
	funlock(f)
	return f.Close()
}

// checkPrivate refuses a path that group or others may access.
func checkPrivate(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		want := "0600"
		if fi.IsDir() {
			want = "0700"
		}
		return fmt.Errorf("%s has mode %#o, want %s (chmod %s %s)", path, perm, want, want[1:], path)
	}
	return nil
}

// writeGatewayKey stores the gateway private key (mode 0600).
func writeGatewayKey(dir string, k wgtypes.Key) error {
	return writeFileAtomic(dir, FileGatewayKey, []byte(k.String()+"\n"), 0o600)
}

// readGatewayKey loads the gateway private key, refusing a file others can read.
func readGatewayKey(dir string) (wgtypes.Key, error) {
	path := filepath.Join(dir, FileGatewayKey)
	f, err := os.Open(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read gateway key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read gateway key: %w", err)
	}
	if err := checkPrivate(path, fi); err != nil {
		return wgtypes.Key{}, fmt.Errorf("read gateway key: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read gateway key: %w", err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil || k == (wgtypes.Key{}) {
		return wgtypes.Key{}, &CorruptError{Path: path, Reason: "not a WireGuard private key", Dir: dir}
	}
	return k, nil
}

// writeState writes the files of a new state directory, the roster last (its presence
// marks a finished init).
func writeState(dir string, g Gateway) error {
	if err := writeGatewayKey(dir, g.PrivateKey); err != nil {
		return err
	}
	gb, err := seal(kindGateway, gatewayBody{
		ListenPort: g.ListenPort, Prefix4: g.Prefix4, Prefix6: g.Prefix6,
		Endpoint: g.Endpoint, EndpointGuessed: g.EndpointGuessed,
		PublicKey: keyText(g.PublicKey()), Created: time.Now().UTC(),
		Name: g.Name, Addr4: g.Address4, Addr6: g.Address6,
	})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, FileGateway, gb, 0o600); err != nil {
		return err
	}
	rb, err := seal(kindRoster, rosterBody{Generation: 1, NextDevice: firstDeviceOffset, Peers: []diskPeer{}, Printers: []PrinterAddr{}})
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, FileRoster, rb, 0o600)
}

// load reads the gateway and the roster; the caller holds the directory lock.
func (r *Registry) load() error {
	g, err := loadGateway(r.dir)
	if err != nil {
		return err
	}
	r.gw = g
	body, err := loadRoster(r.dir, g)
	if err != nil {
		return err
	}
	r.install(body)
	r.mu.saved = r.opts.Now()
	return nil
}

func loadGateway(dir string) (Gateway, error) {
	key, err := readGatewayKey(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Gateway{}, fmt.Errorf("%s is not initialized (no %s): run `printgate init --state %s`", dir, FileGatewayKey, dir)
		}
		return Gateway{}, err
	}
	path := filepath.Join(dir, FileGateway)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Gateway{}, &CorruptError{Path: path, Reason: "missing (init did not finish?)", Dir: dir}
		}
		return Gateway{}, fmt.Errorf("read gateway config: %w", err)
	}
	var gb gatewayBody
	if err := unseal(kindGateway, data, &gb); err != nil {
		return Gateway{}, &CorruptError{Path: path, Reason: err.Error(), Dir: dir}
	}
	g := Gateway{PrivateKey: key, ListenPort: gb.ListenPort, Prefix4: gb.Prefix4, Prefix6: gb.Prefix6,
		Endpoint: gb.Endpoint, EndpointGuessed: gb.EndpointGuessed,
		Name: gb.Name, Address4: gb.Addr4, Address6: gb.Addr6}
	if err := checkGateway(g); err != nil {
		return Gateway{}, &CorruptError{Path: path, Reason: err.Error(), Dir: dir}
	}
	if wgtypes.Key(gb.PublicKey) != key.PublicKey() {
		return Gateway{}, &CorruptError{Path: path, Reason: "its public key does not match " + FileGatewayKey, Dir: dir}
	}
	return g, nil
}

func checkGateway(g Gateway) error {
	if g.ListenPort < 1 || g.ListenPort > 65535 {
		return fmt.Errorf("listen port %d out of range", g.ListenPort)
	}
	if err := checkPrefix4(g.Prefix4); err != nil {
		return err
	}
	if err := checkPrefix6(g.Prefix6); err != nil {
		return err
	}
	if ep, err := ParseEndpoint(g.Endpoint, g.ListenPort); err != nil || ep != g.Endpoint {
		return fmt.Errorf("endpoint %q is not canonical HOST:PORT", g.Endpoint)
	}
	if g.Name != "" {
		if err := ValidateName(g.Name); err != nil {
			return fmt.Errorf("gateway name: %w", err)
		}
	}
	return checkGatewayAddrs(g.Prefix4, g.Prefix6, g.Address4, g.Address6)
}

// loadRoster reads and verifies roster.json; on failure it checks roster.prev.json so the
// error can name the recovery.
func loadRoster(dir string, g Gateway) (*rosterBody, error) {
	path := filepath.Join(dir, FileRoster)
	body, reason := readRosterFile(path, g)
	if reason == "" {
		return body, nil
	}
	ce := &CorruptError{Path: path, Reason: reason, Dir: dir}
	prevPath := filepath.Join(dir, FileRosterPrev)
	if prev, preason := readRosterFile(prevPath, g); preason == "" {
		ce.Prev, ce.PrevGeneration = prevPath, prev.Generation
	}
	return nil, ce
}

// readRosterFile returns the verified roster at path, or a reason it is not one.
func readRosterFile(path string, g Gateway) (*rosterBody, string) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "the file is missing"
		}
		return nil, err.Error()
	}
	body, err := decodeRoster(data, g)
	if err != nil {
		return nil, err.Error()
	}
	return body, ""
}

// decodeRoster verifies, decodes and validates a roster file against the gateway.
func decodeRoster(data []byte, g Gateway) (*rosterBody, error) {
	var body rosterBody
	if err := unseal(kindRoster, data, &body); err != nil {
		return nil, err
	}
	if err := body.validate(g); err != nil {
		return nil, errReason("invalid content: " + err.Error())
	}
	return &body, nil
}

// Recover replaces a roster that fails to load with the previous generation, after a person
// has looked at both. The damaged file is kept beside it as roster.corrupt-UNIXTIME.json. It
// refuses when roster.json is fine or when the previous generation does not verify either.
// The recovered roster gets a generation past the one that was lost, so generations only grow.
func Recover(dir string) ([]Peer, error) {
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	defer unlockDir(lock)
	g, err := loadGateway(dir)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	path := filepath.Join(dir, FileRoster)
	if _, reason := readRosterFile(path, g); reason == "" {
		return nil, fmt.Errorf("recover: %s verifies; nothing to recover", path)
	}
	prevPath := filepath.Join(dir, FileRosterPrev)
	prev, reason := readRosterFile(prevPath, g)
	if reason != "" {
		return nil, fmt.Errorf("recover: the previous generation %s is not usable either (%s): restore %s from a backup", prevPath, reason, dir)
	}
	if data, err := os.ReadFile(path); err == nil {
		aside := fmt.Sprintf("roster.corrupt-%d.json", time.Now().Unix())
		if err := writeFileAtomic(dir, aside, data, 0o600); err != nil {
			return nil, fmt.Errorf("recover: keep the damaged roster: %w", err)
		}
	}
	prev.Generation += 2
	data, err := seal(kindRoster, prev)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	if err := writeFileAtomic(dir, FileRoster, data, 0o600); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	peers := make([]Peer, len(prev.Peers))
	for i, dp := range prev.Peers {
		peers[i] = dp.peer()
	}
	return peers, nil
}
