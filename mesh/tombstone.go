package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Revocation without quorum. A revoke is applied to this node's read view at once, before
// raft commits it, and kept in DIR/revocations.json until the committed roster shows it:
//
//  1. write revocations.json with the new entry (temp → fsync → rename → fsync dir)
//  2. publish the new set: from here every Roster this node hands out shows it revoked
//  3. submit the revoke to raft; on failure a retry loop submits it again until it commits
//  4. once the local FSM has applied it, drop the entry (file first, then the published set)
//
// Readers load the set before the FSM's roster. An entry is dropped only after a roster
// showing the device revoked was published, so a reader that misses the entry gets that
// roster or a newer one: no read shows the device active after step 2.

// FileRevocations holds the revocations not yet known committed.
const FileRevocations = "revocations.json"

type revocation struct {
	Name      string    `json:"name"`
	PublicKey Key       `json:"public_key"`
	At        time.Time `json:"at"`
}

type revocationsFile struct {
	Version     int          `json:"version"`
	Revocations []revocation `json:"revocations"`
}

// tombstones is the set of local revocations: published immutable, written under mu.
type tombstones struct {
	dir string
	mu  sync.Mutex // serializes writers; readers use set
	set atomic.Pointer[map[string]revocation]
}

func loadTombstones(dir string) (*tombstones, error) {
	t := &tombstones{dir: dir}
	m := map[string]revocation{}
	b, err := os.ReadFile(filepath.Join(dir, FileRevocations))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", FileRevocations, err)
	default:
		var f revocationsFile
		if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
			// Fail closed: a revocation we can no longer read might be one nobody else has.
			return nil, fmt.Errorf("%s is corrupt (version %d, %v): restore it or remove it knowingly", FileRevocations, f.Version, err)
		}
		for _, r := range f.Revocations {
			m[r.Name] = r
		}
	}
	t.set.Store(&m)
	return t, nil
}

// names returns the published set as name → true, for a Roster's overlay.
func (t *tombstones) names() map[string]bool {
	m := *t.set.Load()
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]bool, len(m))
	for n := range m {
		out[n] = true
	}
	return out
}

func (t *tombstones) list() []revocation {
	m := *t.set.Load()
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b revocation) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// add records r on disk, then publishes it.
func (t *tombstones) add(r revocation) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := maps.Clone(*t.set.Load())
	if _, ok := m[r.Name]; ok {
		return nil
	}
	m[r.Name] = r
	if err := t.writeLocked(m); err != nil {
		return err
	}
	t.set.Store(&m)
	return nil
}

// drop removes the entries for which done reports true: on disk first, then published.
func (t *tombstones) drop(done func(revocation) bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := maps.Clone(*t.set.Load())
	n := len(m)
	maps.DeleteFunc(m, func(_ string, r revocation) bool { return done(r) })
	if len(m) == n {
		return nil
	}
	if err := t.writeLocked(m); err != nil {
		return err
	}
	t.set.Store(&m)
	return nil
}

// writeLocked replaces the file with m; t.mu is held.
func (t *tombstones) writeLocked(m map[string]revocation) error {
	f := revocationsFile{Version: 1, Revocations: slices.Collect(maps.Values(m))}
	slices.SortFunc(f.Revocations, func(a, b revocation) int { return strings.Compare(a.Name, b.Name) })
	if f.Revocations == nil {
		f.Revocations = []revocation{}
	}
	b, err := json.MarshalIndent(f, "", "\t")
	if err != nil {
		return err
	}
	return writeFileAtomic(t.dir, FileRevocations, append(b, '\n'))
}

// writeFileAtomic replaces dir/name with data: temp → write → fsync → rename → fsync(dir).
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: fsync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
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
