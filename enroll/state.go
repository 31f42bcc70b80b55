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

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
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

// strictDecode decodes exactly one JSON value, rejecting unknown fields and trailing data.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// writeFileAtomic replaces dir/name with data: temp → write → fsync → rename → fsync(dir).
func writeFileAtomic(dir, name string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// keepPrevious makes the current roster the previous generation, atomically: a hard link (or,
// where links fail, a synced copy) renamed over roster.prev.json, then fsync(dir).
func keepPrevious(dir string) error {
	cur := filepath.Join(dir, FileRoster)
	tmp := filepath.Join(dir, "."+FileRosterPrev+".tmp")
	os.Remove(tmp)
	if err := os.Link(cur, tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // first generation
		}
		data, rerr := os.ReadFile(cur)
		if rerr != nil {
			return fmt.Errorf("keep previous roster: %w", rerr)
		}
		return writeFileAtomic(dir, FileRosterPrev, data, 0o600)
	}
	if err := os.Rename(tmp, filepath.Join(dir, FileRosterPrev)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keep previous roster: %w", err)
	}
	return syncDir(dir)
}

// removeStaleTemps deletes temp files a killed writer left behind (called under the lock).
func removeStaleTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".tmp") && e.Type().IsRegular() {
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
