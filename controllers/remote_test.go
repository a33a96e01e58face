package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// appliedLog is a dataplane behind a real control socket that records the
// listener names of each snapshot it is sent.
type appliedLog struct {
	mu   sync.Mutex
	got  [][]string
	errs map[string]error
}

func (a *appliedLog) Apply(s *snapshot.Snapshot) map[string]error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, boundListeners(s.Listeners))
	return a.errs
}

func (a *appliedLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

// serveDataplane serves h on path until stop (or the test's end).
func serveDataplane(t *testing.T, path string, h http.Handler) (stop func()) {
	t.Helper()
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	var once sync.Once
	stop = func() { once.Do(func() { _ = hs.Close(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// startDataplane is a dataplane process: a control handler for a new
// appliedLog on path.
func startDataplane(t *testing.T, path string) (*appliedLog, *control.Handler, func()) {
	t.Helper()
	a := &appliedLog{}
	h := control.NewHandler(a, prometheus.NewRegistry(), testr.New(t))
	return a, h, serveDataplane(t, path, h)
}

func twoListeners(port string) *snapshot.Snapshot {
	route := []snapshot.Route{{Name: "ns/pm/any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "b"}}}
	return &snapshot.Snapshot{Listeners: []snapshot.Listener{
		{Name: "ns/pm/public", Address: "127.0.0.1:" + port, Routes: route},
		{Name: "ns/pm/tls", Routes: route}, // internal: binds nothing
	}}
}

func newRemote(t *testing.T, path string) *RemoteDataplane {
	return NewRemoteDataplane(control.NewClient(path), testr.New(t),
		RemoteOptions{Interval: 50 * time.Millisecond, Retry: 10 * time.Millisecond, StateTimeout: time.Second, ApplyTimeout: 5 * time.Second})
}

// runRemote runs r's loop until the test ends.
func runRemote(t *testing.T, r *RemoteDataplane) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func drain(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Apply sends the snapshot and returns the dataplane's bind errors;
// readiness follows what the dataplane serves.
func TestRemoteApply(t *testing.T) {
	path := peers.SocketPath(t, "pmx-remote-")
	dp, _, _ := startDataplane(t, path)
	dp.errs = map[string]error{"ns/pm/public": errors.New("bind 127.0.0.1:1: permission denied")}
	r := newRemote(t, path)
	if err := r.Ready(); err == nil {
		t.Error("ready before any snapshot")
	}
	errs := r.Apply(twoListeners("1"))
	if len(errs) != 1 || errs["ns/pm/public"] == nil || errs["ns/pm/public"].Error() != "bind 127.0.0.1:1: permission denied" {
		t.Errorf("bind errors %v", errs)
	}
	if compile.ReasonBindFailed != reasonOf(errs["ns/pm/public"]) {
		t.Errorf("a bind error has reason %s", reasonOf(errs["ns/pm/public"]))
	}
	if err := r.Ready(); err != nil {
		t.Errorf("not ready after the dataplane took the snapshot: %v", err)
	}
	if dp.count() != 1 {
		t.Errorf("%d snapshots sent, want 1", dp.count())
	}
}

// reasonOf is the condition reason status shows for err.
func reasonOf(err error) string {
	var r compile.ReasonedError
	if errors.As(err, &r) {
		return r.Reason()
	}
	return compile.ReasonBindFailed
}

// With the dataplane away, every listener that binds gets an unreachable
// error (reason DataplaneUnreachable), readiness fails, and the programmer
// is told; once the dataplane is there, it gets the snapshot at once and
// the programmer is told again.
func TestRemoteUnreachableThenBack(t *testing.T) {
	path := peers.SocketPath(t, "pmx-remote-")
	r := newRemote(t, path)
	errs := r.Apply(twoListeners("1"))
	if len(errs) != 1 || !errors.Is(errs["ns/pm/public"], control.ErrUnreachable) ||
		reasonOf(errs["ns/pm/public"]) != compile.ReasonDataplaneUnreachable ||
		!strings.HasPrefix(errs["ns/pm/public"].Error(), "dataplane unreachable: ") {
		t.Fatalf("errors with no dataplane: %v", errs)
	}
	if err := r.Ready(); !errors.Is(err, control.ErrUnreachable) {
		t.Errorf("Ready with no dataplane: %v", err)
	}
	if !drain(r.Resynced()) {
		t.Error("the programmer was not told that the dataplane went away")
	}

	runRemote(t, r)
	dp, _, _ := startDataplane(t, path)
	took := peers.Until(t, 10*time.Second, "the snapshot reaches the dataplane that came", func() bool { return dp.count() == 1 })
	t.Logf("the dataplane had the snapshot %s after it started listening", took.Round(time.Millisecond))
	peers.Until(t, 10*time.Second, "ready", func() bool { return r.Ready() == nil })
	peers.Until(t, 10*time.Second, "the programmer is told", func() bool { return drain(r.Resynced()) })
}

// A dataplane that restarted (a new process, nothing applied) gets the
// current snapshot at once, without a new Apply, however short its
// absence; so does one that holds another snapshot.
func TestRemoteResends(t *testing.T) {
	for _, tc := range []struct {
		name string
		// cause makes the dataplane at path need the snapshot again and
		// returns the dataplane that must receive it (nil: the first one)
		// and how many snapshots it will have applied once it has. It
		// counts before the cause: the remote may resend at once, before
		// the test looks.
		cause func(t *testing.T, path string, first *appliedLog, stop func()) (*appliedLog, int)
	}{
		{"restarted", func(t *testing.T, path string, _ *appliedLog, stop func()) (*appliedLog, int) {
			stop()
			dp, _, _ := startDataplane(t, path)
			return dp, 1
		}},
		{"holds another snapshot", func(t *testing.T, path string, first *appliedLog, _ func()) (*appliedLog, int) {
			want := first.count() + 2 // the other snapshot, then the current one again
			wire, err := snapshot.Encode(twoListeners("2"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := control.NewClient(path).Apply(context.Background(), wire); err != nil {
				t.Fatal(err)
			}
			return first, want
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := peers.SocketPath(t, "pmx-remote-")
			first, _, stop := startDataplane(t, path)
			r := newRemote(t, path)
			r.Apply(twoListeners("1"))
			runRemote(t, r)
			peers.Until(t, 10*time.Second, "ready", func() bool { return r.Ready() == nil })
			drain(r.Resynced())

			dp, want := tc.cause(t, path, first, stop)
			took := peers.Until(t, 10*time.Second, "the current snapshot is sent again", func() bool { return dp.count() >= want })
			t.Logf("sent again after %s", took.Round(time.Millisecond))
			st, err := control.NewClient(path).State(context.Background())
			if err != nil || st.Version != r.version {
				t.Errorf("the dataplane holds %q (%v), want the current %q", st.Version, err, r.version)
			}
			peers.Until(t, 10*time.Second, "ready", func() bool { return r.Ready() == nil })
			peers.Until(t, 10*time.Second, "the programmer is told", func() bool { return drain(r.Resynced()) })
		})
	}
}

// A snapshot the dataplane refuses (e.g. a dataplane of another version)
// is reported with reason DataplaneRefused and not sent again and again
// to the same process; readiness fails.
func TestRemoteRefused(t *testing.T) {
	path := peers.SocketPath(t, "pmx-remote-")
	var puts atomic.Int32
	serveDataplane(t, path, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPut {
			puts.Add(1)
			http.Error(w, "decode snapshot: wire format 1, this dataplane reads 2", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"bootID":"b1","applied":true,"version":"sha256:old"}`))
	}))
	r := newRemote(t, path)
	errs := r.Apply(twoListeners("1"))
	if reasonOf(errs["ns/pm/public"]) != compile.ReasonDataplaneRefused || !strings.Contains(errs["ns/pm/public"].Error(), "this dataplane reads 2") {
		t.Fatalf("errors: %v", errs)
	}
	for range 5 {
		r.check(context.Background())
	}
	if n := puts.Load(); n != 1 {
		t.Errorf("%d PUTs of a refused snapshot, want 1", n)
	}
	if err := r.Ready(); err == nil {
		t.Error("ready although the dataplane refused the snapshot")
	}
}

// With the dataplane in another process: a PortMux becomes Ready through
// it; when the dataplane stops answering, status says DataplaneUnreachable
// without any change to the PortMux, and when a new dataplane process
// comes, it gets the snapshot at once and status turns Ready again.
func TestRemoteDataplaneStatus(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	path := peers.SocketPath(t, "pmx-remote-")
	// process starts a dataplane "process": a server behind a control
	// socket; stop ends both, as a killed process would.
	process := func() (stop func()) {
		srv := dataplane.NewServer(dataplane.Options{Log: testr.New(t)})
		stopSocket := serveDataplane(t, path, control.NewHandler(srv, prometheus.NewRegistry(), testr.New(t)))
		return func() {
			stopSocket()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}
	}
	stop := process()
	remote := newRemote(t, path)
	runRemote(t, remote)

	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pmx-"}}
	create(t, nsObj)
	ns := nsObj.Name
	startManager(t, restCfg, ns, remote, Options{BindAddress: "127.0.0.1", BindRetry: 500 * time.Millisecond})
	host, bport := echoBackend(t, "a")
	serviceFor(t, ns, "echo", bport, host)
	port := int32(peers.FreePort(t))
	create(t, sshMux(ns, "edge", port, "echo"))
	condition(t, ns, "edge", compile.ConditionReady, metav1.ConditionTrue, compile.ReasonReady)
	if got, err := talk(port, "hello"); err != nil || !strings.HasPrefix(got, "a") {
		t.Fatalf("through the dataplane: %q, %v", got, err)
	}

	stop()
	c := condition(t, ns, "edge", compile.ConditionReady, metav1.ConditionFalse, compile.ReasonDataplaneUnreachable)
	t.Logf("while the dataplane is away: %s", c.Message)
	if err := remote.Ready(); err == nil {
		t.Error("ready while the dataplane is away")
	}

	process()
	condition(t, ns, "edge", compile.ConditionReady, metav1.ConditionTrue, compile.ReasonReady)
	peers.Eventually(t, settleTimeout, "traffic through the new dataplane process", func() error {
		got, err := talk(port, "again")
		if err == nil && !strings.HasPrefix(got, "a") {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
}

// While a snapshot is on its way, a dataplane that serves the previous one
// stays ready (a readiness probe then must not take the pod out of its
// Services); one that serves none is not.
func TestRemoteReadyWhileSending(t *testing.T) {
	for _, tc := range []struct {
		name    string
		applied bool
	}{
		{"serving the previous snapshot", true},
		{"serving nothing yet", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := peers.SocketPath(t, "pmx-remote-")
			release := make(chan struct{})
			var puts atomic.Int32
			state := fmt.Sprintf(`{"bootID":"b1","applied":%t,"version":"sha256:previous"}`, tc.applied)
			serveDataplane(t, path, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if req.Method == http.MethodPut {
					puts.Add(1)
					<-release
				}
				_, _ = w.Write([]byte(state))
			}))
			r := newRemote(t, path)
			r.check(context.Background()) // learns what the dataplane serves
			done := make(chan struct{})
			go func() { defer close(done); r.Apply(twoListeners("1")) }()
			peers.Until(t, 10*time.Second, "the PUT is under way", func() bool { return puts.Load() == 1 })
			if err := r.Ready(); (err == nil) != tc.applied {
				t.Errorf("Ready while sending: %v; want ready = %v", err, tc.applied)
			}
			close(release)
			<-done
		})
	}
}

// A listener whose port another process holds keeps its PortMux
// BindFailed, and takes nothing else off the incremental path: another
// PortMux's endpoint change still crosses the socket as a delta, and the
// retry that binds the freed port is one too; no whole snapshot is sent
// after the first.
func TestBindErrorKeepsChangesIncremental(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	path := peers.SocketPath(t, "pmx-bind-")
	srv := dataplane.NewServer(dataplane.Options{Log: testr.New(t)})
	serveDataplane(t, path, control.NewHandler(srv, prometheus.NewRegistry(), testr.New(t)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	remote := newRemote(t, path)
	runRemote(t, remote)
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pmx-"}}
	create(t, nsObj)
	ns := nsObj.Name
	startManager(t, restCfg, ns, remote, Options{BindAddress: "127.0.0.1", BindRetry: 500 * time.Millisecond})

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	host, bport := echoBackend(t, "a")
	serviceFor(t, ns, "echo", bport, host)
	create(t, sshMux(ns, "stuck", int32(busy.Addr().(*net.TCPAddr).Port), "echo"))
	free := int32(peers.FreePort(t))
	create(t, sshMux(ns, "moving", free, "echo"))
	condition(t, ns, "stuck", compile.ConditionProgrammed, metav1.ConditionFalse, "BindFailed")
	condition(t, ns, "moving", compile.ConditionReady, metav1.ConditionTrue, compile.ReasonReady)
	deltas0, wholes0, _ := remote.SendCounts()

	// moving's backend changes while stuck cannot bind.
	host2, bport2 := echoBackend(t, "b")
	serviceFor(t, ns, "echo2", bport2, host2)
	// Status writes race with the update: retried on conflict.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var pm v1alpha1.PortMux
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "moving"}, &pm); err != nil {
			return err
		}
		pm.Spec.Routes[0].Backend.Service.Name = "echo2"
		return k8s.Update(context.Background(), &pm)
	}); err != nil {
		t.Fatal(err)
	}
	peers.Eventually(t, settleTimeout, "moving reaches its new backend", func() error {
		got, err := talk(free, "x")
		if err == nil && !strings.HasPrefix(got, "b") {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	if c := condition(t, ns, "stuck", compile.ConditionProgrammed, metav1.ConditionFalse, "BindFailed"); !strings.Contains(c.Message, "address already in use") {
		t.Fatalf("stuck's condition: %q", c.Message)
	}

	_ = busy.Close()
	condition(t, ns, "stuck", compile.ConditionReady, metav1.ConditionTrue, compile.ReasonReady)
	deltas, wholes, _ := remote.SendCounts()
	t.Logf("while a port was held: %d deltas, %d whole snapshots", deltas-deltas0, wholes-wholes0)
	if wholes != wholes0 {
		t.Errorf("%d whole snapshots sent while a listener could not bind; want deltas only", wholes-wholes0)
	}
	if deltas-deltas0 < 2 {
		t.Errorf("%d deltas sent, want the change and the retry that bound", deltas-deltas0)
	}
}
