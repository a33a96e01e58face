package route

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/portmux/portmux/dataplane/quic"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// udpCapture reads a real first datagram of dataplane/sniff's UDP corpus.
func udpCapture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "sniff", "testdata", "udp", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// quicFlight reads a real QUIC first flight of dataplane/quic's corpus,
// one datagram per file.
func quicFlight(t testing.TB, flight string) [][]byte {
	t.Helper()
	var ds [][]byte
	for i := 0; ; i++ {
		b, err := os.ReadFile(filepath.Join("..", "quic", "testdata", "corpus", fmt.Sprintf("%s.%d.bin", flight, i)))
		if errors.Is(err, os.ErrNotExist) && i > 0 {
			return ds
		}
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, b)
	}
}

func TestDecideDatagrams(t *testing.T) {
	quicGo := quicFlight(t, "quic-go_v1_x25519")[0] // SNI quic-go.example.test, ALPN h3, portmux-test
	pq := quicFlight(t, "quic-go_v1_pq")            // the same, two datagrams
	v2 := quicFlight(t, "quic-go_v2_pq")
	ngtcp2 := quicFlight(t, "ngtcp2_v1")[0] // SNI localhost, ALPN h3
	wg := udpCapture(t, "wireguard_initiation_wireguard-go.bin")
	ovpn := udpCapture(t, "openvpn_udp_hard_reset_v2.bin")
	ovpnCrypt := udpCapture(t, "openvpn_udp_hard_reset_v3_tls_crypt_v2.bin")
	dns := udpCapture(t, "dns_query_dig.bin")

	shared := routes(
		snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"ngtcp2.example.test", "localhost"}},
		snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"*.example.test"}, ALPN: []string{"h3"}},
		snapshot.Match{Protocol: snapshot.OpenVPN},
		snapshot.Match{Protocol: snapshot.WireGuard},
		snapshot.Match{Protocol: snapshot.DNS},
	)
	withAny := append(routes(snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"nowhere.test"}}),
		routes(snapshot.Match{Protocol: snapshot.Any})...)
	bytesRoutes := routes(
		snapshot.Match{Protocol: snapshot.Bytes, Prefix: []byte{1, 0, 0, 0}},
		snapshot.Match{Protocol: snapshot.Bytes, Regex: regexp.MustCompile(`\x38.{8}\x00`)},
	)
	for _, tc := range []struct {
		name      string
		routes    []snapshot.Route
		datagrams [][]byte
		done      bool
		route     int
		needMore  bool
		sni       string
	}{
		{"quic-go by wildcard SNI and ALPN", shared, [][]byte{quicGo}, false, 1, false, "quic-go.example.test"},
		{"ngtcp2 by exact SNI", shared, [][]byte{ngtcp2}, false, 0, false, "localhost"},
		{"post-quantum ClientHello: first datagram", shared, pq[:1], false, -1, true, ""},
		{"post-quantum ClientHello: both", shared, pq, false, 1, false, "quic-go.example.test"},
		{"post-quantum, reordered", shared, [][]byte{pq[1], pq[0]}, false, 1, false, "quic-go.example.test"},
		{"QUIC v2", shared, v2, false, 1, false, "quic-go.example.test"},
		{"half a ClientHello when the probe ends", shared, pq[:1], true, -1, false, ""},
		{"OpenVPN", shared, [][]byte{ovpn}, false, 2, false, ""},
		{"OpenVPN tls-crypt-v2", shared, [][]byte{ovpnCrypt}, false, 2, false, ""},
		{"WireGuard", shared, [][]byte{wg}, false, 3, false, ""},
		{"DNS", shared, [][]byte{dns}, false, 4, false, ""},
		{"DNS behind a QUIC route that waits for nothing", shared, [][]byte{dns, quicGo}, false, 4, false, ""},
		{"no route for garbage", shared, [][]byte{[]byte("hello")}, false, -1, false, ""},
		{"SNI no route takes: any", withAny, [][]byte{quicGo}, false, 1, false, ""},
		{"any waits for QUIC's verdict", withAny, pq[:1], false, -1, true, ""},
		{"any once the probe ends", withAny, pq[:1], true, 1, false, ""},
		{"bytes prefix", bytesRoutes, [][]byte{wg}, false, 0, false, ""},
		{"bytes regex", bytesRoutes, [][]byte{ovpn}, false, 1, false, ""},
		{"bytes: a datagram shorter than the prefix is whole", bytesRoutes, [][]byte{{1, 0}}, false, -1, false, ""},
		{"bytes on the first datagram only", bytesRoutes, [][]byte{[]byte("x"), wg}, false, -1, false, ""},
		{"nothing yet", shared, nil, false, -1, true, ""},
		{"nothing at all", shared, nil, true, -1, false, ""},
		{"a short Initial is skipped", shared, [][]byte{quicGo[:1199], quicGo}, false, 1, false, "quic-go.example.test"},
		{"only short Initials", withAny, [][]byte{quicGo[:1000]}, true, -1, false, ""},
		{"stream protocols never match", routes(snapshot.Match{Protocol: snapshot.TLS}, snapshot.Match{Protocol: snapshot.Timeout}), [][]byte{quicGo}, true, -1, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := DecideDatagrams(tc.routes, tc.datagrams, tc.done)
			if d.Route != tc.route || d.NeedMore != tc.needMore || d.Info.SNI != tc.sni {
				t.Errorf("DecideDatagrams = route %d, NeedMore %v, SNI %q; want %d, %v, %q", d.Route, d.NeedMore, d.Info.SNI, tc.route, tc.needMore, tc.sni)
			}
		})
	}
}

