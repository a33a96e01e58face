// Command scale measures how PortMux's manager copes with many PortMuxes
// (make bench-scale): it starts the envtest API server, runs `portmux
// manager` (the binary given by -portmux) against it, programming a
// recording dataplane served over the real control socket by this process,
// creates N PortMuxes each with its Service and EndpointSlice, and reports
// what a user of a cluster that size would wait for and what the manager
// costs: time until all are Ready after the last apply, a new PortMux's
// apply until the dataplane has its listener, an EndpointSlice change
// until the dataplane has its endpoints, manager CPU per EndpointSlice
// event, manager RSS and heap, the size of the snapshot the dataplane
// serves, and the bytes each EndpointSlice change sent the dataplane with
// the time the dataplane end took to apply them.
//
// It exists because a whole-cluster compile made every change cost in
// proportion to the cluster (issue 19): the numbers tell whether a change
// costs what changed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/hack/internal/harness"
	"github.com/portmux/portmux/test/apiserver"
)

const namespace = "bench"

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	scales     []int
	endpoints  int
	newPMs     int
	flips      int
	settle     time.Duration
	portmux    string
	crds       string
	out        string
	basePort   int
	createJobs int
	profile    bool
}

func run() error {
	var o options
	scales := flag.String("scales", envOr("SCALE", "100,1000,10000"), "comma-separated numbers of PortMuxes, one run each (env SCALE)")
	flag.IntVar(&o.endpoints, "endpoints", 10, "endpoints in each EndpointSlice")
	flag.IntVar(&o.newPMs, "new", 20, "PortMuxes created one at a time after the bulk, timed until the dataplane has each")
	flag.IntVar(&o.flips, "flips", 100, "EndpointSlice changes, timed until the dataplane has each")
	flag.DurationVar(&o.settle, "settle-timeout", 10*time.Minute, "give up waiting for all Ready after this long, and report how many were")
	flag.StringVar(&o.portmux, "portmux", "bin/portmux", "the portmux binary whose manager is measured")
	flag.StringVar(&o.crds, "crds", "config/crd/bases", "PortMux's CRDs")
	flag.StringVar(&o.out, "out", "bin/bench/scale", "directory of the results (results.jsonl, the manager's logs)")
	flag.IntVar(&o.basePort, "base-port", 20000, "first listener port; PortMux i listens on base-port+i")
	flag.IntVar(&o.createJobs, "jobs", 16, "concurrent creates")
	flag.BoolVar(&o.profile, "profile", os.Getenv("PROFILE") != "", "write the manager's CPU profile of the EndpointSlice changes, and its heap profile after them, to the out directory (env PROFILE)")
	flag.Parse()
	for _, s := range strings.Split(*scales, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("scale %q: want a positive number", s)
		}
		o.scales = append(o.scales, n)
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set: export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	logf.SetLogger(logr.Discard())
	results, err := os.OpenFile(filepath.Join(o.out, "results.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = results.Close() }()
	var all []result
	for _, n := range o.scales {
		r, err := runScale(o, n)
		if err != nil {
			return fmt.Errorf("at %d PortMuxes: %w", n, err)
		}
		all = append(all, r)
		line, _ := json.Marshal(r)
		_, _ = fmt.Fprintf(results, "%s\n", line)
		fmt.Fprintf(os.Stderr, "N=%d done: %s\n", n, line)
	}
	printTable(os.Stdout, all)
	return nil
}

// result is one scale's numbers; durations in milliseconds.
type result struct {
	PortMuxes        int     `json:"portmuxes"`
	Endpoints        int     `json:"endpoints"`
	CreateS          float64 `json:"createSeconds"`
	ReadyAfterLastMs float64 `json:"allReadyAfterLastApplyMs"`
	Ready            int     `json:"ready"`
	NewP50Ms         float64 `json:"newPortMuxP50Ms"`
	NewP99Ms         float64 `json:"newPortMuxP99Ms"`
	FlipP50Ms        float64 `json:"endpointSliceP50Ms"`
	FlipP99Ms        float64 `json:"endpointSliceP99Ms"`
	CPUPerFlipMs     float64 `json:"managerCPUPerEndpointSliceEventMs"`
	RSSMB            float64 `json:"managerRSSMB"`
	HeapMB           float64 `json:"managerHeapInuseMB"`
	SnapshotMB       float64 `json:"snapshotMB"`
	ReceiveMs        float64 `json:"snapshotReceiveMsP50"`
	Snapshots        int64   `json:"snapshotsReceived"`
	// BytesPerFlip is what the manager sent the dataplane per
	// EndpointSlice change, and FlipReceiveMs the p50 of reading,
	// decoding and applying it.
	BytesPerFlip  float64 `json:"bytesSentPerEndpointSliceEvent"`
	FlipReceiveMs float64 `json:"endpointSliceReceiveMsP50"`
}

func runScale(o options, n int) (res result, err error) {
	res.PortMuxes, res.Endpoints = n, n*o.endpoints
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return res, err
		}
	}
	env := &envtest.Environment{Scheme: scheme, CRDDirectoryPaths: []string{o.crds}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return res, fmt.Errorf("start envtest: %w", err)
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS, cfg.Burst = 2000, 4000
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return res, err
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pmx-scale-")
	if err != nil {
		return res, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	kcPath := filepath.Join(dir, "kubeconfig")
	if _, err := apiserver.WriteAdminKubeconfig(env, "bench", kcPath); err != nil {
		return res, err
	}

	// The recording dataplane, on the real control socket.
	rec := newRecorder()
	sock := filepath.Join(dir, "control.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		return res, err
	}
	h := control.NewHandler(rec, prometheus.NewRegistry(), logr.Discard())
	srv := &http.Server{Handler: rec.timed(h), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	metricsAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	logFile, err := os.Create(filepath.Join(o.out, fmt.Sprintf("manager-%d.log", n)))
	if err != nil {
		return res, err
	}
	defer func() { _ = logFile.Close() }()
	pprofAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	args := []string{"manager", "--kubeconfig=" + kcPath, "--dataplane-socket=" + sock,
		"--metrics-bind-address=" + metricsAddr, "--health-probe-bind-address=0", "--gateway-api=off",
		"--watch-namespace=" + namespace}
	if o.profile {
		args = append(args, "--pprof-bind-address="+pprofAddr)
	}
	cmd := exec.Command(o.portmux, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s manager: %w", o.portmux, err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	pid := cmd.Process.Pid

	// Bulk: N Services, EndpointSlices and PortMuxes.
	started := time.Now()
	jobs := make(chan int)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range o.createJobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := createOne(ctx, k8s, o, i, 0); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return res, *e
	}
	lastApply := time.Now()
	res.CreateS = lastApply.Sub(started).Seconds()
	fmt.Fprintf(os.Stderr, "N=%d: created %d objects in %.1fs\n", n, 3*n, res.CreateS)

	// All Ready.
	deadline := lastApply.Add(o.settle)
	poll := max(100*time.Millisecond, time.Duration(n/20)*time.Millisecond)
	for {
		ready, err := countReady(ctx, k8s)
		if err != nil {
			return res, err
		}
		res.Ready = ready
		if ready >= n {
			res.ReadyAfterLastMs = ms(time.Since(lastApply))
			break
		}
		if time.Now().After(deadline) {
			res.ReadyAfterLastMs = ms(time.Since(lastApply))
			fmt.Fprintf(os.Stderr, "N=%d: only %d Ready after %s; measuring on\n", n, ready, o.settle)
			break
		}
		time.Sleep(poll)
	}
	fmt.Fprintf(os.Stderr, "N=%d: %d Ready %.0fms after the last apply\n", n, res.Ready, res.ReadyAfterLastMs)

	// New PortMuxes, one at a time: apply until the dataplane has the listener.
	var news []time.Duration
	for j := range o.newPMs {
		i := n + j
		if err := createOne(ctx, k8s, o, i, 0, withoutPortMux); err != nil {
			return res, err
		}
		d, err := rec.timeUntil(func(s *snapshot.Snapshot) bool { return hasListener(s, i) },
			func() error { return createPortMux(ctx, k8s, o, i) })
		if err != nil {
			return res, fmt.Errorf("PortMux %d: %w", i, err)
		}
		news = append(news, d)
	}
	slices.Sort(news)
	res.NewP50Ms, res.NewP99Ms = ms(harness.Percentile(news, 50)), ms(harness.Percentile(news, 99))

	// Let status writes of the new ones finish before measuring CPU.
	time.Sleep(2 * time.Second)
	cpu0, err := cpuTime(pid)
	if err != nil {
		return res, err
	}
	profiled := make(chan error, 1)
	if o.profile {
		go func() { profiled <- cpuProfile(pprofAddr, filepath.Join(o.out, fmt.Sprintf("cpu-flips-%d.pprof", n))) }()
	}
	sent := rec.mark()
	var flips []time.Duration
	for f := range o.flips {
		i := (f * 7919) % n
		gen := f + 1
		d, err := rec.timeUntil(func(s *snapshot.Snapshot) bool { return hasEndpoint(s, i, endpoint(i, 0, gen)) },
			func() error { return setSlice(ctx, k8s, o, i, gen) })
		if err != nil {
			return res, fmt.Errorf("EndpointSlice change %d: %w", f, err)
		}
		flips = append(flips, d)
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return res, err
	}
	if o.profile {
		if err := <-profiled; err != nil {
			return res, err
		}
	}
	slices.Sort(flips)
	res.FlipP50Ms, res.FlipP99Ms = ms(harness.Percentile(flips, 50)), ms(harness.Percentile(flips, 99))
	res.CPUPerFlipMs = ms(cpu1-cpu0) / float64(o.flips)
	bytes, receive := rec.since(sent)
	res.BytesPerFlip, res.FlipReceiveMs = float64(bytes)/float64(o.flips), ms(receive)

	if o.profile {
		if err := heapProfile(pprofAddr, filepath.Join(o.out, fmt.Sprintf("heap-%d.pprof", n))); err != nil {
			return res, err
		}
	}
	res.RSSMB = float64(rss(pid)) / (1 << 20)
	res.HeapMB = heapInuse(metricsAddr) / (1 << 20)
	res.SnapshotMB, res.ReceiveMs, res.Snapshots = rec.stats()
	return res, nil
}

const withoutPortMux = true

func createOne(ctx context.Context, k8s client.Client, o options, i, gen int, skipPortMux ...bool) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name(i)},
		// Headless: envtest's Service IP range holds a few hundred.
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{
			Name: "main", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080),
		}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		return fmt.Errorf("create Service %d: %w", i, err)
	}
	if err := k8s.Create(ctx, slice(o, i, gen)); err != nil {
		return fmt.Errorf("create EndpointSlice %d: %w", i, err)
	}
	if len(skipPortMux) > 0 && skipPortMux[0] {
		return nil
	}
	return createPortMux(ctx, k8s, o, i)
}

