package snapshottest

import (
	"fmt"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// Tenants is the snapshot of a cluster with many tenants, for benchmarks:
// n PortMuxes on one port at address, each with a TLS-terminating
// listener (one certificate with a key of kind), an SNI passthrough
// route and a tunnel, over Services of 10 endpoints; and one SSH route.
func Tenants(b testing.TB, n int, kind, address string) *snapshot.Snapshot {
	b.Helper()
	ca := peers.KeyPair(b, "ecdsa", nil, "ca.example")
	pub := snapshot.Listener{Name: "edge/public", Address: address, ProbeTimeout: 3 * time.Second, MaxProbeBytes: 16 << 10, MaxConnections: 10000}
	s := &snapshot.Snapshot{}
	endpoints := func(i int) []string {
		var eps []string
		for j := range 10 {
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d:8443", i/250, i%250, j))
		}
		return eps
	}
	for i := range n {
		ns := fmt.Sprintf("tenant-%d", i)
		host := ns + ".example.com"
		backend := snapshot.Backend{Name: ns + "/svc:443", Endpoints: endpoints(i), Mode: snapshot.ModeTCP, DialTimeout: 5 * time.Second}
		internal := ns + "/edge/tls"
		pub.Routes = append(pub.Routes,
			snapshot.Route{Name: ns + "/edge/pass", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"pass." + host}}, Backend: &backend},
			snapshot.Route{Name: ns + "/edge/unwrap", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{host}}, Listener: internal})
		s.Listeners = append(s.Listeners, snapshot.Listener{
			Name: internal, ProbeTimeout: 3 * time.Second, MaxProbeBytes: 16 << 10,
			TLS: &snapshot.TLSConfig{Certificates: []snapshot.Certificate{{Source: "secret/" + ns, Certificate: peers.KeyPair(b, kind, ca, host)}}},
			Routes: []snapshot.Route{{Name: ns + "/edge/tunnel", Match: snapshot.Match{Protocol: snapshot.WebSocket, PathPrefix: "/tunnel"},
				Tunnel: &snapshot.Tunnel{Token: []byte("0123456789abcdef0123456789abcdef"), Allow: []snapshot.TunnelTarget{{Names: []string{"svc:443"}, Backend: backend}}}}},
		})
	}
	pub.Routes = append(pub.Routes, snapshot.Route{Name: "edge/edge/ssh", Match: snapshot.Match{Protocol: snapshot.SSH},
		Backend: &snapshot.Backend{Name: "edge/sshd:22", Endpoints: endpoints(n)}})
	s.Listeners = append([]snapshot.Listener{pub}, s.Listeners...)
	return s
}
