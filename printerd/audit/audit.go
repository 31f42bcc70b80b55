// Package audit keeps the gateway's append-only, hash-chained audit log of state-changing actions.
//
// The log is one file of JSON lines, STATE/audit.log (Path). Each record names who acted (peer
// name, public key, role), what they did (action, arguments) and what came of it (result), and
// carries the SHA-256 of the previous record, so that any edited, removed, inserted or reordered
// record breaks the chain that Verify walks:
//
//	hash = hex(SHA-256(canonical JSON of the record with "hash" empty, "prev" included))
//	prev of record 1 = 64 zeros; seq counts 1, 2, 3, ... with no gap
//
// Canonical JSON is what encoding/json writes for the record's wire form: fixed field order,
// sorted argument keys, time in RFC 3339 UTC with nanoseconds. A line that is not exactly the
// canonical encoding of its own content counts as edited.
//
// Deleting the newest records leaves a shorter chain that still verifies: compare the head
// (seq and hash) Verify and Log.Head report with a copy kept elsewhere.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll/statefile"
)

// FileName is the audit log's name in the gateway's state directory.
const FileName = "audit.log"

// Path returns the audit log's path for a state directory: STATE/audit.log.
func Path(stateDir string) string { return filepath.Join(stateDir, FileName) }

// MaxRecordBytes bounds one record line; Append refuses larger records, Verify larger lines.
const MaxRecordBytes = 64 << 10

// Actions recorded by the gateway. Callers may use others; these keep the log consistent.
const (
	ActionEnroll    = "enroll"
	ActionRevoke    = "revoke"
	ActionUpload    = "upload"
	ActionDelete    = "delete"
	ActionStart     = "start"
	ActionPause     = "pause"
	ActionResume    = "resume"
	ActionCancel    = "cancel"
	ActionTerminal  = "terminal"
	ActionRefusal   = "refusal"
	ActionEmergency = "emergency"
	ActionSettings  = "settings"
	// ActionMeshInvite is a join token made for a new gateway (the token itself is never
	// recorded: it is a secret until used).
	ActionMeshInvite = "mesh.invite"
	// ActionMeshRemove is a gateway removed from the mesh.
	ActionMeshRemove = "mesh.remove"
	// ActionTornTail is written by Open when it cut an incomplete last line left by a crash.
	ActionTornTail = "audit.torn-tail"
)

// Record is one audit entry. Seq, Prev and Hash are set by Append; Time too when zero.
type Record struct {
	Seq    uint64            // 1, 2, 3, ...
	Time   time.Time         // UTC
	Peer   string            // peer name; empty for the local CLI or the daemon itself
	Key    wgtypes.Key       // peer public key; zero when there is no peer
	Role   string            // the role the action was taken with
	Action string            // e.g. ActionUpload
	Args   map[string]string // the action's arguments (file name, command line, ...)
	Result string            // "ok", or the error or refusal text
	Prev   string            // hex SHA-256 of the previous record
	Hash   string            // hex SHA-256 of this record
}

// wire is a record as written: the canonical form that is hashed.
type wire struct {
	Seq    uint64            `json:"seq"`
	Time   string            `json:"time"`
	Peer   string            `json:"peer,omitempty"`
	Key    string            `json:"key,omitempty"`
	Role   string            `json:"role,omitempty"`
	Action string            `json:"action"`
	Args   map[string]string `json:"args,omitempty"`
	Result string            `json:"result"`
	Prev   string            `json:"prev"`
	Hash   string            `json:"hash,omitempty"`
}

// genesis is the prev hash of the first record.
var genesis = strings.Repeat("0", 64)

const timeFormat = time.RFC3339Nano

// wire returns the record's canonical form. Invalid UTF-8 becomes U+FFFD here, as
// encoding/json would make it, so that a decoded record re-encodes to the same bytes.
func (r Record) wire() wire {
	w := wire{
		Seq: r.Seq, Time: r.Time.UTC().Format(timeFormat), Peer: valid(r.Peer), Role: valid(r.Role),
		Action: valid(r.Action), Result: valid(r.Result), Prev: r.Prev, Hash: r.Hash,
	}
	if len(r.Args) > 0 {
		w.Args = make(map[string]string, len(r.Args))
		for k, v := range r.Args {
			w.Args[valid(k)] = valid(v)
		}
	}
	if r.Key != (wgtypes.Key{}) {
		w.Key = r.Key.String()
	}
	return w
}

