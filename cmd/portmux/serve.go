package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/daemon"
)

type serveOptions struct {
	files       []string
	dp          daemon.Flags
	metricsAddr string
	pprofAddr   string
	watch       bool
	// settle is how long changed files must stay unchanged before they
	// are applied; zero means defaultSettle.
	settle time.Duration
	// afterFirstRead, when set, runs once the files have been read at
	// start: tests change them there.
	afterFirstRead func()
}

func newServeCommand() *cobra.Command {
	o := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve -f FILE [-f FILE...]",
		Short: "Serve PortMux YAML files without a cluster",
		Long: `Serve runs the dataplane from PortMux documents (and kind: Secret documents
for certificates and tunnel tokens) read from files, with address backends.
It reloads on SIGHUP and when a file changes; open connections are never cut.
A changed file is applied once the files have stayed unchanged for a second:
write them elsewhere and rename them into place to have them applied whole.
A reload applies only files that parse and validate completely; otherwise
the previous configuration keeps serving.`,
		Args: cobra.NoArgs,
	}
	newLog := logFlags(cmd)
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "file", "f", nil, "PortMux/Secret YAML file (repeatable)")
	o.dp.AddFlags(f, "bind-address")
	f.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. :9090 (empty: off)")
	f.StringVar(&o.pprofAddr, "pprof-addr", "", "serve Go's pprof profiles on this address, e.g. 127.0.0.1:6060 (empty: off)")
	f.BoolVar(&o.watch, "watch", true, "reload when a file changes")
	_ = cmd.MarkFlagRequired("file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runServe(cmd.Context(), newLog(), o)
	}
	return cmd
}

// compileFiles compiles the files' contents (nil: reads them now). Invalid
// PortMuxes are errors; unresolved references are warnings that leave the
// rest served.
func compileFiles(log logr.Logger, o serveOptions, files []fileData, lastGood map[types.NamespacedName]*corev1.Secret) (*compile.Output, error) {
	if files == nil {
		var err error
		if files, err = readFiles(o.files); err != nil {
			return nil, err
		}
	}
	in, err := loadFiles(files)
	if err != nil {
		return nil, err
	}
	in.BindAddress = o.dp.BindAddress
	in.AllowAddressBackends = true
	in.LastGoodSecrets = lastGood
	in.MaxConnections = o.dp.MaxConnections
	out := compile.Compile(in)
	var invalid []string
	keys := make([]string, 0, len(out.Results))
	for k := range out.Results {
		keys = append(keys, k.String())
	}
	sort.Strings(keys)
	for k, r := range out.Results {
		name := strings.TrimPrefix(k.String(), "/")
		for _, e := range r.Invalid {
			invalid = append(invalid, fmt.Sprintf("PortMux %s: %s", name, e))
		}
		for _, f := range r.Refs {
			log.Info("unresolved reference", "portmux", name, "reason", f.Reason, "message", f.Message)
		}
		for _, l := range r.Listeners {
			if l.Conflict != "" {
				log.Info("listener not served: port held by another PortMux", "portmux", name, "listener", l.Name, "holder", l.Conflict)
			}
		}
	}
	if len(invalid) > 0 {
		sort.Strings(invalid)
		return nil, errors.New(strings.Join(invalid, "\n"))
	}
	return out, nil
}

func runServe(ctx context.Context, log logr.Logger, o serveOptions) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := o.dp.NewServer(log, reg)

	// The watch starts before the files are first read, so that a change
	// made while serve starts is seen: at worst it is read twice.
	reload := newReloads()
	if o.watch {
		stop, err := watchFiles(log, o.files, cmp.Or(o.settle, defaultSettle), reload)
		if err != nil {
			log.Error(err, "cannot watch files; reload with SIGHUP")
		} else {
			defer stop()
		}
	}
	out, err := compileFiles(log, o, nil, nil)
	if err != nil {
		return err
	}
	if o.afterFirstRead != nil {
		o.afterFirstRead()
	}
	lastGood := out.GoodSecrets
	if errs := srv.Apply(out.Snapshot); len(errs) > 0 {
		_ = srv.Shutdown(context.Background())
		return fmt.Errorf("cannot bind: %w", joinMap(errs))
	}

	if o.metricsAddr != "" {
		ms := &http.Server{Addr: o.metricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ms.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "metrics server stopped")
			}
		}()
		defer func() { _ = ms.Close() }()
	}

	if o.pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ps := &http.Server{Addr: o.pprofAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ps.ListenAndServe() }()
		defer func() { _ = ps.Close() }()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				reload.put(reloadRequest{why: "SIGHUP"}) // at once, read then
			case <-ctx.Done():
				return
			}
		}
	}()
	log.Info("serving", "files", o.files)
	for {
		select {
		case <-ctx.Done():
			o.dp.Drain(log, srv)
			return nil
		case <-reload.ready:
			if req, ok := reload.take(); ok {
				lastGood = applyReload(log, o, srv, req, lastGood)
			}
		}
	}
}

// applyReload serves the configuration a reload request names, if it
// compiles, and returns the certificate Secrets served from then on. A
// configuration that does not load or validate completely is not applied:
// the previous one keeps serving.
func applyReload(log logr.Logger, o serveOptions, srv *dataplane.Server, req reloadRequest, lastGood map[types.NamespacedName]*corev1.Secret) map[types.NamespacedName]*corev1.Secret {
	err := req.err
	var out *compile.Output
	if err == nil {
		out, err = compileFiles(log, o, req.files, lastGood)
	}
	if err != nil {
		log.Error(err, "reload failed; still serving the previous configuration", "trigger", req.why)
		return lastGood
	}
	if errs := srv.Apply(out.Snapshot); len(errs) > 0 {
		log.Error(joinMap(errs), "reloaded with listeners that cannot bind", "trigger", req.why)
		return out.GoodSecrets
	}
	log.Info("reloaded", "trigger", req.why)
	return out.GoodSecrets
}

func joinMap(errs map[string]error) error {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var all []error
	for _, k := range keys {
		all = append(all, fmt.Errorf("listener %s: %w", k, errs[k]))
	}
	return errors.Join(all...)
}
