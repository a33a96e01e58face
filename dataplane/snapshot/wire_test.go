package snapshot_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/snapshot/snapshottest"
	"github.com/portmux/portmux/test/peers"
)

var (
	richOnce sync.Once
	richCA   *tls.Certificate
	richRSA  *tls.Certificate
)

// richSnapshot sets every field of every snapshot type somewhere (see
// TestWireCoversEveryField), with each kind of key a Secret can hold.
// kinds selects the certificates' keys: the fuzz seeds leave RSA out,
// whose keys are slow to parse.
func richSnapshot(t testing.TB, kinds ...string) *snapshot.Snapshot {
	t.Helper()
	richOnce.Do(func() {
		richCA = peers.KeyPair(t, "ecdsa", nil, "ca.example")
		richRSA = peers.KeyPair(t, "rsa", richCA, "rsa.example.com")
	})
	var certs []snapshot.Certificate
	for _, k := range kinds {
		c := richRSA
		if k != "rsa" {
			c = peers.KeyPair(t, k, richCA, k+".example.com", "*."+k+".example.com")
		}
		certs = append(certs, snapshot.Certificate{Source: "secret/" + k, Certificate: c})
	}
	ssh := snapshot.Backend{
		Name: "ns/sshd:22", Endpoints: []string{"10.0.0.1:22", "[2001:db8::1]:22"},
		Mode: snapshot.ModeTCP, ProxyProtocol: 2, DialTimeout: 5 * time.Second,
	}
	return &snapshot.Snapshot{
		MaxConnections: 9000,
		Listeners: []snapshot.Listener{{
			Name: "ns/edge/public", Address: "0.0.0.0:443",
			ProbeTimeout: 3 * time.Second, MaxProbeBytes: 16 << 10, MaxConnections: 10000,
			MaxConnectionsPerClient: 512, MaxConnectionRatePerClient: 64,
			ProxyProtocol: &snapshot.ProxyProtocol{TrustedCIDRs: []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"),
			}},
			Routes: []snapshot.Route{
				{Name: "ns/edge/ssh", Match: snapshot.Match{Protocol: snapshot.SSH}, IdleTimeout: time.Hour, Backend: &ssh},
				{Name: "ns/edge/unwrap", Match: snapshot.Match{
					Protocol: snapshot.TLS, SNI: []string{"www.example.com", "*.example.org"}, ALPN: []string{"h2", "http/1.1"},
				}, Listener: "ns/edge/unwrapped"},
				{Name: "ns/edge/bytes", Match: snapshot.Match{
					Protocol: snapshot.Bytes, Prefix: []byte{0, 1, 'x', 0xff}, Regex: regexp.MustCompile(`^(?i)hello\s+[a-z]+\x00`),
				}, Backend: &snapshot.Backend{Name: "10.0.0.9:7", Endpoints: []string{"10.0.0.9:7"}}},
			},
		}, {
			Name: "ns/edge/unwrapped",
			TLS:  &snapshot.TLSConfig{Certificates: certs, ALPN: []string{"http/1.1"}},
			Routes: []snapshot.Route{
				{Name: "ns/edge/web", Match: snapshot.Match{
					Protocol: snapshot.HTTP, Host: []string{"www.example.com"}, PathPrefix: "/app",
				}, Backend: &snapshot.Backend{Name: "ns/web:80", Endpoints: []string{"10.0.0.2:8080"}, Mode: snapshot.ModeHTTP, ProxyProtocol: 1}},
				{Name: "ns/edge/tunnel", Match: snapshot.Match{Protocol: snapshot.WebSocket, PathPrefix: "/tunnel"}, IdleTimeout: time.Minute,
					Tunnel: &snapshot.Tunnel{
						Token:          []byte("s3cret\x00token"),
						AllowedOrigins: []string{"https://app.example.com"},
						Allow: []snapshot.TunnelTarget{
							{Names: []string{"sshd:22", "sshd:ssh"}, Backend: ssh},
							{Names: []string{"dns:53"}, UDP: true, Backend: snapshot.Backend{Name: "ns/dns:53", Endpoints: []string{"10.0.0.3:53"}}},
						},
					}},
			},
		}, {
			Name: "ns/edge/public-udp", Address: "0.0.0.0:443", Transport: snapshot.UDP,
			ProbeTimeout: time.Second, MaxProbeBytes: 4 << 10, MaxConnections: 20000,
			Routes: []snapshot.Route{
				{Name: "ns/edge/h3", Match: snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"www.example.com"}, ALPN: []string{"h3"}},
					Backend: &snapshot.Backend{Name: "ns/web:443", Endpoints: []string{"10.0.0.2:8443"}}},
				{Name: "ns/edge/wg", Match: snapshot.Match{Protocol: snapshot.WireGuard}, IdleTimeout: 3 * time.Minute,
					Backend: &snapshot.Backend{Name: "ns/wg:51820", Endpoints: []string{"10.0.0.4:51820"}}},
			},
		}, {
			Name: "ns/other/empty-lists", Address: "127.0.0.1:0", Transport: snapshot.TCP,
			ProxyProtocol: &snapshot.ProxyProtocol{TrustedCIDRs: []netip.Prefix{}},
			Routes: []snapshot.Route{{Name: "ns/other/any", Match: snapshot.Match{Protocol: snapshot.Any, SNI: []string{}, Prefix: []byte{}},
				Backend: &snapshot.Backend{Name: "ns/none:1", Endpoints: []string{}}}},
		}},
	}
}

