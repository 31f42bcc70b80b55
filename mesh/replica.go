package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The replica file. raft replays its log into the FSM only once it learns the commit index
// from a leader, so a gateway restarted without quorum would start with the roster of its
// last snapshot, or none. To keep serving the devices it knew, the node writes the committed
// roster it applied to DIR/replica.json (crash-safe, at most every replicaDelay) and reads
// it back on Open: Roster returns it until the FSM has applied as far.

// FileReplica holds the last committed roster this node applied.
const FileReplica = "replica.json"

// replicaDelay batches replica writes under a burst of applies.
const replicaDelay = 200 * time.Millisecond

func loadReplica(dir string) (*Roster, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileReplica))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", FileReplica, err)
	}
	var j rosterJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", FileReplica, err)
	}
	r, err := j.unmarshal()
	if err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", FileReplica, err)
	}
	return r, nil
}

func writeReplica(dir string, r *Roster) error {
	j, err := r.committed().marshal()
	if err != nil {
		return err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, FileReplica, append(b, '\n'))
}

// keepReplica writes the FSM's roster to the replica file after applies, and once more when
// the node closes. Owned by the Node.
func (n *Node) keepReplica() {
	defer n.wg.Done()
	var written uint64
	if b := n.boot.Load(); b != nil {
		written = b.index
	}
	save := func() {
		r := n.fsm.Roster()
		if r.index <= written {
			return
		}
		if err := writeReplica(n.dir, r); err != nil {
			n.logf("mesh: %v", err)
			return
		}
		written = r.index
	}
	for {
		select {
		case <-n.done:
			save()
			return
		case <-n.fsm.next():
		}
		select {
		case <-n.done:
		case <-time.After(replicaDelay):
		}
		save()
	}
}

// known is the newest committed roster this node has: the FSM's, or the replica file's
// while the FSM has not caught up since Open.
func (n *Node) known() *Roster {
	r := n.fsm.Roster()
	if b := n.boot.Load(); b != nil {
		if b.index > r.index {
			return b
		}
		n.boot.CompareAndSwap(b, nil)
	}
	return r
}

// ReadState reads the roster a stopped node in dir would serve first: its replica file with
// its pending revocations shown, without opening raft (read-only; `printgate peers` with no
// daemon running). A directory without a replica gives an empty roster (not Initialized).
func ReadState(dir string) (*Roster, error) {
	r, err := loadReplica(dir)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = emptyRoster()
	}
	t, err := loadTombstones(dir)
	if err != nil {
		return nil, err
	}
	if local := t.names(); local != nil {
		c := *r
		c.local = local
		r = &c
	}
	return r, nil
}
