package udp

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/dataplane/clientlimit"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// listenerConfig is a UDP listener of a snapshot made ready to serve:
// endpoints parsed, timeouts and metric children resolved. Immutable; a
// session keeps the one it started with.
type listenerConfig struct {
	*snapshot.Listener
	routes       []routeConfig
	probeTimeout time.Duration
	maxProbe     int
	clientLimits clientlimit.Limits
	quic         bool // some route matches QUIC
	drops        map[string]prometheus.Counter
	sessions     prometheus.Gauge
}

type routeConfig struct {
	*snapshot.Route
	lc        *listenerConfig
	endpoints []netip.AddrPort
	// idle is the session idle timeout: the route's, or its protocol's
	// default (snapshot.DefaultUDPIdleTimeout).
	idle                 time.Duration
	upBytes, downBytes   prometheus.Counter
	upDgrams, downDgrams prometheus.Counter
}

// resolveTimeout bounds the lookup of an endpoint given by name, done once
// per snapshot, never per session.
const resolveTimeout = 2 * time.Second

func newListenerConfig(l *snapshot.Listener, m *Metrics) (*listenerConfig, error) {
	lc := &listenerConfig{
		Listener:     l,
		probeTimeout: cmp.Or(l.ProbeTimeout, snapshot.DefaultProbeTimeout),
		maxProbe:     cmp.Or(l.MaxProbeBytes, snapshot.DefaultMaxProbeBytes),
		clientLimits: clientlimit.Limits{MaxConnections: l.MaxConnectionsPerClient, Rate: l.MaxConnectionRatePerClient},
		drops:        map[string]prometheus.Counter{},
		sessions:     m.sessions.WithLabelValues(l.Name),
	}
	for _, r := range []string{DropShortInitial, DropNoRoute, DropSessionLimit, DropClientLimit, DropProbeOverflow, DropBackendWrite, DropClientWrite, DropEnded} {
		lc.drops[r] = m.drops.WithLabelValues(l.Name, r)
	}
	for i := range l.Routes {
		r := &l.Routes[i]
		if r.Backend == nil {
			return nil, fmt.Errorf("route %q: a UDP route forwards to a backend", r.Name)
		}
		rc := routeConfig{
			Route:      r,
			lc:         lc,
			idle:       cmp.Or(r.IdleTimeout, snapshot.DefaultUDPIdleTimeout(r.Match.Protocol)),
			upBytes:    m.bytes.WithLabelValues(l.Name, r.Name, "up"),
			downBytes:  m.bytes.WithLabelValues(l.Name, r.Name, "down"),
			upDgrams:   m.datagrams.WithLabelValues(l.Name, r.Name, "up"),
			downDgrams: m.datagrams.WithLabelValues(l.Name, r.Name, "down"),
		}
		for _, e := range r.Backend.Endpoints {
			aps, err := resolve(e)
			if err != nil {
				return nil, fmt.Errorf("route %q: endpoint %s: %w", r.Name, e, err)
			}
			rc.endpoints = append(rc.endpoints, aps...)
		}
		if r.Match.Protocol == snapshot.QUIC {
			lc.quic = true
		}
		lc.routes = append(lc.routes, rc)
	}
	return lc, nil
}

// resolve parses host:port, looking a name up when it is not an address.
func resolve(hostport string) ([]netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return []netip.AddrPort{ap}, nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, err
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(p)))
	}
	return out, nil
}
