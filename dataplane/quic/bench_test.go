package quic

import (
	"bytes"
	"testing"
)

// BenchmarkFlight measures what the dataplane pays per new QUIC flow: a
// fresh Assembler (key derivation included) reading a whole real first
// flight until Done.
func BenchmarkFlight(b *testing.B) {
	for _, name := range []string{"quic-go_v1_x25519", "quic-go_v1_pq", "quic-go_v2_pq", "ngtcp2_v1"} {
		ds := readFlight(b, corpusDir, name)
		if name == "ngtcp2_v1" {
			ds = ds[:1]
		}
		n := 0
		for _, d := range ds {
			n += len(d)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				var a Assembler
				for _, d := range ds {
					a.Add(d)
				}
				if a.Status() != Done {
					b.Fatal(a.Status(), a.Err())
				}
			}
		})
	}
}

// BenchmarkSniffInitial is one Initial packet, the RFC 9001 sample, read
// by Sniff: derive the keys, remove header protection, open the AEAD,
// parse the frames and the ClientHello.
func BenchmarkSniffInitial(b *testing.B) {
	d := unhex(b, rfc9001ClientInitial)
	b.ReportAllocs()
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		Sniff(d)
	}
}

// BenchmarkOpenInitial is the decryption alone, with the keys derived
// once: the cost of each further datagram of a flow.
func BenchmarkOpenInitial(b *testing.B) {
	d := unhex(b, rfc9001ClientInitial)
	h, err := parseLongHeader(d)
	if err != nil {
		b.Fatal(err)
	}
	p, _ := params(h.version)
	k, err := clientInitialKeys(p, h.dcid)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, len(d))
	b.ReportAllocs()
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		copy(buf, d)
		if _, _, err := openInitial(&k, buf, &h, -1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefuse is the cost of datagrams that are not QUIC or not
// valid: other protocols end at the first byte or the version, a forged
// Initial after key derivation and a failed AEAD.
func BenchmarkRefuse(b *testing.B) {
	rfc := unhex(b, rfc9001ClientInitial)
	forged := bytes.Clone(rfc)
	forged[len(forged)-1] ^= 1
	for name, d := range map[string][]byte{
		"wireguard":     append([]byte{1, 0, 0, 0}, make([]byte, 144)...),
		"dns":           {0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1},
		"short-initial": rfc[:1199],
		"forged":        forged,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var a Assembler
				a.Add(d)
			}
		})
	}
}

// TestRefusalAllocs keeps refusing other protocols' datagrams free of
// allocations: they are most of what a shared UDP port sees.
func TestRefusalAllocs(t *testing.T) {
	rfc := unhex(t, rfc9001ClientInitial)
	for name, d := range map[string][]byte{
		"wireguard":       append([]byte{1, 0, 0, 0}, make([]byte, 144)...),
		"dns":             {0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1},
		"unknown version": append([]byte{0xc0, 0xff, 0, 0, 0x1d}, rfc[5:]...),
		"short initial":   rfc[:1199],
		"bad DCID length": append(append([]byte(nil), rfc[:5]...), 0xff),
	} {
		if n := testing.AllocsPerRun(100, func() {
			var a Assembler
			a.Add(d)
		}); n != 0 {
			t.Errorf("%s: %v allocations", name, n)
		}
	}
}