// TestDatagramProber checks the incremental form: drops, what it learnt of
// QUIC, and that a dropped first datagram leaves it untouched.
func TestDatagramProber(t *testing.T) {
	pq := quicFlight(t, "quic-go_v1_pq")
	rs := routes(snapshot.Match{Protocol: snapshot.QUIC}, snapshot.Match{Protocol: snapshot.Any})
	p := NewDatagramProber(rs)
	if d, err := p.Add(pq[0][:900]); !errors.Is(err, ErrShortInitial) || !d.NeedMore {
		t.Fatalf("short first Initial: %+v, %v", d, err)
	}
	if _, _, _, ok := p.QUIC(); ok {
		t.Fatal("QUIC known before a ClientHello")
	}
	if d, err := p.Add(pq[0]); err != nil || !d.NeedMore {
		t.Fatalf("first half: %+v, %v", d, err)
	}
	if d, err := p.Add(pq[1][:500]); !errors.Is(err, ErrShortInitial) || !d.NeedMore {
		t.Fatalf("short second Initial: %+v, %v", d, err)
	}
	d, err := p.Add(pq[1])
	if err != nil || d.Route != 0 || d.Info.SNI != "quic-go.example.test" {
		t.Fatalf("second half: %+v, %v", d, err)
	}
	v, dcid, scid, ok := p.QUIC()
	if !ok || v != quic.Version1 || dcid.String() != "57e12e59a6a01c18df3b6bdeb3f114abef" || scid.String() != "5c1d000102030405" {
		t.Errorf("QUIC() = %v %s %s %v", v, dcid, scid, ok)
	}

	// Without a QUIC route, a short Initial is a datagram like another.
	p = NewDatagramProber(routes(snapshot.Match{Protocol: snapshot.Any}))
	if d, err := p.Add(pq[0][:900]); err != nil || d.Route != 0 {
		t.Errorf("no QUIC route: %+v, %v", d, err)
	}
}

