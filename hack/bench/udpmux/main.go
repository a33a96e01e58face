// Command udpmux serves the UDP routes of muxload's contract with
// PortMux's dataplane, for hack/bench-udp.sh, until SIGTERM or SIGINT.
//
// It exists because `portmux serve -f` cannot yet declare a UDP listener
// (the API's listener protocol field is landing separately): it builds the
// snapshot that such a YAML would compile to and gives it to the same
// dataplane.NewServer and Apply that `portmux serve` runs, so the whole
// UDP path (relay, sniffing, sessions, metrics) is the one served in
// production. Once the API has the field, hack/bench-udp.sh should run
// `portmux serve -f hack/bench/peers/portmux-udp.yaml` instead.
//
//	udpmux -listen 127.0.0.1:17443 -dns 127.0.0.1:17011 -any 127.0.0.1:17012
//
// Routes: a session whose first datagram is a DNS query goes to -dns,
// any other to -any. The per-client caps are off: every benchmark session
// comes from 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:17443", "the UDP listener")
	dns := flag.String("dns", "127.0.0.1:17011", "backend of sessions that start with a DNS query")
	anyTo := flag.String("any", "127.0.0.1:17012", "backend of every other session")
	maxSessions := flag.Int("max-sessions", 20000, "sessions the listener holds at once")
	flag.Parse()
	if err := run(*listen, *dns, *anyTo, *maxSessions); err != nil {
		fmt.Fprintln(os.Stderr, "udpmux:", err)
		os.Exit(1)
	}
}

// benchSnapshot is the UDP listener of the contract.
func benchSnapshot(listen, dns, anyTo string, maxSessions int) *snapshot.Snapshot {
	return &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "bench/udp", Address: listen, Transport: snapshot.UDP,
		ProbeTimeout: 2 * time.Second, MaxConnections: maxSessions,
		Routes: []snapshot.Route{
			{Name: "dns", Match: snapshot.Match{Protocol: snapshot.DNS},
				Backend: &snapshot.Backend{Name: "udp-dns", Endpoints: []string{dns}}},
			{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any},
				Backend: &snapshot.Backend{Name: "udp-any", Endpoints: []string{anyTo}}},
		},
	}}}
}

func run(listen, dns, anyTo string, maxSessions int) error {
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, nil))
	srv := dataplane.NewServer(dataplane.Options{Log: log})
	if errs := srv.Apply(benchSnapshot(listen, dns, anyTo, maxSessions)); len(errs) > 0 {
		return fmt.Errorf("apply: %v", errs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
