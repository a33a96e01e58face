package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers"
	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/daemon"
	"github.com/portmux/portmux/dataplane/snapshot"
)

type managerOptions struct {
	watchNamespaces []string
	// dataplaneSocket, when set, is where the dataplane process listens
	// (`portmux dataplane --socket`); otherwise it runs in this process,
	// configured by dp.
	dataplaneSocket      string
	dp                   daemon.Flags
	metricsBindAddress   string
	metricsSecure        bool
	metricsCertDir       string
	probeBindAddress     string
	pprofBindAddress     string
	leaderElect          bool
	leaderElectionNS     string
	kubeAPIQPS           float32
	kubeAPIBurst         int
	allowAddressBackends bool
	portPolicy           []string
	policy               compile.PortPolicy // portPolicy parsed
	gatewayAPI           string
	gatewayAddress       string // the dataplane Service, namespace/name
	gatewayPortRange     string
	gatewayClientLimits  compile.ClientLimits
}

func newManagerCommand() *cobra.Command {
	o := managerOptions{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the controller, which programs the dataplane (in the pod: over a Unix socket)",
		Long: `Manager watches PortMux objects and the Secrets, Services and EndpointSlices
they name, programs the dataplane from them, and (as leader) writes their
status. Every replica programs its own dataplane.

With --dataplane-socket the dataplane is another process, "portmux dataplane"
(in the pod: another container, without Kubernetes credentials), which the
manager sends each snapshot over that socket, again whenever the dataplane
restarts; the manager's /readyz waits until the dataplane serves the current
snapshot, and its metrics endpoint includes the dataplane's. Without it the
dataplane runs in this process, configured by the dataplane flags.

The API server is found as every Kubernetes client finds it: --kubeconfig,
then KUBECONFIG, then the in-cluster service account, then ~/.kube/config.`,
		Args: cobra.NoArgs,
	}
	newLog := logFlags(cmd)
	gfs := flag.NewFlagSet("kubeconfig", flag.ContinueOnError)
	config.RegisterFlags(gfs)
	cmd.Flags().AddGoFlagSet(gfs)
	f := cmd.Flags()
	f.StringArrayVar(&o.watchNamespaces, "watch-namespace", nil, "only watch PortMuxes (and what they name) in this namespace; repeatable (default: all namespaces)")
	f.StringVar(&o.dataplaneSocket, "dataplane-socket", "", "program the dataplane process serving this Unix socket (portmux dataplane --socket) instead of running one in this process")
	serverFlags := o.dp.AddFlags(f, "dataplane-bind-address")
	f.StringVar(&o.metricsBindAddress, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (0 disables it)")
	f.BoolVar(&o.metricsSecure, "metrics-secure", false, "serve metrics over HTTPS to clients whose bearer token may get /metrics (checked with TokenReview and SubjectAccessReview, which the manager must be allowed to create); a self-signed certificate unless --metrics-cert-dir holds tls.crt and tls.key")
	f.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "directory of the metrics endpoint's tls.crt and tls.key, reloaded when they change (with --metrics-secure)")
	f.StringVar(&o.probeBindAddress, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	f.StringVar(&o.pprofBindAddress, "pprof-bind-address", "", "address of Go's /debug/pprof endpoints, for profiling (make bench-scale PROFILE=1); empty: off")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader to write status (every replica still serves traffic)")
	f.Float32Var(&o.kubeAPIQPS, "kube-api-qps", 100, "requests per second to the API server (mostly status writes: at the client's usual 20, 1,000 new PortMuxes wait 50 s to be Ready)")
	f.IntVar(&o.kubeAPIBurst, "kube-api-burst", 200, "requests to the API server allowed in a burst above --kube-api-qps")
	f.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's)")
	f.BoolVar(&o.allowAddressBackends, "allow-address-backends", false, "accept backends and tunnel targets given as host:port, which let PortMux authors reach any address the pod can")
	f.StringArrayVar(&o.portPolicy, "port-policy", nil, "PORTS=NAMESPACES: only these namespaces may claim these ports (e.g. 443,8000-8099=edge,team-a; * for every port or namespace; a port is TCP and UDP unless written 443/tcp or 443/udp); repeatable, the first rule naming a port decides, ports no rule names are refused; none: any namespace may claim any port")
	f.StringVar(&o.gatewayAPI, "gateway-api", string(controllers.GatewayAPIAuto), "implement the Gateway API (GatewayClasses of controllerName "+compile.GatewayControllerName+"): auto when its CRDs are installed, on (fail without them) or off")
	f.StringVar(&o.gatewayAddress, "gateway-address-service", "", "NAMESPACE/NAME of the dataplane's Service, whose addresses every Gateway reports in status.addresses")
	f.StringVar(&o.gatewayPortRange, "gateway-port-range", "", "FIRST-LAST: give each Gateway a Service of its own (in the namespace of --gateway-address-service, of its type and selector) whose ports target dataplane ports allocated from this range; PortMux listeners cannot claim ports in it. Empty: every Gateway is served on the dataplane Service")
	f.IntVar(&o.gatewayClientLimits.MaxConnectionsPerClient, "gateway-max-connections-per-client", snapshot.DefaultMaxConnectionsPerClient, "connections (UDP: sessions) one client (an IPv4 address or IPv6 /64) may hold on a Gateway listener at once; 0: no limit")
	f.IntVar(&o.gatewayClientLimits.MaxConnectionRatePerClient, "gateway-max-connection-rate-per-client", snapshot.DefaultMaxConnectionRatePerClient, "new connections (UDP: sessions) per second one client may open on a Gateway listener, in bursts of twice as many; 0: no limit")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if o.gatewayClientLimits.MaxConnectionsPerClient < 0 || o.gatewayClientLimits.MaxConnectionRatePerClient < 0 {
			return errors.New("--gateway-max-connections-per-client and --gateway-max-connection-rate-per-client cannot be negative")
		}
		if o.dataplaneSocket != "" {
			for _, name := range serverFlags {
				if cmd.Flags().Changed(name) {
					return fmt.Errorf("--%s configures a dataplane in this process; with --dataplane-socket give it to portmux dataplane", name)
				}
			}
		}
		log := newLog()
		ctrl.SetLogger(log)
		return runManager(cmd.Context(), log, o)
	}
	return cmd
}