// TestDatagramProtocolTable holds the table to the transports: a protocol
// has a datagram sniffer exactly when it serves UDP and is decided from one
// datagram, and each UDP capture takes its own protocol's route only.
func TestDatagramProtocolTable(t *testing.T) {
	for _, p := range protocols {
		want := p.name.FitsTransport(snapshot.UDP) && p.name != snapshot.QUIC && p.name != snapshot.Bytes
		if got := p.datagram != nil; got != want {
			t.Errorf("%s: datagram sniffer %v, want %v", p.name, got, want)
		}
		if p.sniff != nil && !p.name.FitsTransport(snapshot.TCP) {
			t.Errorf("%s: a stream sniffer for a protocol streams cannot carry", p.name)
		}
	}
	captures := map[snapshot.Protocol][]byte{
		snapshot.QUIC:      quicFlight(t, "quic-go_v1_x25519")[0],
		snapshot.WireGuard: udpCapture(t, "wireguard_initiation_wireguard-go.bin"),
		snapshot.OpenVPN:   udpCapture(t, "openvpn_udp_hard_reset_v2_tls_auth.bin"),
		snapshot.DNS:       udpCapture(t, "dns_query_go_resolver.bin"),
	}
	for own, d := range captures {
		for p := range captures {
			got := DecideDatagrams(routes(snapshot.Match{Protocol: p}), [][]byte{d}, true).Route == 0
			if got != (p == own) {
				t.Errorf("a %s route on a %s datagram: matched %v", p, own, got)
			}
		}
	}
}

// TestDatagramProberAllocs: deciding a non-QUIC session allocates nothing,
// also on a listener with QUIC routes; they are most of a shared port's
// new sessions.
func TestDatagramProberAllocs(t *testing.T) {
	rs := routes(snapshot.Match{Protocol: snapshot.QUIC}, snapshot.Match{Protocol: snapshot.WireGuard}, snapshot.Match{Protocol: snapshot.DNS})
	for _, name := range []string{"wireguard_initiation_wireguard-go.bin", "dns_query_dig.bin"} {
		d := udpCapture(t, name)
		if n := testing.AllocsPerRun(100, func() {
			p := NewDatagramProber(rs)
			p.Add(d)
		}); n != 0 {
			t.Errorf("%s: %v allocations", name, n)
		}
	}
}

func BenchmarkDatagramProber(b *testing.B) {
	rs := routes(
		snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"a.example.test"}},
		snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"*.example.test"}},
		snapshot.Match{Protocol: snapshot.OpenVPN},
		snapshot.Match{Protocol: snapshot.WireGuard},
		snapshot.Match{Protocol: snapshot.DNS},
	)
	for name, ds := range map[string][][]byte{
		"quic-go_v1_pq": quicFlight(b, "quic-go_v1_pq"),
		"wireguard":     {udpCapture(b, "wireguard_initiation_wireguard-go.bin")},
		"dns":           {udpCapture(b, "dns_query_dig.bin")},
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p := NewDatagramProber(rs)
				for _, d := range ds {
					p.Add(d)
				}
			}
		})
	}
}

// TestDatagramProberKeepsNoDatagram: the caller reuses its read buffer, so
// routes decided after QUIC (here a bytes route past the 64th) must not
// read the first datagram again.
func TestDatagramProberKeepsNoDatagram(t *testing.T) {
	pq := quicFlight(t, "quic-go_v1_pq")
	var ms []snapshot.Match
	ms = append(ms, snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"elsewhere.test"}})
	for range 68 {
		ms = append(ms, snapshot.Match{Protocol: snapshot.Bytes, Prefix: []byte("nothing")})
	}
	ms = append(ms, snapshot.Match{Protocol: snapshot.Bytes, Prefix: pq[0][:6]})
	p := NewDatagramProber(routes(ms...))
	buf := bytes.Clone(pq[0])
	if d, err := p.Add(buf); err != nil || !d.NeedMore {
		t.Fatalf("first half: %+v, %v", d, err)
	}
	clear(buf)
	if d, err := p.Add(pq[1]); err != nil || d.Route != 69 {
		t.Fatalf("second half: %+v, %v; want route 69", d, err)
	}
}
