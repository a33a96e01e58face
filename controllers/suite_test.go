package controllers

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/apiserver"
)

// These tests run the controller against a real kube-apiserver and etcd
// (envtest) and a real in-process dataplane bound on loopback, so what they
// observe is what a user sees: conditions written by the API server, ports
// that accept connections, bytes that arrive at backends.
var (
	skipReason string
	scheme     *runtime.Scheme
	restCfg    *rest.Config
	k8s        client.Client
)

func TestMain(m *testing.M) {
	os.Exit(apiserver.Main(m, "..", func(e *apiserver.Env) {
		skipReason, scheme, restCfg, k8s = e.SkipReason, e.Scheme, e.Config, e.Client
		gatewayAPIErr = installGatewayAPI(e)
	}))
}

// recordingDataplane is the real dataplane, plus a record of the snapshots
// the controller applied, so tests can wait for one.
type recordingDataplane struct {
	*dataplane.Server
	mu   sync.Mutex
	last *snapshot.Snapshot
	n    int
}

func (r *recordingDataplane) Apply(s *snapshot.Snapshot) map[string]error {
	errs := r.Server.Apply(s)
	r.mu.Lock()
	r.last, r.n = s, r.n+1
	r.mu.Unlock()
	return errs
}

func (r *recordingDataplane) snapshot() *snapshot.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// startController runs a manager with the controller in a fresh namespace
// and returns the namespace and the dataplane it programs.
func startController(t *testing.T) (string, *recordingDataplane) {
	t.Helper()
	ns, dp, _ := startControllerWith(t)
	return ns, dp
}

// startControllerWith is startController that also returns the Controller.
func startControllerWith(t *testing.T, tweaks ...func(*ctrl.Options)) (string, *recordingDataplane, *Controller) {
	t.Helper()
	return startControllerAs(t, restCfg, nil, tweaks...)
}

// startControllerAs is startControllerWith with the manager talking to the
// API server through cfg; prepare, when set, runs once the namespace
// exists and before the manager starts.
func startControllerAs(t *testing.T, cfg *rest.Config, prepare func(ns string), tweaks ...func(*ctrl.Options)) (string, *recordingDataplane, *Controller) {
	t.Helper()
	var setup func(string, *Options)
	if prepare != nil {
		setup = func(ns string, _ *Options) { prepare(ns) }
	}
	return startControllerWithOptions(t, cfg, setup, tweaks...)
}

// startControllerWithOptions is startControllerAs where setup, when set,
// runs once the namespace exists and may set the controller's options
// (their BindAddress and BindRetry are the tests').
func startControllerWithOptions(t *testing.T, cfg *rest.Config, setup func(ns string, copt *Options), tweaks ...func(*ctrl.Options)) (string, *recordingDataplane, *Controller) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ns := &corev1.Namespace{}
	ns.GenerateName = "pmx-"
	create(t, ns)
	var copt Options
	if setup != nil {
		setup(ns.Name, &copt)
	}
	dp := &recordingDataplane{Server: dataplane.NewServer(dataplane.Options{Log: testr.New(t)})}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = dp.Shutdown(sctx)
	})
	copt.BindAddress, copt.BindRetry = "127.0.0.1", 500*time.Millisecond
	return ns.Name, dp, startManager(t, cfg, ns.Name, dp, copt, tweaks...)
}

// startManager runs a manager with the controller programming dp, watching
// namespace ns, until the test ends; the namespace is deleted then.
func startManager(t *testing.T, cfg *rest.Config, ns string, dp Dataplane, copt Options, tweaks ...func(*ctrl.Options)) *Controller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts := ctrl.Options{
		Scheme:     scheme,
		Logger:     testr.New(t),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		// One namespace per test, as --watch-namespace does: envtest has no
		// namespace controller, so earlier tests' objects never go away.
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
	}
	for _, tweak := range tweaks {
		tweak(&opts)
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c, err := Setup(ctx, mgr, dp, copt)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	return c
}

// settleTimeout bounds every wait for the cluster to settle. (PortMux
// ports are declared up front: tests take them from peers.FreePort.)
const settleTimeout = 20 * time.Second