// The wire format carries every field: a rich snapshot comes back
// DeepEqual (nil and empty lists kept apart), with key pairs equal by
// their DER and the leaf parsed again, and regexps compiled again from
// their source.
func TestWireRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		snap *snapshot.Snapshot
	}{
		{"empty", &snapshot.Snapshot{}},
		{"no listeners, a global cap", &snapshot.Snapshot{MaxConnections: 7, Listeners: []snapshot.Listener{}}},
		{"rich", richSnapshot(t, "ecdsa", "ed25519", "rsa")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire, err := snapshot.Encode(tc.snap)
			if err != nil {
				t.Fatal(err)
			}
			got, err := snapshot.Decode(wire)
			if err != nil {
				t.Fatalf("Decode(Encode(snap)): %v", err)
			}
			if err := snapshottest.Equal(tc.snap, got); err != nil {
				t.Error(err)
			}
		})
	}
}

// richSnapshot sets every field of every type in package snapshot at least
// once, so that the round trip covers fields added later: a new field
// fails this test until richSnapshot sets it, and then the round trip
// shows whether the wire format carries it.
func TestWireCoversEveryField(t *testing.T) {
	set := map[string]bool{}
	markSet(reflect.ValueOf(richSnapshot(t, "ecdsa", "ed25519", "rsa")).Elem(), set)
	for _, f := range snapshotFields(reflect.TypeFor[snapshot.Snapshot](), map[reflect.Type]bool{}) {
		if !set[f] {
			t.Errorf("no value in richSnapshot sets %s: set it there, so the round trip covers it", f)
		}
	}
}

// snapshotFields lists Type.Field for every field of the snapshot package's
// struct types reachable from t.
func snapshotFields(t reflect.Type, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() != reflect.TypeFor[snapshot.Snapshot]().PkgPath() {
		return nil
	}
	seen[t] = true
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		out = append(out, t.Name()+"."+f.Name)
		out = append(out, snapshotFields(f.Type, seen)...)
	}
	return out
}

// markSet records Type.Field for every non-zero field under v.
func markSet(v reflect.Value, set map[string]bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			markSet(v.Elem(), set)
		}
	case reflect.Slice:
		for i := range v.Len() {
			markSet(v.Index(i), set)
		}
	case reflect.Struct:
		t := v.Type()
		if t.PkgPath() != reflect.TypeFor[snapshot.Snapshot]().PkgPath() {
			return
		}
		for i := range t.NumField() {
			if !v.Field(i).IsZero() {
				set[t.Name()+"."+t.Field(i).Name] = true
				markSet(v.Field(i), set)
			}
		}
	}
}

