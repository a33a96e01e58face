package controllers

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/portmux/portmux/api/v1alpha1"
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
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rd)
	want := fmt.Sprintf(`
# HELP portmux_manager_dataplane_updates_total Updates the manager sent the dataplane process, by kind: delta, or the whole snapshot.
# TYPE portmux_manager_dataplane_updates_total counter
portmux_manager_dataplane_updates_total{kind="delta"} %d
portmux_manager_dataplane_updates_total{kind="snapshot"} %d
`, deltas, wholes)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "portmux_manager_dataplane_updates_total"); err != nil {
		t.Error(err)
	}
	if err := rd.Ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
}

// EndpointSlices changed in quick succession, several PortMuxes at once,
// through the manager and a dataplane in another process: the dataplane
// ends with the last endpoints of each (no change lost on the way), and
// the changes crossed the socket as deltas.
func TestEndpointSliceFlipsEndWithTheLast(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ns, dp, remote := managerOverSocket(t, "")
	const muxes, flips = 4, 25
	names := make([]string, muxes)
	for i := range names {
		names[i] = fmt.Sprintf("flip-%d", i)
		serviceFor(t, ns, names[i], 8080, "10.1.0.1")
		create(t, sshMux(ns, names[i], int32(30000+i), names[i]))
	}
	endpointsOf := func(i int) []string {
		s := dp.snapshot()
		if s == nil {
			return nil
		}
		for _, l := range s.Listeners {
			if l.Name == ns+"/"+names[i]+"/public" && len(l.Routes) > 0 && l.Routes[0].Backend != nil {
				return l.Routes[0].Backend.Endpoints
			}
		}
		return nil
	}
	for i := range names {
		peers.Until(t, settleTimeout, names[i]+" in the dataplane", func() bool { return slices.Equal(endpointsOf(i), []string{"10.1.0.1:8080"}) })
	}
	deltas0, wholes0, _ := remote.SendCounts()
	for f := range flips {
		for i := range names {
			setEndpoints(t, ns, names[i], 8080, fmt.Sprintf("10.2.%d.%d", i, f), fmt.Sprintf("10.3.%d.%d", i, f))
		}
	}
	for i := range names {
		want := []string{fmt.Sprintf("10.2.%d.%d:8080", i, flips-1), fmt.Sprintf("10.3.%d.%d:8080", i, flips-1)}
		peers.Until(t, settleTimeout, names[i]+" has its last endpoints", func() bool { return slices.Equal(endpointsOf(i), want) })
	}
	deltas, wholes, _ := remote.SendCounts()
	t.Logf("%d EndpointSlice changes: %d deltas, %d whole snapshots sent", flips*muxes, deltas-deltas0, wholes-wholes0)
	if deltas == deltas0 {
		t.Error("no delta sent: every change went as a whole snapshot")
	}

	// A PortMux deleted leaves the dataplane; the others stay as they are.
	remove(t, &v1alpha1.PortMux{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names[0]}})
	peers.Until(t, settleTimeout, names[0]+" gone from the dataplane", func() bool { return endpointsOf(0) == nil })
	for i := 1; i < muxes; i++ {
		want := []string{fmt.Sprintf("10.2.%d.%d:8080", i, flips-1), fmt.Sprintf("10.3.%d.%d:8080", i, flips-1)}
		if got := endpointsOf(i); !slices.Equal(got, want) {
			t.Errorf("%s after %s went: %v, want %v", names[i], names[0], got, want)
		}
	}
}

// managerOverSocket runs a manager for namespace ns (a new one when "")
// that programs a lastSnapshot dataplane behind a control socket, as in
// the pod.
func managerOverSocket(t *testing.T, ns string) (string, *lastSnapshot, *RemoteDataplane) {
	t.Helper()
	path := peers.SocketPath(t, "pmx-dp-")
	dp, _ := startLastSnapshot(t, path)
	remote := newRemote(t, path)
	runRemote(t, remote)
	if ns == "" {
		nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pmx-"}}
		create(t, nsObj)
		ns = nsObj.Name
	}
	startManager(t, restCfg, ns, remote, Options{BindAddress: "127.0.0.1", BindRetry: 500 * time.Millisecond})
	return ns, dp, remote
}

