package snapshottest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// KeyPair returns a certificate for names with a new key of the given
// kind (ecdsa, ed25519, or rsa: one shared key, slow to make), signed by
// parent (nil: self-signed), with Leaf set as compile sets it. The chain
// holds the leaf, then parent's chain.
func KeyPair(t testing.TB, kind string, parent *tls.Certificate, names ...string) *tls.Certificate {
	t.Helper()
	var key crypto.Signer
	var err error
	switch kind {
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		key = rsaKey(t)
	default:
		t.Fatalf("key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IsCA:         parent == nil, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	issuer, signer := tmpl, key
	var chain [][]byte
	if parent != nil {
		issuer, signer, chain = parent.Leaf, parent.PrivateKey.(crypto.Signer), parent.Certificate
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: append([][]byte{der}, chain...), PrivateKey: key, Leaf: leaf}
}

var (
	rsaOnce sync.Once
	rsaPriv *rsa.PrivateKey
)

// rsaKey is one RSA key for every RSA certificate of the tests: generating
// one takes a good part of a second, parsing it is what is measured.
func rsaKey(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		var err error
		if rsaPriv, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
	})
	return rsaPriv
}

// Tenants is the snapshot of a cluster with many tenants, for benchmarks:
// n PortMuxes on one port at address, each with a TLS-terminating
// listener (one certificate with a key of kind), an SNI passthrough
// route and a tunnel, over Services of 10 endpoints; and one SSH route.
func Tenants(b testing.TB, n int, kind, address string) *snapshot.Snapshot {
	b.Helper()
	ca := KeyPair(b, "ecdsa", nil, "ca.example")
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
			TLS: &snapshot.TLSConfig{Certificates: []snapshot.Certificate{{Source: "secret/" + ns, Certificate: KeyPair(b, kind, ca, host)}}},
			Routes: []snapshot.Route{{Name: ns + "/edge/tunnel", Match: snapshot.Match{Protocol: snapshot.WebSocket, PathPrefix: "/tunnel"},
				Tunnel: &snapshot.Tunnel{Token: []byte("0123456789abcdef0123456789abcdef"), Allow: []snapshot.TunnelTarget{{Names: []string{"svc:443"}, Backend: backend}}}}},
		})
	}
	pub.Routes = append(pub.Routes, snapshot.Route{Name: "edge/edge/ssh", Match: snapshot.Match{Protocol: snapshot.SSH},
		Backend: &snapshot.Backend{Name: "edge/sshd:22", Endpoints: endpoints(n)}})
	s.Listeners = append([]snapshot.Listener{pub}, s.Listeners...)
	return s
}