func runManager(ctx context.Context, log logr.Logger, o managerOptions) error {
	for _, v := range o.portPolicy {
		r, err := compile.ParsePortRule(v)
		if err != nil {
			return fmt.Errorf("--port-policy: %w", err)
		}
		o.policy = append(o.policy, r)
	}
	gwMode, err := controllers.ParseGatewayAPI(o.gatewayAPI)
	if err != nil {
		return fmt.Errorf("--gateway-api: %w", err)
	}
	var gwAddress types.NamespacedName
	if o.gatewayAddress != "" {
		ns, name, ok := strings.Cut(o.gatewayAddress, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("--gateway-address-service %q: want NAMESPACE/NAME", o.gatewayAddress)
		}
		gwAddress = types.NamespacedName{Namespace: ns, Name: name}
	}
	var gwRange *compile.PortRange
	if o.gatewayPortRange != "" {
		r, err := compile.ParseGatewayPortRange(o.gatewayPortRange)
		if err != nil {
			return fmt.Errorf("--gateway-port-range: %w", err)
		}
		gwRange = &r
	}
	restCfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("find the API server: %w", err)
	}
	restCfg.QPS, restCfg.Burst = o.kubeAPIQPS, o.kubeAPIBurst
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := gwv1.Install(scheme); err != nil {
		return err
	}

	// The dataplane outlives managers: if leadership is lost or the API
	// server goes away, the manager is rebuilt while traffic keeps flowing
	// on the last snapshot.
	var dp controllers.Dataplane
	dpReady := func() error { return nil } // in this process: ready once programmed
	if o.dataplaneSocket != "" {
		dp, dpReady = remoteDataplane(ctx, log, o.dataplaneSocket)
	} else {
		srv := o.dp.NewServer(log, ctrlmetrics.Registry)
		defer o.dp.Drain(log, srv)
		dp = srv
	}

	var namespaces map[string]cache.Config
	if len(o.watchNamespaces) > 0 {
		namespaces = map[string]cache.Config{}
		for _, ns := range o.watchNamespaces {
			namespaces[ns] = cache.Config{}
		}
	}
	for attempt := 0; ; attempt++ {
		err := runOneManager(ctx, log, restCfg, scheme, namespaces, dp, dpReady, o, gatewayOptions{gwMode, gwAddress, gwRange}, attempt)
		if ctx.Err() != nil {
			return nil
		}
		log.Error(err, "manager stopped; the dataplane keeps serving while it restarts")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 30*time.Second)):
		}
	}
}

