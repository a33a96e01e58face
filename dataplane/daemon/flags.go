package daemon

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Flags are the settings of a dataplane, shared by every command that runs
// one: `portmux dataplane`, `portmux serve`, and `portmux manager` without
// --dataplane-socket.
type Flags struct {
	// BindAddress is the host the listeners bind (empty: every interface).
	BindAddress string
	// IdleTimeout is Options.IdleTimeout of the server.
	IdleTimeout time.Duration
	// ShutdownGrace is how long open connections may drain on SIGTERM.
	ShutdownGrace time.Duration
	// MaxConnections caps connections across listeners; 0: the budget
	// decides (NewServer sets it).
	MaxConnections int
	// LogConnections logs one line per connection.
	LogConnections bool
	// RelayLoops is Options.RelayLoops: a way back to goroutines per
	// connection, should the loops misbehave somewhere.
	RelayLoops int
}

// AddFlags registers the flags on fs, the bind address as bindFlag (the
// manager's is --dataplane-bind-address), and returns the names of the
// others: they configure a dataplane in this process.
func (f *Flags) AddFlags(fs *pflag.FlagSet, bindFlag string) (serverFlags []string) {
	fs.StringVar(&f.BindAddress, bindFlag, "", "host the dataplane's listeners bind (empty: every interface)")
	fs.DurationVar(&f.IdleTimeout, "idle-timeout", snapshot.DefaultIdleTimeout, "close forwarded connections and TCP tunnels idle this long in both directions, unless their route sets idleTimeout")
	fs.DurationVar(&f.ShutdownGrace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long open connections may drain")
	fs.IntVar(&f.MaxConnections, "max-connections", 0, "cap on connections across all listeners (0: derived from the container's memory limit and the open-file limit, see budget.PerConnection)")
	fs.BoolVar(&f.LogConnections, "log-connections", true, "log one line per connection")
	fs.IntVar(&f.RelayLoops, "relay-loops", 0, "epoll loops that accept TCP connections and forward tcp-mode routes without a goroutine per connection (Linux; 0: one per core, -1: none, every connection on goroutines)")
	return []string{"idle-timeout", "shutdown-grace", "max-connections", "log-connections", "relay-loops"}
}

// NewServer sizes the process to its container (ApplyBudget; MaxConnections
// is set to the cap it decides when it is 0) and returns a dataplane with
// these settings, its metrics registered on reg.
func (f *Flags) NewServer(log logr.Logger, reg prometheus.Registerer) *dataplane.Server {
	f.MaxConnections = ApplyBudget(log, f.MaxConnections)
	return dataplane.NewServer(dataplane.Options{
		Log:            log.WithName("dataplane"),
		Metrics:        dataplane.NewMetrics(reg),
		IdleTimeout:    f.IdleTimeout,
		LogConnections: f.LogConnections,
		RelayLoops:     f.RelayLoops,
	})
}

// Drain stops srv accepting and gives open connections ShutdownGrace to
// finish before it closes the rest.
func (f *Flags) Drain(log logr.Logger, srv *dataplane.Server) {
	log.Info("shutting down; draining connections", "grace", f.ShutdownGrace)
	ctx, cancel := context.WithTimeout(context.Background(), f.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Info("grace period over; closed remaining connections")
	}
}
