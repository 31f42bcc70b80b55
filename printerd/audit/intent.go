package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"
)

// Write-ahead records. An action that changes who may reach the printers (enroll, revoke) is
// recorded before it is applied:
//
//	1. Begin appends an intent (Result "intent", Args["intent"] a fresh id), fsynced;
//	2. only then is the action applied, and acknowledged;
//	3. End appends its outcome ("ok" or the error) with the same Args["intent"].
//
// If 1 fails, the action is not applied: the caller refuses it (HTTP 507, a non-zero exit). A
// crash between 1 and 3 leaves an intent without an outcome, never an action without a record;
// Unfinished lists those, and `printgate audit verify` reports them.

// ResultIntent is the Result of an intent record.
const ResultIntent = "intent"

// ArgIntent is the argument that links an intent and its outcome.
const ArgIntent = "intent"

// Appender is what Begin writes to; *Log is one.
type Appender interface {
	Append(ctx context.Context, r Record) error
}

// NotRecordedError is Begin's failure: the intent could not be written, so the action must
// not be applied. errors.Is(err, ErrNotRecorded) matches it.
type NotRecordedError struct {
	Action string
	Err    error
}

// ErrNotRecorded matches every *NotRecordedError.
var ErrNotRecorded = errors.New("audit record not written")

func (e *NotRecordedError) Error() string {
	return fmt.Sprintf("%s refused: its audit record could not be written first: %v", e.Action, e.Err)
}
func (e *NotRecordedError) Unwrap() error        { return e.Err }
func (e *NotRecordedError) Is(target error) bool { return target == ErrNotRecorded }

// Intent is a begun action whose outcome is still to be recorded.
type Intent struct {
	a   Appender
	rec Record
	id  string
}

// Begin appends the intent of r and returns once it is on disk. On error nothing was
// recorded and the action must not be applied.
func Begin(ctx context.Context, a Appender, r Record) (*Intent, error) {
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	args := make(map[string]string, len(r.Args)+1)
	for k, v := range r.Args {
		args[k] = v
	}
	args[ArgIntent] = id
	r.Args, r.Result, r.Seq = args, ResultIntent, 0
	if err := a.Append(ctx, r); err != nil {
		return nil, &NotRecordedError{Action: r.Action, Err: err}
	}
	return &Intent{a: a, rec: r, id: id}, nil
}

// End appends the outcome of the intent: "ok" when err is nil, else err's text. extra
// arguments (what the action produced: an address, a key) are added to the intent's.
func (in *Intent) End(ctx context.Context, err error, extra map[string]string) error {
	r := in.rec
	r.Args = make(map[string]string, len(in.rec.Args)+len(extra))
	for k, v := range in.rec.Args {
		r.Args[k] = v
	}
	for k, v := range extra {
		if k != ArgIntent {
			r.Args[k] = v
		}
	}
	r.Result = "ok"
	if err != nil {
		r.Result = err.Error()
	}
	r.Seq, r.Time = 0, time.Time{} // the outcome's own time
	return in.a.Append(ctx, r)
}

// Unfinished verifies the log at path (as VerifyFile) and returns the intents that have no
// outcome, oldest first: actions a crash interrupted, which may or may not have been applied.
func Unfinished(path string) (Head, []Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Head{}, nil, nil
	}
	if err != nil {
		return Head{}, nil, fmt.Errorf("audit: verify %s: %w", path, err)
	}
	defer f.Close()
	h, open, err := scanIntents(f)
	if err != nil {
		return h, nil, fmt.Errorf("audit: verify %s: %w", path, err)
	}
	return h, open, nil
}

func scanIntents(r io.Reader) (Head, []Record, error) {
	open := map[string]Record{}
	h, err := Scan(r, func(rec Record) error {
		id := rec.Args[ArgIntent]
		if id == "" {
			return nil
		}
		if rec.Result == ResultIntent {
			open[id] = rec
		} else {
			delete(open, id)
		}
		return nil
	})
	out := make([]Record, 0, len(open))
	for _, rec := range open {
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return h, out, err
}

// Describe is a one-line description of an unfinished intent for a person.
func Describe(r Record) string {
	s := "seq " + strconv.FormatUint(r.Seq, 10) + " " + r.Time.Format("2006-01-02T15:04:05Z07:00") + " " + r.Action
	keys := make([]string, 0, len(r.Args))
	for k := range r.Args {
		if k != ArgIntent {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		s += " " + k + "=" + r.Args[k]
	}
	if r.Peer != "" {
		s += " by " + r.Peer
	}
	return s
}