func valid(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// encode returns the canonical line of w (no newline).
func encode(w wire) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	if err := enc.Encode(w); err != nil {
		// A wire holds only strings, numbers and a string map: it always encodes.
		panic(fmt.Sprintf("audit: encode record: %v", err))
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// hashOf returns the hash of w, which is computed with w.Hash empty.
func hashOf(w wire) string {
	w.Hash = ""
	sum := sha256.Sum256(encode(w))
	return hex.EncodeToString(sum[:])
}

// ErrTampered matches every *ChainError with errors.Is.
var ErrTampered = errors.New("audit log tampered or corrupt")

// ChainError says where and how the chain breaks.
type ChainError struct {
	Line   int    // 1-based line of the file
	Seq    uint64 // the record's seq, when it could be read
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit: line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// Is makes errors.Is(err, ErrTampered) true.
func (e *ChainError) Is(target error) bool { return target == ErrTampered }

// Decode parses one line (without its newline) into a record and checks that it is canonical
// and that its hash matches its content. It does not check the chain around it.
func Decode(line []byte) (Record, error) {
	if len(line) > MaxRecordBytes {
		return Record{}, fmt.Errorf("record of %d bytes is over %d", len(line), MaxRecordBytes)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Record{}, fmt.Errorf("malformed record: %v", err)
	}
	if dec.More() {
		return Record{}, errors.New("malformed record: data after the object")
	}
	if !bytes.Equal(encode(w), line) {
		return Record{}, errors.New("record is not in canonical form (edited)")
	}
	t, err := time.Parse(timeFormat, w.Time)
	if err != nil || t.UTC().Format(timeFormat) != w.Time {
		return Record{}, fmt.Errorf("bad time %q", w.Time)
	}
	r := Record{Seq: w.Seq, Time: t.UTC(), Peer: w.Peer, Role: w.Role, Action: w.Action,
		Args: w.Args, Result: w.Result, Prev: w.Prev, Hash: w.Hash}
	if w.Key != "" {
		k, err := wgtypes.ParseKey(w.Key)
		if err != nil || k.String() != w.Key || k == (wgtypes.Key{}) {
			return Record{}, fmt.Errorf("bad key %q", w.Key)
		}
		r.Key = k
	}
	if !isHash(w.Prev) || !isHash(w.Hash) {
		return Record{}, errors.New("prev or hash is not 64 lower-case hex digits")
	}
	if w.Action == "" || w.Seq == 0 {
		return Record{}, errors.New("record without seq or action")
	}
	if hashOf(w) != w.Hash {
		return Record{}, errors.New("hash does not match the record (edited)")
	}
	return r, nil
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Head is the last record of a chain: what an operator keeps elsewhere to detect truncation.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Verify walks a whole log and returns the number of records. It fails with a *ChainError
// (errors.Is ErrTampered) at the first record that is malformed, edited, out of sequence
// (removed, inserted, reordered or duplicated) or not linked to the one before, and at a last
// line that lacks its newline (a torn write).
func Verify(r io.Reader) (n int, err error) {
	h, err := Scan(r, nil)
	return int(h.Seq), err
}

// Scan verifies a log like Verify, calls fn (when not nil) with each good record in order,
// and returns the head of the chain. An empty log has the zero Head.
func Scan(r io.Reader, fn func(Record) error) (Head, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := Head{Hash: genesis}
	for line := 1; ; line++ {
		b, err := readLine(br)
		if err == io.EOF && len(b) == 0 {
			if head.Seq == 0 {
				head.Hash = ""
			}
			return head, nil
		}
		if err == io.EOF {
			return head, &ChainError{Line: line, Reason: "last line has no newline (torn write)"}
		}
		if err != nil {
			return head, fmt.Errorf("audit: read line %d: %w", line, err)
		}
		rec, derr := Decode(b)
		if derr != nil {
			return head, &ChainError{Line: line, Reason: derr.Error()}
		}
		if rec.Seq != head.Seq+1 {
			return head, &ChainError{Line: line, Seq: rec.Seq, Reason: fmt.Sprintf(
				"seq %d follows %d: a record was removed, inserted or reordered", rec.Seq, head.Seq)}
		}
		if rec.Prev != head.Hash {
			return head, &ChainError{Line: line, Seq: rec.Seq, Reason: "prev does not match the hash of the record before"}
		}
		head = Head{Seq: rec.Seq, Hash: rec.Hash}
		if fn != nil {
			if err := fn(rec); err != nil {
				return head, err
			}
		}
	}
}

// readLine returns the next line without its newline; io.EOF with a non-empty line means the
// line had no newline. Lines longer than MaxRecordBytes are returned cut, and Decode refuses them.
func readLine(br *bufio.Reader) ([]byte, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(b)+len(chunk) <= MaxRecordBytes+1 {
			b = append(b, chunk...)
		} else if len(b) <= MaxRecordBytes {
			b = append(b, chunk[:MaxRecordBytes+1-len(b)]...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return b, err
		}
		return bytes.TrimSuffix(b, []byte("\n")), nil
	}
}

// Log is an open audit log. It is safe for concurrent use.
type Log struct {
	path   string
	logf   func(string, ...any)
	errorf func(string, ...any)
	now    func() time.Time

	mu     sync.Mutex // guards the fields below and serialises writes
	f      *os.File
	size   int64 // bytes of complete records in f
	head   Head
	failed error // a write that could not be undone: no more appends until reopened
	closed bool
}

// Options tune Open. The zero value is the production setting.
type Options struct {
	// Logf logs verbose detail; nil discards.
	Logf func(format string, args ...any)
	// Errorf logs what an operator must see, with its cause (a torn last record cut off at
	// open); nil: Logf. Failed appends are returned to the caller, who logs them.
	Errorf func(format string, args ...any)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Open opens (creating if needed, mode 0600) the audit log at path and verifies the whole
// chain so that new records extend it. A broken chain is an error wrapping ErrTampered: the
// log is never extended past a break. Move the file aside to start a new one.
//
// An incomplete last line (a crash during a write, never acknowledged to any caller) is cut
// off, and the cut is itself recorded as an ActionTornTail record.
func Open(path string) (*Log, error) { return OpenOptions(path, Options{}) }

// OpenOptions is Open with options.
func OpenOptions(path string, o Options) (*Log, error) {
	l := &Log{path: path, logf: o.Logf, errorf: o.Errorf, now: o.Now}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}
	if l.errorf == nil {
		l.errorf = l.logf
	}
	if l.now == nil {
		l.now = time.Now
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := statefile.SyncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit: open %s: %w", path, err)
		}
	}
	head, torn, err := resume(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	l.f, l.head, l.size = f, head, size
	if torn > 0 {
		l.errorf("audit: %s: cut an incomplete last line of %d bytes (a crash during a write)", path, torn)
		err := l.Append(context.Background(), Record{Action: ActionTornTail,
			Args: map[string]string{"bytes": fmt.Sprint(torn)}, Result: "ok"})
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	return l, nil
}

// resume verifies f from the start and returns its head. A last line without a newline is cut
// off (torn > 0 is its length) if everything before it verifies; if it is itself a whole,
// well-chained record that only lost its newline, the newline is restored instead.
func resume(f *os.File) (head Head, torn int64, err error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Head{}, 0, err
	}
	head, err = Scan(f, nil)
	var ce *ChainError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "torn write") {
		return head, 0, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Head{}, 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Head{}, 0, err
	}
	h2, err := Scan(io.MultiReader(f, strings.NewReader("\n")), nil)
	if err == nil {
		// Only the newline was lost.
		if _, err := f.Write([]byte("\n")); err != nil {
			return Head{}, 0, err
		}
		return h2, 0, f.Sync()
	}
	torn, err = cutTail(f, size)
	return head, torn, err
}

// cutTail truncates f after its last newline and returns how many bytes it removed.
func cutTail(f *os.File, size int64) (int64, error) {
	const chunk = 4096
	end := size
	buf := make([]byte, chunk)
	for end > 0 {
		start := max(end-chunk, 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			keep := start + int64(i) + 1
			return size - keep, truncate(f, keep)
		}
		end = start
	}
	return size, truncate(f, 0)
}

func truncate(f *os.File, n int64) error {
	if err := f.Truncate(n); err != nil {
		return err
	}
	return f.Sync()
}

// Append adds a record, filling in Seq, Prev, Hash and (when zero) Time, and returns once the
// record is on disk: every record is written with one write(2) and fsynced before Append
// returns, so an acknowledged record survives a power cut. Audit events are human actions and
// refusals, a few per minute, so per-record fsync costs little even on an SD card.
func (l *Log) Append(ctx context.Context, r Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("audit: append %s: %w", r.Action, err)
	}
	if r.Action == "" {
		return errors.New("audit: append: record without an action")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("audit: append %s: %w", r.Action, net.ErrClosed)
	}
	if l.failed != nil {
		return fmt.Errorf("audit: append %s: log unusable since an earlier failure: %w", r.Action, l.failed)
	}
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	r.Seq = l.head.Seq + 1
	r.Prev = l.head.Hash
	if r.Seq == 1 {
		r.Prev = genesis
	}
	r.Hash = ""
	w := r.wire()
	w.Hash = hashOf(w)
	line := append(encode(w), '\n')
	if len(line) > MaxRecordBytes {
		return fmt.Errorf("audit: append %s: record of %d bytes is over %d", r.Action, len(line), MaxRecordBytes)
	}
	if err := l.writeLocked(line); err != nil {
		return fmt.Errorf("audit: append %s: %w", r.Action, err)
	}
	l.head = Head{Seq: w.Seq, Hash: w.Hash}
	l.size += int64(len(line))
	return nil
}

// writeLocked writes and fsyncs one line; l.mu must be held. If that fails (disk full, I/O
// error) it cuts the file back to its last complete record, so the chain stays whole; if even
// that fails, the log refuses further appends until it is reopened (and Open repairs the tail).
func (l *Log) writeLocked(line []byte) error {
	_, err := l.f.Write(line)
	if err == nil {
		err = l.f.Sync()
	}
	if err == nil {
		return nil
	}
	if terr := truncate(l.f, l.size); terr != nil {
		l.failed = err
		return fmt.Errorf("%w (and cutting the partial record failed: %v)", err, terr)
	}
	return err
}

// Head returns the last record's seq and hash (zero for an empty log).
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head.Seq == 0 {
		return Head{}
	}
	return l.head
}

// Tail returns up to n of the newest records, oldest first. It reads only the end of the file
// and decodes each record (hash included) but does not walk the chain; Verify does.
func (l *Log) Tail(n int) ([]Record, error) {
	if n <= 0 {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("audit: tail: %w", net.ErrClosed)
	}
	size, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("audit: tail: %w", err)
	}
	// Read backwards until n+1 newlines are in hand or the file start is reached.
	var data []byte
	const chunk = 32 << 10
	for end := size; end > 0 && bytes.Count(data, []byte("\n")) <= n; {
		start := max(end-chunk, 0)
		buf := make([]byte, end-start)
		if _, err := l.f.ReadAt(buf, start); err != nil && err != io.EOF {
			return nil, fmt.Errorf("audit: tail: %w", err)
		}
		data = append(buf, data...)
		end = start
		if start == 0 {
			data = append([]byte("\n"), data...) // mark the file start as a line start
		}
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) > 0 {
		lines = lines[1:] // the first piece is partial, or the file-start marker
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	recs := make([]Record, 0, len(lines))
	for _, b := range lines {
		r, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("audit: tail: %w", &ChainError{Seq: 0, Reason: err.Error()})
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// Close closes the log. A second Close returns an error wrapping net.ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("audit: close: %w", net.ErrClosed)
	}
	l.closed = true
	return l.f.Close()
}

// VerifyFile verifies the log at path; a missing file is an empty log.
func VerifyFile(path string) (Head, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("audit: verify %s: %w", path, err)
	}
	defer f.Close()
	h, err := Scan(f, nil)
	if err != nil {
		return h, fmt.Errorf("audit: verify %s: %w", path, err)
	}
	return h, nil
}
