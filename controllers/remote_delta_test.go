package controllers

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// lastSnapshot is a dataplane behind a real control socket that keeps the
// snapshot it serves.
type lastSnapshot struct {
	mu   sync.Mutex
	snap *snapshot.Snapshot
}

func (l *lastSnapshot) Apply(s *snapshot.Snapshot) map[string]error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap = s
	return nil
}

func (l *lastSnapshot) encoded(t *testing.T) []byte {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.snap == nil {
		return nil
	}
	b, err := snapshot.Encode(l.snap)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startLastSnapshot serves a new lastSnapshot on path.
func startLastSnapshot(t *testing.T, path string) (*lastSnapshot, func()) {
	t.Helper()
	l := &lastSnapshot{}
	return l, serveDataplane(t, path, control.NewHandler(l, prometheus.NewRegistry(), testr.New(t)))
}

// TestRemoteDeltasMatchWholeSnapshots programs two dataplane processes
// with the same random sequence of changes, one with whole snapshots
// (Apply), the other with deltas (ApplyDelta), and checks after each
// change that both serve the same snapshot, the one the sequence makes.
// Along the way the delta side loses a delta (another sends one it did
// not expect), is sent a stale delta again (out of order), and restarts:
// each time the next delta finds out and the whole snapshot is sent.
func TestRemoteDeltasMatchWholeSnapshots(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 19))
	pathWhole, pathDelta := peers.SocketPath(t, "pmx-whole-"), peers.SocketPath(t, "pmx-delta-")
	whole, _ := startLastSnapshot(t, pathWhole)
	delta, stopDelta := startLastSnapshot(t, pathDelta)
	rw, rd := newRemote(t, pathWhole), newRemote(t, pathDelta)
	other := control.NewClient(pathDelta)

	model := map[string]snapshot.Listener{}
	maxConns := 0
	current := func() *snapshot.Snapshot {
		s := &snapshot.Snapshot{MaxConnections: maxConns, Listeners: slices.Collect(maps.Values(model))}
		slices.SortFunc(s.Listeners, func(a, b snapshot.Listener) int { return cmp.Compare(a.Name, b.Name) })
		return s
	}
	listener := func(i int) snapshot.Listener {
		var eps []string
		for range rng.IntN(4) {
			eps = append(eps, fmt.Sprintf("10.0.%d.%d:80", i, rng.IntN(250)))
		}
		slices.Sort(eps)
		eps = slices.Compact(eps)
		return snapshot.Listener{
			Name: fmt.Sprintf("ns/pm-%02d/public", i), Address: fmt.Sprintf("127.0.0.1:%d", 20000+i),
			ProbeTimeout: time.Second, MaxProbeBytes: 1024, MaxConnections: 1 + rng.IntN(100),
			Routes: []snapshot.Route{{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any},
				Backend: &snapshot.Backend{Name: fmt.Sprintf("ns/svc-%d:80", i), Endpoints: eps}}},
		}
	}
	for i := range 20 {
		model[listener(i).Name] = listener(i)
	}
	if errs := rw.Apply(current()); len(errs) > 0 {
		t.Fatal(errs)
	}
	if errs := rd.Apply(current()); len(errs) > 0 {
		t.Fatal(errs)
	}
	var stale struct {
		base string
		enc  []byte
	}
	const steps = 300
	for step := range steps {
		d := &snapshot.Delta{MaxConnections: maxConns}
		for range 1 + rng.IntN(3) {
			i := rng.IntN(30)
			name := fmt.Sprintf("ns/pm-%02d/public", i)
			switch rng.IntN(5) {
			case 0:
				delete(model, name)
				d.Remove = append(d.Remove, name)
				d.Set = slices.DeleteFunc(d.Set, func(l snapshot.Listener) bool { return l.Name == name })
			default:
				l := listener(i)
				model[name] = l
				d.Set = slices.DeleteFunc(d.Set, func(l snapshot.Listener) bool { return l.Name == name })
				d.Set = append(d.Set, l)
			}
		}
		if rng.IntN(10) == 0 {
			maxConns = rng.IntN(1000)
			d.MaxConnections = maxConns
		}
		switch step {
		case steps / 4: // a delta the controller did not send
			st, err := other.State(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			enc, _ := snapshot.EncodeDelta(&snapshot.Delta{Remove: []string{"ns/pm-00/public"}})
			if _, err := other.ApplyDelta(context.Background(), st.Version, enc); err != nil {
				t.Fatalf("a foreign delta: %v", err)
			}
		case steps / 2: // a delta again, late
			if _, err := other.ApplyDelta(context.Background(), stale.base, stale.enc); !control.IsBaseMismatch(err) {
				t.Fatalf("a stale delta got %v, want a conflict", err)
			}
		case 3 * steps / 4: // the dataplane restarts
			stopDelta()
			delta, stopDelta = startLastSnapshot(t, pathDelta)
		}
		if step == steps/4-10 {
			st, err := other.State(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			stale.base = st.Version
			stale.enc, _ = snapshot.EncodeDelta(d)
		}
		if errs := rw.Apply(current()); len(errs) > 0 {
			t.Fatalf("step %d: whole: %v", step, errs)
		}
		if errs := rd.ApplyDelta(d); len(errs) > 0 {
			t.Fatalf("step %d: delta: %v", step, errs)
		}
		want, err := snapshot.Encode(current())
		if err != nil {
			t.Fatal(err)
		}
		if got := whole.encoded(t); !bytes.Equal(got, want) {
			t.Fatalf("step %d: the dataplane sent whole snapshots serves\n%s\nwant\n%s", step, got, want)
		}
		if got := delta.encoded(t); !bytes.Equal(got, want) {
			t.Fatalf("step %d: the dataplane sent deltas serves\n%s\nwant\n%s", step, got, want)
		}
	}
	deltas, wholes, _ := rd.SendCounts()
	// One whole snapshot at the start, and one instead of a delta after
	// the lost delta and after the restart (the stale delta was refused
	// and changed nothing); every other change is a delta.
	if wholes != 3 || deltas != steps-2 {
		t.Errorf("sent %d deltas and %d whole snapshots; want %d and 3", deltas, wholes, steps-2)
	}
	if err := rd.Ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
}
