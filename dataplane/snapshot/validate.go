package snapshot

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Validate checks the invariants the dataplane relies on and that the
// types alone cannot express: unique listener names, exactly one action per
// route, streams handed only to internal listeners, known protocols and
// modes, parseable addresses, no negative limits. Compile's output must pass
// it (the golden tests check), Decode refuses what fails it, and Apply keeps
// the previous configuration rather than serve a snapshot that fails it: a
// bug in a producer becomes an error, not a connection served wrongly.
func (s *Snapshot) Validate() error {
	if s.MaxConnections < 0 {
		return fmt.Errorf("maxConnections %d is negative", s.MaxConnections)
	}
	internal := map[string]bool{}
	for i := range s.Listeners {
		l := &s.Listeners[i]
		if l.Name == "" {
			return fmt.Errorf("listener %d has no name", i)
		}
		if _, dup := internal[l.Name]; dup {
			return fmt.Errorf("listener %q is declared twice", l.Name)
		}
		internal[l.Name] = l.Internal()
	}
	for i := range s.Listeners {
		if err := s.Listeners[i].check(internal); err != nil {
			return fmt.Errorf("listener %q: %w", s.Listeners[i].Name, err)
		}
	}
	return nil
}

func (l *Listener) check(internal map[string]bool) error {
	switch l.Transport {
	case "", TCP:
		for i := range l.Routes {
			if p := l.Routes[i].Match.Protocol; p.known() && !p.FitsTransport(TCP) {
				return fmt.Errorf("route %q: protocol %s is recognised in datagrams only", l.Routes[i].Name, p)
			}
		}
	case UDP:
		if err := l.checkUDP(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown transport %q", l.Transport)
	}
	if l.Address != "" {
		_, port, err := net.SplitHostPort(l.Address)
		if err != nil {
			return fmt.Errorf("address: %w", err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("address %q: port: %w", l.Address, err)
		} else if n == 0 && port != "0" {
			return fmt.Errorf("address %q: port %q", l.Address, port)
		}
	}
	for _, n := range []struct {
		what string
		v    int64
	}{
		{"probeTimeout", int64(l.ProbeTimeout)},
		{"maxProbeBytes", int64(l.MaxProbeBytes)},
		{"maxConnections", int64(l.MaxConnections)},
		{"maxConnectionsPerClient", int64(l.MaxConnectionsPerClient)},
		{"maxConnectionRatePerClient", int64(l.MaxConnectionRatePerClient)},
	} {
		if n.v < 0 {
			return fmt.Errorf("%s %d is negative", n.what, n.v)
		}
	}
	if l.ProxyProtocol != nil {
		for _, p := range l.ProxyProtocol.TrustedCIDRs {
			if !p.IsValid() {
				return errors.New("proxyProtocol: an invalid trusted CIDR")
			}
		}
	}
	if l.TLS != nil && len(l.TLS.Certificates) == 0 {
		return errors.New("tls: no certificate")
	}
	for i := range l.Routes {
		if err := l.Routes[i].check(internal); err != nil {
			return fmt.Errorf("route %q: %w", l.Routes[i].Name, err)
		}
	}
	return nil
}

// checkUDP refuses what a datagram listener cannot do.
func (l *Listener) checkUDP() error {
	if l.Internal() {
		return errors.New("a UDP listener needs an address: internal listeners take streams")
	}
	if l.TLS != nil {
		return errors.New("a UDP listener cannot terminate TLS")
	}
	if l.ProxyProtocol != nil {
		return errors.New("a UDP listener cannot read PROXY headers")
	}
	for i := range l.Routes {
		r := &l.Routes[i]
		if !r.Match.Protocol.FitsTransport(UDP) {
			return fmt.Errorf("route %q: protocol %s cannot be recognised in datagrams", r.Name, r.Match.Protocol)
		}
		if r.Backend == nil {
			return fmt.Errorf("route %q: a UDP listener's routes forward to a backend", r.Name)
		}
	}
	return nil
}

func (r *Route) check(internal map[string]bool) error {
	if !r.Match.Protocol.known() {
		return fmt.Errorf("unknown protocol %q", r.Match.Protocol)
	}
	if r.IdleTimeout < 0 {
		return fmt.Errorf("idleTimeout %s is negative", r.IdleTimeout)
	}
	actions := 0
	if r.Backend != nil {
		actions++
		if err := r.Backend.check(); err != nil {
			return fmt.Errorf("backend %s: %w", r.Backend.Name, err)
		}
	}
	if r.Listener != "" {
		actions++
		// A listener that is missing is served as an error per connection
		// (compile drops a TLS listener without a usable certificate and
		// keeps the routes to it); a bound one cannot take streams.
		if !internal[r.Listener] {
			if _, bound := internal[r.Listener]; bound {
				return fmt.Errorf("listener %q binds a port; a route hands streams to internal listeners only", r.Listener)
			}
		}
	}
	if r.Tunnel != nil {
		actions++
		for _, t := range r.Tunnel.Allow {
			if err := t.Backend.check(); err != nil {
				return fmt.Errorf("tunnel target %s: %w", t.Backend.Name, err)
			}
		}
	}
	if actions != 1 {
		return fmt.Errorf("%d actions (backend, listener, tunnel); want exactly one", actions)
	}
	return nil
}

func (b *Backend) check() error {
	switch b.Mode {
	case "", ModeTCP, ModeHTTP:
	default:
		return fmt.Errorf("unknown mode %q", b.Mode)
	}
	if b.ProxyProtocol < 0 || b.ProxyProtocol > 2 {
		return fmt.Errorf("proxyProtocol version %d", b.ProxyProtocol)
	}
	if b.DialTimeout < 0 {
		return fmt.Errorf("dialTimeout %s is negative", b.DialTimeout)
	}
	return nil
}

// known reports whether p is one of the protocols the dataplane sniffs.
func (p Protocol) known() bool {
	switch p {
	case SSH, TLS, HTTP, WebSocket, OpenVPN, SOCKS5, Bytes, Any, Timeout, QUIC, WireGuard, DNS:
		return true
	}
	return false
}
