package route

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// dribbled is a 16000-byte HTTP request whose header block never ends and
// that an unanchored regex never matches: the most a client can make the
// sniffers scan.
func dribbled() []byte {
	data := []byte("GET / HTTP/1.1\r\nHost: a.test\r\n")
	for len(data) < 16000 {
		data = append(data, "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"...)
	}
	return data[:16000]
}

var slowRoutes = routes(
	snapshot.Match{Protocol: snapshot.Bytes, Regex: regexp.MustCompile(`(?i)ne(v|w)er[a-z]+matches`)},
	snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"b.test"}},
)

// TestProberLinear: a client that sends its bytes one per segment makes
// the sniffers scan a few times what it sent, not the square of it, and
// the last look (done) is always taken.
func TestProberLinear(t *testing.T) {
	data := dribbled()
	p := NewProber(slowRoutes, "")
	for n := 1; n <= len(data); n++ {
		if d := p.Decide(data[:n], false); !d.NeedMore {
			t.Fatalf("decided at %d bytes: %+v", n, d)
		}
	}
	if max := (probeWorkFactor + 1) * len(data); p.scanned > max {
		t.Errorf("sniffers scanned %d bytes for %d received, want at most %d", p.scanned, len(data), max)
	}
	before := p.scanned
	if d := p.Decide(data, true); d.NeedMore || d.Route != -1 {
		t.Errorf("final decision = %+v, want no route", d)
	}
	if p.scanned != before+len(data) {
		t.Errorf("the final look was skipped")
	}
}

// TestProberDecidesEachSegment: a client that sends its first flight in a
// few segments is decided as soon as the deciding segment arrives, as a
// plain Decide would.
func TestProberDecidesEachSegment(t *testing.T) {
	req := []byte("GET /x HTTP/1.1\r\nHost: b.test\r\nUser-Agent: curl/8\r\n\r\n")
	hello := corpus(t, "tls13_clienthello_openssl_sni_alpn.bin")
	httpOnly := routes(snapshot.Match{Protocol: snapshot.SSH}, snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"b.test"}})
	tests := []struct {
		name   string
		routes []snapshot.Route
		data   []byte
		cuts   []int // segment ends, the last one len(data)
		want   int
	}{
		{"http in three", httpOnly, req, []int{5, 20, len(req)}, 1},
		{"http byte by byte for a while", httpOnly, req, []int{1, 2, 3, 4, 5, 6, 7, 8, len(req)}, 1},
		{"tls in two", routes(snapshot.Match{Protocol: snapshot.SSH}, snapshot.Match{Protocol: snapshot.TLS}), hello, []int{len(hello) / 2, len(hello)}, 1},
		{"regex in two", routes(snapshot.Match{Protocol: snapshot.Bytes, Regex: regexp.MustCompile(`magic[0-9]+`)}),
			[]byte("hello magic42 there"), []int{8, 19}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewProber(tt.routes, "")
			for i, end := range tt.cuts {
				d := p.Decide(tt.data[:end], false)
				if i < len(tt.cuts)-1 {
					if !d.NeedMore {
						t.Fatalf("decided after %d bytes: %+v", end, d)
					}
					continue
				}
				if d.NeedMore || d.Route != tt.want {
					t.Fatalf("after the whole flight: %+v, want route %d", d, tt.want)
				}
			}
		})
	}
}

// TestProberCatchesUp: a decision a dribbling client's last byte made
// possible is taken by a later read or at the end of the probe.
func TestProberCatchesUp(t *testing.T) {
	data := append(bytes.Repeat([]byte("x"), 3000), "magic7"...)
	p := NewProber(routes(snapshot.Match{Protocol: snapshot.Bytes, Regex: regexp.MustCompile(`magic[0-9]`)}), "")
	decided := false
	for n := 1; n <= len(data) && !decided; n++ {
		decided = !p.Decide(data[:n], false).NeedMore
	}
	if !decided {
		if d := p.Decide(data, true); d.Route != 0 {
			t.Fatalf("at the end of the probe: %+v, want route 0", d)
		}
	}
}

// BenchmarkProberDribble is one connection whose 16000 bytes arrive one per
// read, through a regex and an HTTP route that never decide.
func BenchmarkProberDribble(b *testing.B) {
	data := dribbled()
	for b.Loop() {
		p := NewProber(slowRoutes, "")
		for n := 1; n <= len(data); n++ {
			p.Decide(data[:n], false)
		}
	}
}

// BenchmarkDecideDribble is the same connection through plain Decide, as
// the dataplane probed before Prober: quadratic.
func BenchmarkDecideDribble(b *testing.B) {
	data := dribbled()
	for b.Loop() {
		for n := 1; n <= len(data); n++ {
			Decide(slowRoutes, data[:n], false)
		}
	}
}
