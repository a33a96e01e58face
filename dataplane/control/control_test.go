package control_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/snapshot/snapshottest"
)

// fakeDataplane records what it is given and answers the bind errors it
// is told to.
type fakeDataplane struct {
	mu      sync.Mutex
	applied []*snapshot.Snapshot
	errs    map[string]error
}

func (f *fakeDataplane) Apply(s *snapshot.Snapshot) map[string]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, s)
	return f.errs
}

func (f *fakeDataplane) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

// socketPath is a fresh path for a control socket.
func socketPath(t *testing.T) string { return peers.SocketPath(t, "pmx-ctl-") }

// serve runs a handler for dp on a new socket and returns a client of it.
// stop closes the server (the socket goes away).
func serve(t *testing.T, dp control.Dataplane, reg prometheus.Gatherer) (c *control.Client, h *control.Handler, stop func()) {
	t.Helper()
	path := socketPath(t)
	return serveAt(t, path, dp, reg)
}

func serveAt(t *testing.T, path string, dp control.Dataplane, reg prometheus.Gatherer) (*control.Client, *control.Handler, func()) {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	h := control.NewHandler(dp, reg, testr.New(t))
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	var once sync.Once
	stop := func() { once.Do(func() { _ = hs.Close(); <-done }) }
	t.Cleanup(stop)
	return control.NewClient(path), h, stop
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func encode(t *testing.T, s *snapshot.Snapshot) []byte { return encoded(t, snapshot.Encode, s) }

// encoded is v in the wire format enc writes.
func encoded[T any](t *testing.T, enc func(T) ([]byte, error), v T) []byte {
	t.Helper()
	b, err := enc(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var oneListener = &snapshot.Snapshot{Listeners: []snapshot.Listener{{
	Name: "ns/pm/public", Address: "127.0.0.1:0",
	Routes: []snapshot.Route{{Name: "ns/pm/any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "b"}}},
}}}

// A snapshot sent is applied and named by its digest; the state says so,
// with the bind errors, and readiness follows.
func TestApplyAndState(t *testing.T) {
	dp := &fakeDataplane{errs: map[string]error{"ns/pm/public": errors.New("bind: address already in use")}}
	c, _, _ := serve(t, dp, nil)

	st, err := c.State(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.BootID == "" || st.Applied || st.Version != "" {
		t.Errorf("state before any snapshot: %+v", st)
	}
	if err := c.Probe(ctx(t), false); err != nil {
		t.Errorf("healthz before any snapshot: %v", err)
	}
	var se *control.StatusError
	if err := c.Probe(ctx(t), true); !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Errorf("readyz before any snapshot: %v, want 503", err)
	}

	wire := encode(t, oneListener)
	got, err := c.Apply(ctx(t), wire)
	if err != nil {
		t.Fatal(err)
	}
	want := control.State{BootID: st.BootID, Applied: true, Version: control.Version(wire),
		BindErrors: map[string]string{"ns/pm/public": "bind: address already in use"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("PUT answered %+v, want %+v", got, want)
	}
	if again, err := c.State(ctx(t)); err != nil || fmt.Sprint(again) != fmt.Sprint(want) {
		t.Errorf("GET /state: %+v, %v; want %+v", again, err, want)
	}
	if n := dp.count(); n != 1 || dp.applied[0].Listeners[0].Name != "ns/pm/public" {
		t.Errorf("the dataplane got %d snapshots: %+v", n, dp.applied)
	}
	if err := c.Probe(ctx(t), true); err != nil {
		t.Errorf("readyz after a snapshot: %v", err)
	}
	if !strings.HasPrefix(want.Version, "sha256:") || len(want.Version) != len("sha256:")+64 {
		t.Errorf("version %q is not a sha256 digest", want.Version)
	}
}

// A snapshot that does not decode is refused with 400 and the reason;
// the dataplane keeps what it had.
func TestRefusedSnapshot(t *testing.T) {
	dp := &fakeDataplane{}
	c, _, _ := serve(t, dp, nil)
	first := encode(t, oneListener)
	if _, err := c.Apply(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"not JSON", "{", "decode snapshot"},
		{"another format", `{"format":99,"snapshot":{}}`, "wire format 99"},
		{"an unknown field", `{"format":1,"snapshot":{"Listeners":[],"Extra":1}}`, `unknown field "Extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Apply(ctx(t), []byte(tc.body))
			var se *control.StatusError
			if !errors.As(err, &se) || se.Code != http.StatusBadRequest || !strings.Contains(se.Message, tc.want) {
				t.Fatalf("PUT %s: %v; want 400 mentioning %q", tc.body, err, tc.want)
			}
			if errors.Is(err, control.ErrUnreachable) {
				t.Error("a refusal reads as unreachable")
			}
			st, err := c.State(ctx(t))
			if err != nil || st.Version != control.Version(first) || dp.count() != 1 {
				t.Errorf("after a refused snapshot: state %+v (%v), %d applied; want the first still", st, err, dp.count())
			}
		})
	}
}

// staleSocket returns the path of a socket file that nobody serves, as a
// killed dataplane leaves it.
func staleSocket(t *testing.T) string {
	t.Helper()
	path := socketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = ln.Close()
	return path
}

// Every way of not reaching the dataplane is ErrUnreachable: nothing at
// the path, a socket file nobody serves, a server that went away.
func TestUnreachable(t *testing.T) {
	stale := staleSocket(t)
	gone, _, stop := serve(t, &fakeDataplane{}, nil)
	stop()
	for _, tc := range []struct {
		name string
		c    *control.Client
	}{
		{"no socket file", control.NewClient(filepath.Join(t.TempDir(), "none.sock"))},
		{"a stale socket file", control.NewClient(stale)},
		{"a stopped server", gone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.State(ctx(t))
			if !errors.Is(err, control.ErrUnreachable) {
				t.Errorf("State: %v, want ErrUnreachable", err)
			}
			if _, err := tc.c.Apply(ctx(t), encode(t, oneListener)); !errors.Is(err, control.ErrUnreachable) {
				t.Errorf("Apply: %v, want ErrUnreachable", err)
			}
		})
	}
}

// The socket is for the pod's user only; a socket file that a killed
// dataplane left is replaced, a live one is not taken over.
func TestListen(t *testing.T) {
	path := staleSocket(t)

	c, _, _ := serveAt(t, path, &fakeDataplane{}, nil)
	if _, err := c.State(ctx(t)); err != nil {
		t.Fatalf("the dataplane on a replaced stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != control.SocketMode {
		t.Errorf("socket mode %v, want a socket with %v", fi.Mode(), os.FileMode(control.SocketMode))
	}
	if ln, err := control.Listen(path); err == nil {
		_ = ln.Close()
		t.Error("Listen took over a socket that a live dataplane serves")
	} else if !strings.Contains(err.Error(), "another process serves on it") {
		t.Errorf("Listen on a live socket: %v", err)
	}
}

// Each process has its own boot id, which is how the controller knows the
// dataplane restarted.
func TestBootIDPerProcess(t *testing.T) {
	a := control.NewHandler(&fakeDataplane{}, prometheus.NewRegistry(), testr.New(t)).State().BootID
	b := control.NewHandler(&fakeDataplane{}, prometheus.NewRegistry(), testr.New(t)).State().BootID
	if a == "" || a == b {
		t.Errorf("boot ids %q and %q", a, b)
	}
}

// The protocol's paths answer their methods only; a draining dataplane is
// not ready.
func TestRoutes(t *testing.T) {
	dp := &fakeDataplane{}
	path := socketPath(t)
	c, h, _ := serveAt(t, path, dp, nil)
	if _, err := c.Apply(ctx(t), encode(t, oneListener)); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, control.PathSnapshot, http.StatusMethodNotAllowed},
		{http.MethodPost, control.PathSnapshot, http.StatusMethodNotAllowed},
		{http.MethodPut, control.PathState, http.StatusMethodNotAllowed},
		{http.MethodGet, "/debug/pprof/", http.StatusNotFound},
		{http.MethodGet, control.PathHealthz, http.StatusOK},
		{http.MethodGet, control.PathReadyz, http.StatusOK},
		{http.MethodGet, control.PathMetrics, http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, "http://dataplane"+tc.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
	}
	h.Stopping()
	var se *control.StatusError
	if err := c.Probe(ctx(t), true); !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || se.Message != "draining" {
		t.Errorf("readyz while draining: %v", err)
	}
	if err := c.Probe(ctx(t), false); err != nil {
		t.Errorf("healthz while draining: %v", err)
	}
	if _, err := c.Apply(ctx(t), encode(t, oneListener)); !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Errorf("PUT /snapshot while draining: %v, want 503", err)
	}
	if dp.count() != 1 {
		t.Errorf("%d snapshots applied, want 1", dp.count())
	}
}

// A real dataplane behind the socket: the listener is bound, and a second
// snapshot whose port is taken reports the bind error by listener name.
func TestRealDataplaneBindErrors(t *testing.T) {
	srv := dataplane.NewServer(dataplane.Options{Log: testr.New(t)})
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	c, _, _ := serve(t, srv, nil)
	if st, err := c.Apply(ctx(t), encode(t, oneListener)); err != nil || len(st.BindErrors) != 0 {
		t.Fatalf("apply: %+v, %v", st, err)
	}
	if srv.Addr("ns/pm/public") == nil {
		t.Fatal("the listener is not bound")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	second := *oneListener
	second.Listeners = append(second.Listeners, snapshot.Listener{Name: "ns/pm/taken", Address: taken.Addr().String(),
		Routes: oneListener.Listeners[0].Routes})
	st, err := c.Apply(ctx(t), encode(t, &second))
	if err != nil {
		t.Fatal(err)
	}
	if msg := st.BindErrors["ns/pm/taken"]; !strings.Contains(msg, "address already in use") || len(st.BindErrors) != 1 {
		t.Errorf("bind errors %v, want ns/pm/taken: address already in use", st.BindErrors)
	}
}

// The controller's endpoint shows the dataplane's portmux_* families as
// they are, its go_* and process_* under portmux_dataplane_, nothing
// else, and portmux_dataplane_up; with the dataplane away, only up=0.
func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portmux_connections_total", Help: "Connections."}, []string{"listener", "outcome"})
	conns.WithLabelValues("ns/pm/public", "forwarded").Add(3)
	sniff := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portmux_sniff_duration_seconds", Help: "Sniffing.", Buckets: []float64{.001, .01}})
	sniff.Observe(.005)
	sniff.Observe(.5)
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "other_total", Help: "Not ours."})
	reg.MustRegister(conns, sniff, other)
	c, _, stop := serve(t, &fakeDataplane{}, reg)

	mirror := prometheus.NewRegistry()
	mirror.MustRegister(control.NewCollector(c, 5*time.Second, testr.New(t)))
	fams := gather(t, mirror)
	if got := fams["portmux_connections_total"]; len(got.GetMetric()) != 1 || got.GetMetric()[0].GetCounter().GetValue() != 3 ||
		labelString(got.GetMetric()[0]) != "listener=ns/pm/public,outcome=forwarded" || got.GetHelp() != "Connections." {
		t.Errorf("portmux_connections_total mirrored as %v", got)
	}
	if h := fams["portmux_sniff_duration_seconds"].GetMetric(); len(h) != 1 || h[0].GetHistogram().GetSampleCount() != 2 ||
		len(h[0].GetHistogram().GetBucket()) != 2 || h[0].GetHistogram().GetBucket()[1].GetCumulativeCount() != 1 {
		t.Errorf("portmux_sniff_duration_seconds mirrored as %v", h)
	}
	if _, ok := fams["portmux_dataplane_go_goroutines"]; !ok {
		t.Error("no portmux_dataplane_go_goroutines")
	}
	for name := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "other") {
			t.Errorf("%s is mirrored", name)
		}
	}
	if up := fams["portmux_dataplane_up"].GetMetric(); len(up) != 1 || up[0].GetGauge().GetValue() != 1 {
		t.Errorf("portmux_dataplane_up %v, want 1", up)
	}

	stop()
	fams = gather(t, mirror)
	if len(fams) != 1 || fams["portmux_dataplane_up"].GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("with the dataplane away: %v; want only portmux_dataplane_up 0", fams)
	}
}

func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range list {
		out[mf.GetName()] = mf
	}
	return out
}

func labelString(m *dto.Metric) string {
	var s []string
	for _, lp := range m.GetLabel() {
		s = append(s, lp.GetName()+"="+lp.GetValue())
	}
	return strings.Join(s, ",")
}

func TestMirroredName(t *testing.T) {
	for in, want := range map[string]string{
		"portmux_connections_total":     "portmux_connections_total",
		"go_goroutines":                 "portmux_dataplane_go_goroutines",
		"process_resident_memory_bytes": "portmux_dataplane_process_resident_memory_bytes",
		"portmux_dataplane_up":          "",
		"promhttp_metric_handler_total": "",
		"controller_runtime_x":          "",
	} {
		if got := control.MirroredName(in); got != want {
			t.Errorf("MirroredName(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkApplyOverSocket is what the manager pays per snapshot: encode,
// PUT over the socket, decode and apply in a real dataplane (TLS
// configurations built for every terminating listener), the answer read;
// beside the same apply in the process, as the manager did it before.
func BenchmarkApplyOverSocket(b *testing.B) {
	for _, tc := range []struct {
		tenants int
		kind    string
		// deltaOnly: whole snapshots of this size take too long here.
		deltaOnly bool
	}{{10, "ecdsa", false}, {1000, "ecdsa", false}, {1000, "rsa", false}, {10000, "ecdsa", true}} {
		if !tc.deltaOnly {
			benchApplyWhole(b, tc.tenants, tc.kind)
		}
		// A change of one listener as a delta: what the dataplane spends
		// on an EndpointSlice event (issue 19).
		b.Run(fmt.Sprintf("socket-delta/%d-tenants-%s", tc.tenants, tc.kind), func(b *testing.B) {
			c := benchDataplane(b)
			snap := snapshottest.Tenants(b, tc.tenants, tc.kind, "127.0.0.1:0")
			wire, err := snapshot.Encode(snap)
			if err != nil {
				b.Fatal(err)
			}
			st, err := c.Apply(context.Background(), wire)
			if err != nil || len(st.BindErrors) > 0 {
				b.Fatalf("apply: %+v, %v", st, err)
			}
			l := snap.Listeners[len(snap.Listeners)/2]
			var size, i int
			for b.Loop() {
				i++
				l.MaxConnections = 1 + i%2
				enc, err := snapshot.EncodeDelta(&snapshot.Delta{MaxConnections: snap.MaxConnections, Set: []snapshot.Listener{l}})
				if err != nil {
					b.Fatal(err)
				}
				size = len(enc)
				if st, err = c.ApplyDelta(context.Background(), st.Version, enc); err != nil || len(st.BindErrors) > 0 {
					b.Fatalf("apply delta: %+v, %v", st, err)
				}
			}
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

// benchApplyWhole is BenchmarkApplyOverSocket for whole snapshots of
// tenants listeners: applied in the process, and over the socket.
func benchApplyWhole(b *testing.B, tenants int, kind string) {
	tc := struct {
		tenants int
		kind    string
	}{tenants, kind}
	b.Run(fmt.Sprintf("in-process/%d-tenants-%s", tc.tenants, tc.kind), func(b *testing.B) {
		srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
		defer func() { _ = srv.Shutdown(context.Background()) }()
		snap := snapshottest.Tenants(b, tc.tenants, tc.kind, "127.0.0.1:0")
		for b.Loop() {
			if errs := srv.Apply(snap); len(errs) > 0 {
				b.Fatal(errs)
			}
		}
	})
	b.Run(fmt.Sprintf("socket/%d-tenants-%s", tc.tenants, tc.kind), func(b *testing.B) {
		c := benchDataplane(b)
		snap := snapshottest.Tenants(b, tc.tenants, tc.kind, "127.0.0.1:0")
		var size int
		for b.Loop() {
			wire, err := snapshot.Encode(snap)
			if err != nil {
				b.Fatal(err)
			}
			size = len(wire)
			if st, err := c.Apply(context.Background(), wire); err != nil || len(st.BindErrors) > 0 {
				b.Fatalf("apply: %+v, %v", st, err)
			}
		}
		b.ReportMetric(float64(size), "bytes")
	})
}

// benchDataplane serves a real dataplane on a control socket until the
// benchmark ends and returns a client of it.
func benchDataplane(b *testing.B) *control.Client {
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	path := filepath.Join(b.TempDir(), "dp.sock")
	ln, err := control.Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: control.NewHandler(srv, prometheus.NewRegistry(), logr.Discard()), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	b.Cleanup(func() { _ = hs.Close() })
	return control.NewClient(path)
}

// endless answers every request with a 200 whose body never ends (a
// dataplane gone wrong, or taken over), and counts what it wrote.
type endless struct {
	line    string
	written int64
	mu      sync.Mutex
}

func (e *endless) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	chunk := []byte(strings.Repeat(e.line, 4096/len(e.line)+1))
	for {
		n, err := w.Write(chunk)
		e.mu.Lock()
		e.written += int64(n)
		e.mu.Unlock()
		if err != nil || r.Context().Err() != nil {
			return
		}
	}
}

// TestClientReadsBounded: whatever a dataplane answers, the manager reads
// a bounded amount of it and gives up with an error, instead of reading
// (and holding) without end.
func TestClientReadsBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		read func(*control.Client) error
	}{
		{"state", `{"bootID":"` + strings.Repeat("a", 64), func(c *control.Client) error { _, err := c.State(ctx(t)); return err }},
		{"metrics", "portmux_x 1\n", func(c *control.Client) error { _, err := c.Metrics(ctx(t)); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := socketPath(t)
			ln, err := control.Listen(path)
			if err != nil {
				t.Fatal(err)
			}
			e := &endless{line: tc.line}
			hs := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = hs.Serve(ln) }()
			t.Cleanup(func() { _ = hs.Close() })

			if err := tc.read(control.NewClient(path)); err == nil {
				t.Fatal("an endless answer was read as a good one")
			}
			_ = hs.Close()
			e.mu.Lock()
			defer e.mu.Unlock()
			// What the server got rid of is what the client read, plus
			// what the socket buffers held: far below unbounded.
			if e.written > 80<<20 {
				t.Errorf("the client let the server write %d MiB", e.written>>20)
			}
		})
	}
}
