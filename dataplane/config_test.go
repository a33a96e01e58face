package dataplane

import (
	"net"
	"net/netip"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

func TestClientSpeaksFirst(t *testing.T) {
	route := func(p snapshot.Protocol) snapshot.Route { return snapshot.Route{Match: snapshot.Match{Protocol: p}} }
	cases := []struct {
		name string
		l    snapshot.Listener
		want bool
	}{
		{"ssh and tls", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.SSH), route(snapshot.TLS)}}, true},
		{"any as fallback", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.SSH), route(snapshot.Any)}}, true},
		{"any first", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.Any)}}, false},
		{"timeout route", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.SSH), route(snapshot.Timeout)}}, false},
		{"no routes", snapshot.Listener{}, true},
		{"PROXY header first", snapshot.Listener{ProxyProtocol: &snapshot.ProxyProtocol{}, Routes: []snapshot.Route{route(snapshot.Timeout)}}, true},
		{"TLS terminated", snapshot.Listener{TLS: &snapshot.TLSConfig{}, Routes: []snapshot.Route{route(snapshot.Any)}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientSpeaksFirst(&tc.l); got != tc.want {
				t.Errorf("clientSpeaksFirst = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestListenerTrusted(t *testing.T) {
	trusting := func(cidrs ...string) *listenerConfig {
		pp := &snapshot.ProxyProtocol{}
		for _, c := range cidrs {
			pp.TrustedCIDRs = append(pp.TrustedCIDRs, netip.MustParsePrefix(c))
		}
		return &listenerConfig{Listener: &snapshot.Listener{ProxyProtocol: pp}}
	}
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000} }
	for _, tc := range []struct {
		name string
		lc   *listenerConfig
		peer net.Addr
		want bool
	}{
		{"no PROXY header: anyone", &listenerConfig{Listener: &snapshot.Listener{}}, tcp("203.0.113.9"), true},
		{"IPv4 inside", trusting("10.0.0.0/8"), tcp("10.1.2.3"), true},
		{"IPv4 outside", trusting("10.0.0.0/8"), tcp("11.1.2.3"), false},
		{"IPv4-mapped IPv6 inside an IPv4 network", trusting("10.0.0.0/8"), &net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3").To16()}, true},
		{"IPv4-mapped IPv6 outside", trusting("10.0.0.0/8"), &net.TCPAddr{IP: net.ParseIP("::ffff:11.1.2.3").To16()}, false},
		{"IPv4-mapped IPv6 is not in ::/0", trusting("::/0"), &net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3").To16()}, false},
		{"IPv6 inside", trusting("10.0.0.0/8", "2001:db8::/32"), tcp("2001:db8::7"), true},
		{"IPv6 with a zone", trusting("fe80::/10"), &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, true},
		{"IPv6 outside", trusting("2001:db8::/32"), tcp("2001:db9::7"), false},
		{"IPv6 is not in 0.0.0.0/0", trusting("0.0.0.0/0"), tcp("2001:db8::7"), false},
		{"everyone, written out", trusting("0.0.0.0/0", "::/0"), tcp("2001:db8::7"), true},
		{"no trusted network", trusting(), tcp("10.1.2.3"), false},
		{"not a TCP peer", trusting("0.0.0.0/0", "::/0"), &net.UnixAddr{Name: "/run/x", Net: "unix"}, false},
		{"no peer address", trusting("0.0.0.0/0", "::/0"), &net.TCPAddr{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.lc.trusted(addrPortOf(tc.peer).Addr()); got != tc.want {
				t.Errorf("trusted(%v) = %v, want %v", tc.peer, got, tc.want)
			}
		})
	}
}