func runOneManager(ctx context.Context, log logr.Logger, restCfg *rest.Config, scheme *runtime.Scheme,
	namespaces map[string]cache.Config, dp controllers.Dataplane, dpReady func() error, o managerOptions, gw gatewayOptions, attempt int) error {
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  log,
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.probeBindAddress,
		PprofBindAddress:        o.pprofBindAddress,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "portmux.dev",
		LeaderElectionNamespace: o.leaderElectionNS,
		// Leadership only decides who writes status. Losing it ends this
		// manager (runManager builds a new one) but never the dataplane.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{DefaultNamespaces: namespaces},
		// A restarted manager registers the same controllers again.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(attempt > 0)},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	c, err := controllers.Setup(ctx, mgr, dp, controllers.Options{
		BindAddress:           o.dp.BindAddress,
		AllowAddressBackends:  o.allowAddressBackends,
		PortPolicy:            o.policy,
		MaxConnections:        o.dp.MaxConnections,
		GatewayAPI:            gw.mode,
		GatewayAddressService: gw.address,
		GatewayPortRange:      gw.portRange,
		GatewayClientLimits:   o.gatewayClientLimits,
	})
	if err != nil {
		return fmt.Errorf("set up controllers: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("dataplane", func(r *http.Request) error {
		if err := c.ReadyCheck(r); err != nil {
			return err
		}
		return dpReady()
	}); err != nil {
		return err
	}
	log.Info("starting manager", "leaderElection", o.leaderElect, "namespaces", o.watchNamespaces)
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	if ctx.Err() == nil {
		return errors.New("manager returned")
	}
	return nil
}

// gatewayOptions are the Gateway API flags, parsed.
type gatewayOptions struct {
	mode      controllers.GatewayAPI
	address   types.NamespacedName
	portRange *compile.PortRange
}

// remoteDataplane programs the dataplane process on socket, follows its
// restarts until ctx is done, and mirrors its metrics into this process's
// endpoint. The manager's own container holds no traffic: only the Go
// runtime's memory limit is set from it.
func remoteDataplane(ctx context.Context, log logr.Logger, socket string) (controllers.Dataplane, func() error) {
	daemon.SetMemoryLimit(log)
	client := control.NewClient(socket)
	remote := controllers.NewRemoteDataplane(client, log.WithName("dataplane"), controllers.RemoteOptions{})
	go remote.Run(ctx)
	ctrlmetrics.Registry.MustRegister(control.NewCollector(client, 5*time.Second, log.WithName("dataplane-metrics")), remote)
	log.Info("programming the dataplane process", "socket", socket)
	return remote, remote.Ready
}

// metricsOptions serves metrics as the flags say. Secure serving
// authenticates the caller's bearer token (TokenReview) and asks whether it
// may get /metrics (SubjectAccessReview; see metricsAuth), as Kubernetes'
// own components do, and speaks HTTP/1.1 only (HTTP/2's stream resets are
// a denial-of-service risk an endpoint this small does not need to take).
func metricsOptions(o managerOptions) metricsserver.Options {
	opt := metricsserver.Options{BindAddress: o.metricsBindAddress}
	if o.metricsSecure {
		opt.SecureServing = true
		opt.FilterProvider = metricsAuth
		opt.CertDir = o.metricsCertDir
		opt.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	}
	return opt
}