func createPortMux(ctx context.Context, k8s client.Client, o options, i int) error {
	pm := &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name(i)},
		Spec: v1alpha1.PortMuxSpec{
			Listeners: []v1alpha1.Listener{{Name: "public", Port: ptr.To(int32(o.basePort + i))}},
			Routes: []v1alpha1.Route{{
				Name: "any", Listeners: []string{"public"},
				Match:   v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolAny},
				Backend: &v1alpha1.Backend{Service: &v1alpha1.ServicePort{Name: name(i), Port: intstr.FromInt32(80)}},
			}},
		},
	}
	if err := k8s.Create(ctx, pm); err != nil {
		return fmt.Errorf("create PortMux %d: %w", i, err)
	}
	return nil
}

func slice(o options, i, gen int) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name(i) + "-slice",
			Labels: map[string]string{discoveryv1.LabelServiceName: name(i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("main"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for e := range o.endpoints {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{strings.TrimSuffix(endpoint(i, e, gen), ":8080")},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	return es
}

// setSlice replaces endpoint 0 of slice i by one of generation gen.
func setSlice(ctx context.Context, k8s client.Client, o options, i, gen int) error {
	var cur discoveryv1.EndpointSlice
	want := slice(o, i, 0)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(want), &cur); err != nil {
		return err
	}
	cur.Endpoints[0].Addresses = []string{strings.TrimSuffix(endpoint(i, 0, gen), ":8080")}
	return k8s.Update(ctx, &cur)
}

func name(i int) string { return fmt.Sprintf("pm-%05d", i) }

// endpoint is the address of endpoint e of PortMux i in generation gen:
// unique in the cluster for 65,536 PortMuxes, 64 endpoints and 64
// generations... enough for the flips, which change endpoint 0 only.
func endpoint(i, e, gen int) string {
	if e == 0 && gen > 0 {
		return fmt.Sprintf("10.%d.%d.%d:8080", 128+gen%128, i>>8&255, i&255)
	}
	return fmt.Sprintf("10.%d.%d.%d:8080", e, i>>8&255, i&255)
}

// listener finds PortMux i's listener in s (sorted by name).
func listener(s *snapshot.Snapshot, i int) (int, bool) {
	want := namespace + "/" + name(i) + "/public"
	return slices.BinarySearchFunc(s.Listeners, want, func(l snapshot.Listener, n string) int { return strings.Compare(l.Name, n) })
}

func hasListener(s *snapshot.Snapshot, i int) bool {
	_, ok := listener(s, i)
	return ok
}

func hasEndpoint(s *snapshot.Snapshot, i int, ep string) bool {
	k, ok := listener(s, i)
	if !ok {
		return false
	}
	for _, r := range s.Listeners[k].Routes {
		if r.Backend != nil && slices.Contains(r.Backend.Endpoints, ep) {
			return true
		}
	}
	return false
}

func countReady(ctx context.Context, k8s client.Client) (int, error) {
	var list v1alpha1.PortMuxList
	if err := k8s.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return 0, err
	}
	ready := 0
	for i := range list.Items {
		pm := &list.Items[i]
		c := meta.FindStatusCondition(pm.Status.Conditions, "Ready")
		if c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == pm.Generation {
			ready++
		}
	}
	return ready, nil
}

// recorder is the dataplane the manager programs: it keeps nothing but the
// last snapshot, and tells waiters when one satisfies them.
type recorder struct {
	mu       sync.Mutex
	waiters  []waiter
	bytes    []int
	receives []time.Duration
	count    int64
	// last is the snapshot the dataplane serves.
	last *snapshot.Snapshot
}

type waiter struct {
	ok func(*snapshot.Snapshot) bool
	ch chan time.Time
}

func newRecorder() *recorder { return &recorder{} }

// Apply implements control.Dataplane.
func (r *recorder) Apply(s *snapshot.Snapshot) map[string]error {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	r.last = s
	keep := r.waiters[:0]
	for _, w := range r.waiters {
		if w.ok(s) {
			w.ch <- now
		} else {
			keep = append(keep, w)
		}
	}
	r.waiters = keep
	return nil
}

func (r *recorder) wait(ok func(*snapshot.Snapshot) bool) <-chan time.Time {
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	r.waiters = append(r.waiters, waiter{ok, ch})
	r.mu.Unlock()
	return ch
}

// timeUntil runs change and returns how long after its start the
// dataplane got a snapshot that satisfies ok.
func (r *recorder) timeUntil(ok func(*snapshot.Snapshot) bool, change func() error) (time.Duration, error) {
	t0 := time.Now()
	w := r.wait(ok)
	if err := change(); err != nil {
		return 0, err
	}
	select {
	case at := <-w:
		return at.Sub(t0), nil
	case <-time.After(2 * time.Minute):
		return 0, errors.New("the dataplane never got it")
	}
}

// timed records each PUT's size and how long reading, decoding and
// applying it took.
func (r *recorder) timed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPut {
			h.ServeHTTP(w, req)
			return
		}
		t0 := time.Now()
		h.ServeHTTP(w, req)
		r.mu.Lock()
		r.bytes = append(r.bytes, int(req.ContentLength))
		r.receives = append(r.receives, time.Since(t0))
		r.mu.Unlock()
	})
}