func (l *lastSnapshot) snapshot() *snapshot.Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap
}

// A random sequence of cluster changes, through the manager and deltas,
// ends in the dataplane state a manager started afterwards programs with
// one whole compile: EndpointSlices and Services changed and deleted, a
// route moved to another Service, PortMuxes created on free ports and on
// taken ones (a conflict, the whole path), and deleted.
func TestIncrementalMatchesWhole(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 19))
	ns, dp, remote := managerOverSocket(t, "")

	ctx := context.Background()
	const services = 4
	svc := func(i int) string { return fmt.Sprintf("svc-%d", i) }
	hasService := make([]bool, services)
	for i := range services {
		serviceFor(t, ns, svc(i), 8080, fmt.Sprintf("10.9.%d.1", i))
		hasService[i] = true
	}
	var muxes []string
	next := 0
	newMux := func(port int32) {
		name := fmt.Sprintf("mux-%d", next)
		next++
		create(t, sshMux(ns, name, port, svc(rng.IntN(services))))
		muxes = append(muxes, name)
	}
	for range 4 {
		newMux(int32(31000 + next))
	}
	peers.Until(t, settleTimeout, "the first PortMuxes in the dataplane", func() bool {
		s := dp.snapshot()
		return s != nil && len(s.Listeners) == 4
	})
	for step := range 40 {
		// Some changes come together, others one by one.
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		switch op := rng.IntN(8); {
		case op <= 2: // endpoints change
			i := rng.IntN(services)
			if hasService[i] {
				setEndpoints(t, ns, svc(i), 8080, fmt.Sprintf("10.9.%d.%d", i, step), fmt.Sprintf("10.8.%d.%d", i, step))
			}
		case op == 3: // a Service and its slice go, or come back
			i := rng.IntN(services)
			if hasService[i] {
				remove(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc(i)}})
				remove(t, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc(i) + "-slice"}})
			} else {
				serviceFor(t, ns, svc(i), 8080, fmt.Sprintf("10.7.%d.%d", i, step))
			}
			hasService[i] = !hasService[i]
		case op == 4 && len(muxes) > 0: // a route to another Service
			key, to := types.NamespacedName{Namespace: ns, Name: muxes[rng.IntN(len(muxes))]}, svc(rng.IntN(services))
			// Status writes race with the update: retried on conflict.
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				var pm v1alpha1.PortMux
				if err := k8s.Get(ctx, key, &pm); err != nil {
					return err
				}
				pm.Spec.Routes[0].Backend.Service.Name = to
				return k8s.Update(ctx, &pm)
			}); err != nil {
				t.Fatal(err)
			}
		case op == 5: // a new PortMux on a free port
			newMux(int32(31000 + next))
		case op == 6: // a new PortMux on a taken port: a conflict
			newMux(int32(31000 + rng.IntN(next)))
		case op == 7 && len(muxes) > 0: // a PortMux goes
			k := rng.IntN(len(muxes))
			remove(t, &v1alpha1.PortMux{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: muxes[k]}})
			muxes = slices.Delete(muxes, k, k+1)
		}
	}

	// A manager that starts now compiles it all at once.
	_, whole, _ := managerOverSocket(t, ns)
	var a, b []byte
	peers.Until(t, settleTimeout, "the incremental manager's dataplane serves what a whole compile gives", func() bool {
		a, b = dp.encoded(t), whole.encoded(t)
		return a != nil && bytes.Equal(a, b)
	})
	deltas, wholes, _ := remote.SendCounts()
	t.Logf("%d PortMuxes at the end; the first manager sent %d deltas and %d whole snapshots", len(muxes), deltas, wholes)
	if deltas == 0 {
		t.Error("no delta sent: the incremental path was not taken")
	}
}
