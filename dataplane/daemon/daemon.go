// Package daemon is `portmux dataplane`: the dataplane as a process of its
// own, programmed by a manager over a control socket (package control), and
// the dataplane settings every command that runs one shares (Flags).
//
// The process that parses bytes from the internet holds no Kubernetes
// client and no credentials: in the pod it runs in a container without a
// service account token, and gets from the manager the snapshots it
// serves, which hold only the certificates and tokens PortMuxes name. This
// package must never import a Kubernetes package; TestImportsNoKubernetes
// and depguard (.golangci.yml) check it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// DefaultSocket is where the pod's two containers meet: an emptyDir both
// mount at /run/portmux.
const DefaultSocket = "/run/portmux/dataplane.sock"

// Options configure Run.
type Options struct {
	Flags
	// Socket is the control socket's path.
	Socket string
}

// NewCommand returns `portmux dataplane` and its probe subcommand.
// logFlags adds the logging flags all portmux commands share and returns
// the logger they describe; it is given, not imported, so that this
// package stays free of Kubernetes packages (the logger is
// controller-runtime's zap, which links no client).
func NewCommand(logFlags func(*cobra.Command) func() logr.Logger) *cobra.Command {
	var o Options
	cmd := &cobra.Command{
		Use:   "dataplane --socket PATH",
		Short: "Run the dataplane alone, programmed by `portmux manager` over a Unix socket",
		Long: `Dataplane serves PortMux listeners from the snapshots a manager sends it on
a Unix socket (portmux manager --dataplane-socket PATH). It holds no
Kubernetes client and needs no credentials: in the pod it runs in its own
container, without a service account token, next to the manager's.

Until the first snapshot arrives it binds nothing and is not ready. It keeps
serving its last snapshot while no manager is there, and drains on SIGTERM.
Besides its listeners it binds no port: its metrics, health and readiness
are served on the socket (see "portmux dataplane probe").`,
		Args: cobra.NoArgs,
	}
	newLog := logFlags(cmd)
	cmd.PersistentFlags().StringVar(&o.Socket, "socket", DefaultSocket, "path of the control socket (created with mode 0600; a stale one is replaced)")
	o.AddFlags(cmd.Flags(), "bind-address")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return Run(cmd.Context(), newLog(), o)
	}
	cmd.AddCommand(newProbeCommand(&o.Socket))
	return cmd
}

// newProbeCommand is the dataplane container's exec probe: it asks the
// dataplane on the socket whether it lives (or, with --ready, serves a
// snapshot), so that the dataplane needs no TCP port for probes.
func newProbeCommand(socket *string) *cobra.Command {
	var ready bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe [--ready]",
		Short: "Exit 0 when the dataplane on the socket is alive (--ready: has a snapshot to serve)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return control.NewClient(*socket).Probe(ctx, ready)
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "check readiness (a snapshot applied) instead of liveness")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

// Run serves the control socket and the snapshots it receives until ctx
// is done, then drains.
func Run(ctx context.Context, log logr.Logger, o Options) error {
	ln, err := control.Listen(o.Socket)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := o.NewServer(log, reg)
	h := control.NewHandler(&adjusted{srv: srv, bindHost: o.BindAddress, maxConnections: o.MaxConnections}, reg, log.WithName("control"))
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info("waiting for snapshots", "socket", o.Socket)

	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("control socket %s: %w", o.Socket, err)
	}
	// Probes and metrics keep answering while connections drain; no
	// snapshot applies any more.
	h.Stopping()
	o.Drain(log, srv)
	if cerr := hs.Close(); cerr != nil && !errors.Is(cerr, http.ErrServerClosed) && err == nil {
		err = cerr
	}
	return err
}

// adjusted applies a snapshot with this process's own settings: the cap
// on connections its budget allows (the manager cannot know the
// dataplane container's memory) and, when set, the host to bind.
type adjusted struct {
	srv            *dataplane.Server
	bindHost       string
	maxConnections int
}

func (a *adjusted) Apply(s *snapshot.Snapshot) map[string]error {
	s.MaxConnections = a.maxConnections
	if a.bindHost != "" {
		for i := range s.Listeners {
			l := &s.Listeners[i]
			if _, port, err := net.SplitHostPort(l.Address); err == nil && l.Address != "" {
				l.Address = net.JoinHostPort(a.bindHost, port)
			}
		}
	}
	return a.srv.Apply(s)
}
