package mesh

// Snapshots of the roster: versioned JSON with sorted lists, so equal rosters encode equally,
// written by raft's snapshot store and read back on restore or catch-up.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// snapshotVersion is the version of the snapshot JSON this package writes and reads.
const snapshotVersion = 1

// rosterJSON is a roster as snapshots hold it: lists sorted, so equal rosters encode equally.
type rosterJSON struct {
	Version    int          `json:"version"`
	Index      uint64       `json:"index"`
	Prefix4    netip.Prefix `json:"prefix4"`
	Prefix6    netip.Prefix `json:"prefix6,omitzero"`
	NextOffset uint32       `json:"next_offset"`
	Devices    []Device     `json:"devices"`
	Gateways   []Gateway    `json:"gateways"`
	Printers   []Printer    `json:"printers"`
	Tokens     []JoinToken  `json:"tokens"`
	Retired    []netip.Addr `json:"retired"`
	Removed    []Gateway    `json:"removed_gateways"` // name and key only
}

func (r *Roster) marshal() (rosterJSON, error) {
	j := rosterJSON{Version: snapshotVersion, Index: r.index, Prefix4: r.prefix4, Prefix6: r.prefix6,
		NextOffset: r.nextOffset, Devices: r.committed().Devices(), Gateways: r.Gateways(),
		Printers: r.Printers(), Tokens: []JoinToken{}, Retired: []netip.Addr{}}
	for _, t := range r.tokens {
		j.Tokens = append(j.Tokens, t)
	}
	slices.SortFunc(j.Tokens, func(a, b JoinToken) int { return bytes.Compare(a.PublicKey[:], b.PublicKey[:]) })
	for a := range r.retired {
		j.Retired = append(j.Retired, a)
	}
	slices.SortFunc(j.Retired, func(a, b netip.Addr) int { return a.Compare(b) })
	j.Removed = []Gateway{}
	for name, k := range r.removed {
		j.Removed = append(j.Removed, Gateway{Name: name, PublicKey: k})
	}
	slices.SortFunc(j.Removed, func(a, b Gateway) int { return strings.Compare(a.Name, b.Name) })
	return j, nil
}

// unmarshal rebuilds a roster from its snapshot form and checks what the rest relies on:
// one holder per name, key and address.
func (j *rosterJSON) unmarshal() (*Roster, error) {
	if j.Version != snapshotVersion {
		return nil, fmt.Errorf("snapshot version %d, this build reads %d", j.Version, snapshotVersion)
	}
	r := emptyRoster()
	r.index, r.prefix4, r.prefix6, r.nextOffset = j.Index, j.Prefix4, j.Prefix6, j.NextOffset
	if r.prefix4.IsValid() {
		if err := checkPrefixes(r.prefix4, r.prefix6); err != nil {
			return nil, err
		}
	}
	held := map[netip.Addr]string{}
	claim := func(a netip.Addr, who string) error {
		if !a.IsValid() {
			return nil
		}
		if prev, dup := held[a]; dup {
			return fmt.Errorf("address %v held by both %s and %s", a, prev, who)
		}
		held[a] = who
		return nil
	}
	for _, d := range j.Devices {
		if err := validName("device", d.Name); err != nil {
			return nil, err
		}
		switch {
		case !d.Role.Valid():
			return nil, fmt.Errorf("device %s: role %q", d.Name, d.Role)
		case d.State != Active && d.State != Revoked:
			return nil, fmt.Errorf("device %s: state %q", d.Name, d.State)
		case d.PublicKey.IsZero():
			return nil, fmt.Errorf("device %s: no public key", d.Name)
		case !d.IPv4.IsValid():
			return nil, fmt.Errorf("device %s: no address", d.Name)
		}
		if _, dup := r.devices[d.Name]; dup {
			return nil, fmt.Errorf("device %s twice", d.Name)
		}
		if _, dup := r.byKey[d.PublicKey]; dup {
			return nil, fmt.Errorf("device %s: key held twice", d.Name)
		}
		if err := claim(d.IPv4, d.Name); err != nil {
			return nil, err
		}
		if err := claim(d.IPv6, d.Name); err != nil {
			return nil, err
		}
		r.putDevice(d)
	}
	for _, g := range j.Gateways {
		if err := validName("gateway", g.Name); err != nil {
			return nil, err
		}
		if g.PublicKey.IsZero() || !g.IPv4.IsValid() {
			return nil, fmt.Errorf("gateway %s: no public key or no address", g.Name)
		}
		if err := claim(g.IPv4, "gateway "+g.Name); err != nil {
			return nil, err
		}
		r.gateways[g.Name] = g
	}
	for _, p := range j.Printers {
		if err := validName("printer", p.Name); err != nil {
			return nil, err
		}
		if !p.IPv4.IsValid() {
			return nil, fmt.Errorf("printer %s: no address", p.Name)
		}
		if _, ok := r.gateways[p.Gateway]; !ok {
			return nil, fmt.Errorf("printer %s on unknown gateway %s", p.Name, p.Gateway)
		}
		if err := claim(p.IPv4, "printer "+p.Name); err != nil {
			return nil, err
		}
		r.printers[p.Name] = p
	}
	for _, t := range j.Tokens {
		if t.PublicKey.IsZero() {
			return nil, fmt.Errorf("join token without a key")
		}
		r.tokens[t.PublicKey] = t
	}
	for _, a := range j.Retired {
		r.retired[a] = true
	}
	for _, g := range j.Removed {
		if g.Name == "" || g.PublicKey.IsZero() {
			return nil, fmt.Errorf("removed gateway %q without a name or key", g.Name)
		}
		r.removed[g.Name] = g.PublicKey
	}
	return r, nil
}

// Snapshot hands raft the current roster; it is immutable, so Persist may run concurrently
// with later applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) { return &fsmSnapshot{r: f.cur.Load()}, nil }

// Restore replaces the roster with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var j rosterJSON
	dec := json.NewDecoder(rc)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("restore roster snapshot: %w", err)
	}
	r, err := j.unmarshal()
	if err != nil {
		return fmt.Errorf("restore roster snapshot: %w", err)
	}
	f.publish(r)
	return nil
}

type fsmSnapshot struct{ r *Roster }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	j, err := s.r.marshal()
	if err == nil {
		err = json.NewEncoder(sink).Encode(j)
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("persist roster snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
