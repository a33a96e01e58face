package quic

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/sniff"
)

// flightCase is a real first flight from testdata/corpus (see its README),
// one file per datagram, and what the Assembler must make of it.
type flightCase struct {
	flight string
	status Status
	err    error
	doneAt int // datagrams read when Done
	info   sniff.Info
	v      Version
	dcid   string
	scid   string
}

func flightCases() []flightCase {
	quicGo := sniff.Info{SNI: "quic-go.example.test", ALPN: []string{"h3", "portmux-test"}, TLSVersions: []uint16{tls13}}
	return []flightCase{
		{"quic-go_v1_x25519", Done, nil, 1, quicGo, Version1, "ca05ffe6b7b607d3c0241fd04a", "5c1d000102030405"},
		{"quic-go_v1_pq", Done, nil, 2, quicGo, Version1, "57e12e59a6a01c18df3b6bdeb3f114abef", "5c1d000102030405"},
		{"quic-go_v2_pq", Done, nil, 2, quicGo, Version2, "6992e50f2e1f80933f", "5c1d000102030405"},
		// The second datagram is ngtcp2's CONNECTION_CLOSE when its
		// handshake timed out; the flow was Done before it.
		{"ngtcp2_v1", Done, nil, 1, sniff.Info{SNI: "localhost", ALPN: []string{"h3"}, TLSVersions: []uint16{tls13}},
			Version1, "00112233445566778899aabbccddeeff", "c1d2c3d4c5d6c7d8"},
		// ngtcp2 0.12 predates RFC 9369: asked for v2 it sends v2's
		// number with v1's packet types (and keys), so its "Initial"
		// is a v2 Retry.
		{"ngtcp2_v2_number_v1_types", NotQUIC, ErrNotInitial, 0, sniff.Info{}, 0, "", ""},
		{"ngtcp2_v2draft", NotQUIC, ErrUnknownVersion, 0, sniff.Info{}, 0, "", ""},
	}
}

// readFlight returns the datagrams of a flight, in the order sent.
func readFlight(t testing.TB, dir, flight string) [][]byte {
	t.Helper()
	var ds [][]byte
	for i := 0; ; i++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s.%d.bin", flight, i)))
		if errors.Is(err, os.ErrNotExist) && i > 0 {
			return ds
		}
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, b)
	}
}

const corpusDir = "testdata/corpus"

// TestCorpus reads every real flight, in the order sent and in reverse:
// the SNI, ALPN, version and connection IDs as the client sent them, which
// crypto/tls's QUIC server agrees with, or the refusal.
func TestCorpus(t *testing.T) {
	for _, tc := range flightCases() {
		t.Run(tc.flight, func(t *testing.T) {
			ds := readFlight(t, corpusDir, tc.flight)
			for _, reverse := range []bool{false, true} {
				order := slices.Clone(ds)
				if reverse {
					if tc.doneAt != len(ds) {
						continue // the datagrams after Done would come first
					}
					slices.Reverse(order)
				}
				var a Assembler
				var st Status
				var err error
				for _, d := range order {
					st, err = a.Add(d)
				}
				if st != tc.status || !errors.Is(err, tc.err) || a.Datagrams() != max(tc.doneAt, 1) && st == Done {
					t.Fatalf("reverse %v: %v, %v after %d datagrams; want %v, %v after %d", reverse, st, err, a.Datagrams(), tc.status, tc.err, tc.doneAt)
				}
				if !reflect.DeepEqual(a.Info(), tc.info) || a.Version() != tc.v || a.DCID().String() != tc.dcid || a.SCID().String() != tc.scid {
					t.Fatalf("reverse %v: %+v %v DCID %v SCID %v", reverse, a.Info(), a.Version(), a.DCID(), a.SCID())
				}
				if st != Done {
					continue
				}
				chi, ok := goQUICServerSees(a.ClientHello())
				if !ok || chi.ServerName != tc.info.SNI || !slices.Equal(chi.SupportedProtos, tc.info.ALPN) {
					t.Fatalf("crypto/tls: %v %+v", ok, chi)
				}
			}
			// The first datagram alone, as Sniff sees it.
			v, info := Sniff(ds[0])
			want := map[bool]sniff.Verdict{true: sniff.Match, false: sniff.NeedMore}[tc.doneAt == 1]
			if tc.status == NotQUIC {
				want = sniff.NoMatch
			}
			if v != want || v == sniff.Match && !reflect.DeepEqual(info, tc.info) {
				t.Errorf("Sniff: %v %+v, want %v", v, info, want)
			}
		})
	}
}

// TestCorpusComplete keeps the table in step with testdata/corpus.
func TestCorpusComplete(t *testing.T) {
	entries, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, tc := range flightCases() {
		listed = append(listed, tc.flight)
	}
	for _, e := range entries {
		flight, _, _ := strings.Cut(e.Name(), ".")
		if strings.HasSuffix(e.Name(), ".bin") && !slices.Contains(listed, flight) {
			t.Errorf("%s/%s has no row in flightCases", corpusDir, e.Name())
		}
	}
}

// TestCorpusCut cuts every datagram of every flight short at every length
// and flips every byte of the first: nothing panics, a cut Initial is
// refused (a datagram is never "more to come"), and a flipped byte is
// either refused or, where nothing checks it (padding after the packet),
// changes nothing.
func TestCorpusCut(t *testing.T) {
	for _, tc := range flightCases() {
		ds := readFlight(t, corpusDir, tc.flight)
		for i, d := range ds {
			for n := range len(d) {
				var a Assembler
				if st, _ := a.Add(d[:n]); st == Done || (i == 0 && st != NotQUIC) {
					t.Fatalf("%s.%d cut at %d: %v", tc.flight, i, n, st)
				}
			}
		}
		if tc.status != Done {
			continue
		}
		want, _ := Sniff(ds[0])
		for j := range ds[0] {
			d := slices.Clone(ds[0])
			d[j] ^= 0x01
			if v, info := Sniff(d); v != sniff.NoMatch && (v != want || !reflect.DeepEqual(info, tc.info) && v == sniff.Match) {
				t.Errorf("%s byte %d flipped: %v %+v", tc.flight, j, v, info)
			}
		}
	}
}

// TestOtherProtocols feeds dataplane/sniff's UDP captures (WireGuard,
// OpenVPN, DNS) to the Assembler: none is QUIC.
func TestOtherProtocols(t *testing.T) {
	dir := filepath.Join("..", "sniff", "testdata", "udp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".bin") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var a Assembler
		if st, err := a.Add(b); st != NotQUIC || err == nil {
			t.Errorf("%s: %v, %v", e.Name(), st, err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no captures in " + dir)
	}
}