// mark is where the PUTs from now on start, for since.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bytes)
}

// since returns the bytes of the PUTs after mark m and their p50 time.
func (r *recorder) since(m int) (bytes int, receiveP50 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bytes[m:] {
		bytes += b
	}
	rs := slices.Clone(r.receives[m:])
	slices.Sort(rs)
	return bytes, harness.Percentile(rs, 50)
}

func (r *recorder) stats() (lastMB, receiveP50Ms float64, count int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last != nil {
		if b, err := snapshot.Encode(r.last); err == nil {
			lastMB = float64(len(b)) / (1 << 20)
		}
	}
	rs := slices.Clone(r.receives)
	slices.Sort(rs)
	return lastMB, ms(harness.Percentile(rs, 50)), r.count
}

// cpuTime is the user+system CPU pid has used (/proc/PID/stat).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / hz, nil
}

// rss is pid's resident set in bytes (/proc/PID/status).
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// heapInuse reads go_memstats_heap_inuse_bytes from the manager's metrics.
func heapInuse(addr string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// cpuProfile saves 10 s of the manager's CPU profile to path.
func cpuProfile(addr, path string) error {
	return saveProfile("http://"+addr+"/debug/pprof/profile?seconds=10", path)
}

// heapProfile saves the manager's heap profile, after a collection, to
// path: what it holds, not what it has yet to collect.
func heapProfile(addr, path string) error {
	return saveProfile("http://"+addr+"/debug/pprof/heap?gc=1", path)
}

func saveProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("profile the manager: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("profile the manager: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// size is a byte count for people.
func size(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func printTable(w io.Writer, rs []result) {
	_, _ = fmt.Fprintln(w, "| PortMuxes | endpoints | all Ready after last apply | new PortMux → dataplane p50/p99 | EndpointSlice → dataplane p50/p99 | manager CPU / EndpointSlice event | manager RSS / heap | whole snapshot / receive p50 | sent / receive p50 per EndpointSlice event |")
	_, _ = fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		ready := fmt.Sprintf("%.2f s", r.ReadyAfterLastMs/1000)
		if r.Ready < r.PortMuxes {
			ready = fmt.Sprintf("%d/%d after %.0f s", r.Ready, r.PortMuxes, r.ReadyAfterLastMs/1000)
		}
		_, _ = fmt.Fprintf(w, "| %d | %d | %s | %.0f / %.0f ms | %.0f / %.0f ms | %.1f ms | %.0f / %.0f MB | %.2f MB / %.0f ms | %s / %.1f ms |\n",
			r.PortMuxes, r.Endpoints, ready, r.NewP50Ms, r.NewP99Ms, r.FlipP50Ms, r.FlipP99Ms, r.CPUPerFlipMs, r.RSSMB, r.HeapMB, r.SnapshotMB, r.ReceiveMs, size(r.BytesPerFlip), r.FlipReceiveMs)
	}
}