// Decode refuses what the dataplane must not serve, each with a message
// that names the problem.
func TestDecodeRefuses(t *testing.T) {
	good, err := snapshot.Encode(richSnapshot(t, "ecdsa"))
	if err != nil {
		t.Fatal(err)
	}
	other := peers.KeyPair(t, "ecdsa", nil, "other.example")
	otherKey, _ := x509.MarshalPKCS8PrivateKey(other.PrivateKey)
	// edit decodes the good encoding generically, changes it and encodes it
	// again.
	edit := func(change func(s map[string]any)) string {
		var env map[string]any
		if err := json.Unmarshal(good, &env); err != nil {
			t.Fatal(err)
		}
		change(env["snapshot"].(map[string]any))
		b, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	listener := func(s map[string]any, i int) map[string]any {
		return s["Listeners"].([]any)[i].(map[string]any)
	}
	route := func(s map[string]any, l, r int) map[string]any {
		return listener(s, l)["Routes"].([]any)[r].(map[string]any)
	}
	cert := func(s map[string]any) map[string]any {
		return listener(s, 1)["TLS"].(map[string]any)["Certificates"].([]any)[0].(map[string]any)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"not JSON", "{", "unexpected EOF"},
		{"empty", "", "EOF"},
		{"another format", `{"format":2,"snapshot":{}}`, "wire format 2"},
		{"no snapshot", `{"format":1}`, "no snapshot"},
		{"trailing data", string(good) + "{}", "data after the snapshot"},
		{"unknown field", edit(func(s map[string]any) { s["Routes"] = nil }), `unknown field "Routes"`},
		{"unknown field in a certificate", edit(func(s map[string]any) { cert(s)["ocsp"] = "x" }), `unknown field "ocsp"`},
		{"regex", edit(func(s map[string]any) { route(s, 0, 2)["Match"].(map[string]any)["Regex"] = "a(" }), "missing closing )"},
		{"key of another certificate", edit(func(s map[string]any) { cert(s)["key"] = otherKey }), "private key does not match"},
		{"no key", edit(func(s map[string]any) { cert(s)["key"] = nil }), "private key"},
		{"no chain", edit(func(s map[string]any) { cert(s)["chain"] = []any{} }), "no certificate in the chain"},
		{"broken leaf", edit(func(s map[string]any) { cert(s)["chain"] = []any{[]byte("not DER")} }), "leaf"},
		{"no certificate on a TLS listener", edit(func(s map[string]any) {
			listener(s, 1)["TLS"].(map[string]any)["Certificates"] = []any{}
		}), "tls: no certificate"},
		{"unnamed listener", edit(func(s map[string]any) { listener(s, 2)["Name"] = "" }), "listener 2 has no name"},
		{"listener twice", edit(func(s map[string]any) { listener(s, 2)["Name"] = "ns/edge/public" }), "declared twice"},
		{"address without a port", edit(func(s map[string]any) { listener(s, 0)["Address"] = "0.0.0.0" }), "missing port"},
		{"address with a port too big", edit(func(s map[string]any) { listener(s, 0)["Address"] = "0.0.0.0:65536" }), "port"},
		{"negative probe timeout", edit(func(s map[string]any) { listener(s, 0)["ProbeTimeout"] = -1 }), "probeTimeout -1 is negative"},
		{"negative global cap", edit(func(s map[string]any) { s["MaxConnections"] = -1 }), "maxConnections -1"},
		{"invalid CIDR", edit(func(s map[string]any) {
			listener(s, 0)["ProxyProtocol"].(map[string]any)["TrustedCIDRs"] = []any{"10.0.0.0/33"}
		}), "10.0.0.0/33"},
		{"unknown protocol", edit(func(s map[string]any) { route(s, 0, 0)["Match"].(map[string]any)["Protocol"] = "gopher" }), `unknown protocol "gopher"`},
		{"two actions", edit(func(s map[string]any) { route(s, 0, 0)["Listener"] = "ns/edge/unwrapped" }), "2 actions"},
		{"no action", edit(func(s map[string]any) { route(s, 0, 0)["Backend"] = nil }), "0 actions"},
		{"a bound listener as internal", edit(func(s map[string]any) { route(s, 0, 1)["Listener"] = "ns/other/empty-lists" }), "binds a port"},
		{"unknown mode", edit(func(s map[string]any) { route(s, 0, 0)["Backend"].(map[string]any)["Mode"] = "udp" }), `unknown mode "udp"`},
		{"PROXY version", edit(func(s map[string]any) { route(s, 0, 0)["Backend"].(map[string]any)["ProxyProtocol"] = 3 }), "proxyProtocol version 3"},
		{"negative dial timeout in a tunnel target", edit(func(s map[string]any) {
			tunnel := route(s, 1, 1)["Tunnel"].(map[string]any)
			tunnel["Allow"].([]any)[0].(map[string]any)["Backend"].(map[string]any)["DialTimeout"] = -5
		}), "dialTimeout -5ns is negative"},
		{"negative idle timeout", edit(func(s map[string]any) { route(s, 0, 0)["IdleTimeout"] = -1 }), "idleTimeout -1ns"},
		{"unknown transport", edit(func(s map[string]any) { listener(s, 2)["Transport"] = "SCTP" }), `unknown transport "SCTP"`},
		{"QUIC on a TCP listener", edit(func(s map[string]any) { route(s, 0, 0)["Match"].(map[string]any)["Protocol"] = "quic" }),
			"protocol quic is recognised in datagrams only"},
		{"SSH on a UDP listener", edit(func(s map[string]any) { route(s, 2, 0)["Match"].(map[string]any)["Protocol"] = "ssh" }),
			"protocol ssh cannot be recognised in datagrams"},
		{"TLS on a UDP listener", edit(func(s map[string]any) { listener(s, 2)["TLS"] = listener(s, 1)["TLS"] }), "cannot terminate TLS"},
		{"PROXY headers on a UDP listener", edit(func(s map[string]any) { listener(s, 2)["ProxyProtocol"] = map[string]any{} }),
			"cannot read PROXY headers"},
		{"an internal UDP listener", edit(func(s map[string]any) { listener(s, 2)["Address"] = "" }), "needs an address"},
		{"a tunnel on a UDP listener", edit(func(s map[string]any) {
			r := route(s, 2, 1)
			r["Tunnel"], r["Backend"] = route(s, 1, 1)["Tunnel"], nil
		}), "forward to a backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := snapshot.Decode([]byte(tc.data))
			if err == nil {
				t.Fatalf("decoded %+v", s)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// Encode refuses a certificate it cannot carry whole, rather than send
// less than the snapshot holds.
func TestEncodeRefuses(t *testing.T) {
	pair := peers.KeyPair(t, "ecdsa", nil, "a.example")
	withStaple := *pair
	withStaple.OCSPStaple = []byte{1}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want string
	}{
		{"no key pair", nil, "secret/x: no key pair"},
		{"no key", &tls.Certificate{Certificate: pair.Certificate, Leaf: pair.Leaf}, "no key pair"},
		{"an OCSP staple", &withStaple, "not carried"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &snapshot.Snapshot{Listeners: []snapshot.Listener{{Name: "l", TLS: &snapshot.TLSConfig{
				Certificates: []snapshot.Certificate{{Source: "secret/x", Certificate: tc.cert}},
			}}}}
			if _, err := snapshot.Encode(s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Encode: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := snapshot.Encode(nil); err == nil {
		t.Error("Encode(nil) succeeded")
	}
}

// Whatever Decode accepts encodes again and decodes to the same snapshot:
// the decoder never builds a value that the encoder or the dataplane
// would choke on.
func FuzzDecode(f *testing.F) {
	for _, s := range []*snapshot.Snapshot{{}, richSnapshot(f, "ecdsa", "ed25519")} {
		b, err := snapshot.Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":1,"snapshot":{"Listeners":[{"Name":"a","Address":":1","Routes":[{"Name":"r","Match":{"Protocol":"bytes","Regex":"(?s).*"},"Listener":"b"}]},{"Name":"b"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := snapshot.Decode(data)
		if err != nil {
			return
		}
		again, err := snapshot.Encode(s)
		if err != nil {
			t.Fatalf("Encode of a decoded snapshot: %v", err)
		}
		s2, err := snapshot.Decode(again)
		if err != nil {
			t.Fatalf("Decode of a re-encoded snapshot: %v\n%s", err, again)
		}
		if err := snapshottest.Equal(s, s2); err != nil {
			t.Fatalf("decode, encode, decode changed the snapshot: %v", err)
		}
	})
}

// BenchmarkWire measures Encode and Decode of a 1000-tenant snapshot (1000
// certificates, 3001 routes, 30k endpoints); decoding is dominated by
// parsing keys and certificates.
func BenchmarkWire(b *testing.B) {
	for _, kind := range []string{"ecdsa", "rsa"} {
		s := snapshottest.Tenants(b, 1000, kind, ":443")
		wire, err := snapshot.Encode(s)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("encode/"+kind, func(b *testing.B) {
			for b.Loop() {
				if _, err := snapshot.Encode(s); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(wire)), "bytes")
		})
		b.Run("decode/"+kind, func(b *testing.B) {
			for b.Loop() {
				if _, err := snapshot.Decode(wire); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(wire)), "bytes")
		})
	}
}

// An Encoder writes what Encode writes, the first time and when it reuses
// listeners, and encodes again a listener that changed: a new route list
// (what compile builds for a changed PortMux) or another address.
func TestEncoderMatchesEncode(t *testing.T) {
	rich := richSnapshot(t, "ecdsa")
	var enc snapshot.Encoder
	check := func(what string, snap *snapshot.Snapshot) {
		t.Helper()
		want, err := snapshot.Encode(snap)
		if err != nil {
			t.Fatal(err)
		}
		got, err := enc.Encode(snap)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: Encoder wrote\n%s\nEncode\n%s", what, got, want)
		}
	}
	check("empty", &snapshot.Snapshot{})
	check("no listeners", &snapshot.Snapshot{MaxConnections: 3, Listeners: []snapshot.Listener{}})
	check("rich", rich)
	check("rich again", rich)
	changed := *rich
	changed.Listeners = slices.Clone(rich.Listeners)
	routes := slices.Clone(changed.Listeners[0].Routes)
	b := *routes[0].Backend
	b.Endpoints = []string{"10.9.9.9:22"}
	routes[0].Backend = &b
	changed.Listeners[0].Routes = routes
	changed.Listeners[2].Address = "0.0.0.0:8443"
	changed.MaxConnections = 1
	check("two listeners changed", &changed)
	check("one listener gone", &snapshot.Snapshot{Listeners: changed.Listeners[1:]})
}
