package snapshot

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
)

// Validate checks the invariants the dataplane relies on and that the
// types alone cannot express: unique listener names, exactly one action per
// route, streams handed only to internal listeners, known protocols and
// modes, parseable addresses, no negative limits. Compile's output must pass
// it (the golden tests check), Decode refuses what fails it, and Apply keeps
// the previous configuration rather than serve a snapshot that fails it: a
// bug in a producer becomes an error, not a connection served wrongly.
func (s *Snapshot) Validate() error { return s.ValidateExcept(nil) }

// ValidateExcept is Validate that takes on trust the listeners checked
// (nil: none) reports true for: declarations that passed Validate in
// another snapshot, unchanged. Of those it checks only that the
// listeners they hand streams to are internal, which depends on the
// others. A dataplane that reuses what it compiled of a listener so
// checks what a snapshot changes, not all of it again (issue 19).
func (s *Snapshot) ValidateExcept(checked func(*Listener) bool) error {
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
		l := &s.Listeners[i]
		if checked != nil && checked(l) {
			for j := range l.Routes {
				if err := l.Routes[j].checkHandOff(internal); err != nil {
					return fmt.Errorf("listener %q: route %q: %w", l.Name, l.Routes[j].Name, err)
				}
			}
			continue
		}
		if err := l.check(internal); err != nil {
			return fmt.Errorf("listener %q: %w", l.Name, err)
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

// checkHandOff checks that the listener r hands streams to, if any, is
// internal. A listener that is missing is served as an error per
// connection (compile drops a TLS listener without a usable certificate
// and keeps the routes to it); a bound one cannot take streams.
func (r *Route) checkHandOff(internal map[string]bool) error {
	if r.Listener == "" {
		return nil
	}
	if !internal[r.Listener] {
		if _, bound := internal[r.Listener]; bound {
			return fmt.Errorf("listener %q binds a port; a route hands streams to internal listeners only", r.Listener)
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
		if err := r.checkHandOff(internal); err != nil {
			return err
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

// PatchValid returns s.Patch(d), or why the snapshot it makes fails
// Validate, given that s passes it: the dataplane checks a delta of one
// listener in the time one listener takes, not the snapshot's (issue
// 19). It checks the listeners d sets, and the whole snapshot when d
// makes an internal listener bind (a route left alone may hand it
// streams) or when s is not sorted by name. Removing one is no error: a
// route to a missing listener is served as an error per connection.
func (s *Snapshot) PatchValid(d *Delta) (*Snapshot, error) {
	next := s.Patch(d)
	byName := func(l Listener, name string) int { return cmp.Compare(l.Name, name) }
	find := func(ls []Listener, name string) *Listener {
		if i, ok := slices.BinarySearchFunc(ls, name, byName); ok {
			return &ls[i]
		}
		return nil
	}
	sorted := slices.IsSortedFunc(s.Listeners, func(a, b Listener) int { return cmp.Compare(a.Name, b.Name) })
	whole := !sorted
	set := make(map[string]bool, len(d.Set))
	for i := range d.Set {
		l := &d.Set[i]
		if old := find(s.Listeners, l.Name); old != nil && old.Internal() && !l.Internal() {
			whole = true
		}
		if l.Name == "" {
			return nil, fmt.Errorf("listener %d of the delta has no name", i)
		}
		if set[l.Name] {
			return nil, fmt.Errorf("listener %q is declared twice", l.Name)
		}
		set[l.Name] = true
	}
	if whole {
		if err := next.Validate(); err != nil {
			return nil, err
		}
		return next, nil
	}
	if next.MaxConnections < 0 {
		return nil, fmt.Errorf("maxConnections %d is negative", next.MaxConnections)
	}
	for i := range d.Set {
		l := &d.Set[i]
		// The listeners its routes hand streams to, as Validate's map
		// of every listener would say.
		internal := map[string]bool{}
		for _, r := range l.Routes {
			if r.Listener != "" {
				if to := find(next.Listeners, r.Listener); to != nil {
					internal[r.Listener] = to.Internal()
				}
			}
		}
		if err := l.check(internal); err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.Name, err)
		}
	}
	return next, nil
}
