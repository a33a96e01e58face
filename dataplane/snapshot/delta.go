package snapshot

import (
	"cmp"
	"errors"
	"slices"
)

// Delta is a change of a Snapshot: the listeners added or replaced, and
// the names of those removed. The controller sends one to a dataplane in
// another process instead of the whole snapshot, so that a change costs
// what it changes, not the size of the cluster (issue 19): one
// EndpointSlice event at 10,000 PortMuxes is one listener, not 7 MB.
// Applied to the snapshot it was computed from (Patch), it gives exactly
// the snapshot the controller holds.
type Delta struct {
	// MaxConnections is the new snapshot's MaxConnections.
	MaxConnections int

	// Set are the listeners added, or replaced (by Name).
	Set []Listener

	// Remove are the names of the listeners dropped. A name in both Set
	// and Remove is set.
	Remove []string
}

// Empty reports whether d changes nothing in a snapshot of maxConnections.
func (d *Delta) Empty(maxConnections int) bool {
	return len(d.Set) == 0 && len(d.Remove) == 0 && d.MaxConnections == maxConnections
}

// Patch returns the snapshot s becomes with d: a new Snapshot (s is not
// changed), its listeners sorted by name as every snapshot's are.
func (s *Snapshot) Patch(d *Delta) *Snapshot {
	drop := make(map[string]bool, len(d.Remove)+len(d.Set))
	for _, n := range d.Remove {
		drop[n] = true
	}
	for i := range d.Set {
		drop[d.Set[i].Name] = true
	}
	out := &Snapshot{MaxConnections: d.MaxConnections, Listeners: make([]Listener, 0, len(s.Listeners)+len(d.Set))}
	for i := range s.Listeners {
		if !drop[s.Listeners[i].Name] {
			out.Listeners = append(out.Listeners, s.Listeners[i])
		}
	}
	out.Listeners = append(out.Listeners, d.Set...)
	slices.SortFunc(out.Listeners, func(a, b Listener) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// wireDelta is a Delta on the wire, in the envelope of the format.
type wireDelta struct {
	Format int    `json:"format"`
	Delta  *Delta `json:"delta"`
}

// EncodeDelta returns d in the wire format (the Snapshot types' JSON, as
// Encode writes them).
func EncodeDelta(d *Delta) ([]byte, error) {
	if d == nil {
		return nil, errors.New("encode delta: nil")
	}
	return encodeEnvelope(wireDelta{Format: WireFormat, Delta: d}, "delta")
}

// DecodeDelta parses what EncodeDelta wrote and checks what it can
// alone: the format and unknown fields, as Decode does. The shape of the
// snapshot it makes is checked there (Validate), once patched.
func DecodeDelta(data []byte) (*Delta, error) {
	var env wireDelta
	if err := decodeStrict(data, &env, "delta"); err != nil {
		return nil, err
	}
	if err := checkFormat(env.Format, "delta"); err != nil {
		return nil, err
	}
	if env.Delta == nil {
		return nil, errors.New("decode delta: no delta")
	}
	return env.Delta, nil
}
