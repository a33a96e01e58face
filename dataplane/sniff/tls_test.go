package sniff

import (
	"bytes"
	"reflect"
	"slices"
	"testing"
)

// TestTLSGoClient sniffs the ClientHello of Go's own crypto/tls client, which
// carries a post-quantum key share, as sent and cut into small records the
// way some clients and middleboxes fragment it.
func TestTLSGoClient(t *testing.T) {
	stream := goClientHello(t, "Example.TEST", "h2", "http/1.1")
	if len(stream) < 1024 {
		t.Fatalf("Go ClientHello is %d bytes; want a post-quantum one over 1 KiB", len(stream))
	}
	want := Info{SNI: "example.test", ALPN: []string{"h2", "http/1.1"}, TLSVersions: []uint16{0x0304, 0x0303}}
	msg := handshakeOf(t, stream)

	for _, size := range []int{len(msg), 1000, 100, 7, 3, 1} {
		b := records(msg, size)
		if size == len(msg) {
			b = stream // as Go sent it, record version and all
		}
		v, info := TLS(b)
		if v != Match || !reflect.DeepEqual(info, want) {
			t.Errorf("records of %d: got %v %+v, want Match %+v", size, v, info, want)
		}
		if v, _ := TLS(b[:len(b)/2]); v != NeedMore {
			t.Errorf("records of %d, first half: got %v, want NeedMore", size, v)
		}
		if v, _ := TLS(b[:len(b)-1]); v != NeedMore {
			t.Errorf("records of %d, one byte short: got %v, want NeedMore", size, v)
		}
		// Whatever the client sends next (a ChangeCipherSpec, early data)
		// does not change the verdict.
		after := append(slices.Clip(b), 20, 3, 3, 0, 1, 1)
		if v, info := TLS(after); v != Match || !reflect.DeepEqual(info, want) {
			t.Errorf("records of %d, then CCS: got %v %+v", size, v, info)
		}
		if size >= 7 || size == len(msg) {
			if msg := prefixViolation(TLS, b); msg != "" {
				t.Errorf("records of %d: %s", size, msg)
			}
		}
	}
}

// TestTLSGoClientNoSNI: a hello without server_name still matches, with SNI "".
func TestTLSGoClientNoSNI(t *testing.T) {
	stream := goClientHello(t, "")
	v, info := TLS(stream)
	if v != Match || info.SNI != "" || info.ALPN != nil {
		t.Fatalf("got %v %+v, want Match with no SNI and no ALPN", v, info)
	}
}

func TestTLS(t *testing.T) {
	valid := helloSpec{exts: []helloExt{sniExt("a.example"), alpnExt("h2"), versionsExt(0x0304, 0x0303)}}
	validInfo := Info{SNI: "a.example", ALPN: []string{"h2"}, TLSVersions: []uint16{0x0304, 0x0303}}
	one := func(spec helloSpec) []byte { return records(clientHelloMsg(spec), MaxBytes) }
	edit := func(b []byte, f func([]byte) []byte) []byte { return f(slices.Clone(b)) }
	base := one(valid)

	tests := []struct {
		name string
		b    []byte
		want Verdict
		info Info
	}{
		{"empty", nil, NeedMore, Info{}},
		{"record type only", []byte{22}, NeedMore, Info{}},
		{"record header", base[:5], NeedMore, Info{}},
		{"record header and handshake type", base[:6], NeedMore, Info{}},
		{"valid", base, Match, validInfo},
		{"valid, record version 0x0300", edit(base, func(b []byte) []byte { b[2] = 0; return b }), Match, validInfo},
		{"valid, record version 0x0304", edit(base, func(b []byte) []byte { b[2] = 4; return b }), Match, validInfo},

		// Record layer.
		{"application data record", edit(base, func(b []byte) []byte { b[0] = 23; return b }), NoMatch, Info{}},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, NoMatch, Info{}},
		{"record version 2.x", edit(base, func(b []byte) []byte { b[1] = 2; return b })[:3], NoMatch, Info{}},
		{"record version 3.5", edit(base, func(b []byte) []byte { b[2] = 5; return b })[:3], NoMatch, Info{}},
		{"zero-length record", []byte{22, 3, 1, 0, 0}, NoMatch, Info{}},
		{"record over 2^14+2048", []byte{22, 3, 1, 0x48, 0x01}, NoMatch, Info{}},
		{"server hello", []byte{22, 3, 3, 0, 50, 2}, NoMatch, Info{}},
		{"record longer than the hello", edit(base, func(b []byte) []byte {
			b[4]++
			return append(b, 0)
		}), NoMatch, Info{}},
		{"second record not handshake", edit(records(clientHelloMsg(valid), 20), func(b []byte) []byte { b[25] = 21; return b })[:26], NoMatch, Info{}},
		{"second record bad version", edit(records(clientHelloMsg(valid), 20), func(b []byte) []byte { b[26] = 1; return b })[:28], NoMatch, Info{}},

		// Cap: decided as soon as the hello cannot end within MaxBytes.
		{"hello longer than MaxBytes", []byte{22, 3, 1, 0x40, 0x00, 1, 0x00, 0x40, 0x00}, NoMatch, Info{}},
		{"hello of 16 MiB", []byte{22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff}, NoMatch, Info{}},
		{"hello filling MaxBytes", one(helloSpec{exts: []helloExt{paddingExt(MaxBytes - 5 - 4 - 2 - 32 - 33 - 6 - 2 - 2 - 4)}}), Match, Info{TLSVersions: []uint16{0x0303}}},
		{"hello one byte over MaxBytes", one(helloSpec{exts: []helloExt{paddingExt(MaxBytes - 5 - 4 - 2 - 32 - 33 - 6 - 2 - 2 - 4 + 1)}})[:10], NoMatch, Info{}},

		// Hello body.
		{"broken body", append([]byte{22, 3, 1, 0, 68, 1, 0, 0, 64}, bytes.Repeat([]byte{0xff}, 64)...), NoMatch, Info{}},
		{"legacy version 2.0", one(helloSpec{legacy: 0x0200, noExts: true}), NoMatch, Info{}},
		{"no extensions (TLS 1.0)", one(helloSpec{legacy: 0x0301, noExts: true}), Match, Info{TLSVersions: []uint16{0x0301}}},
		{"empty extensions", one(helloSpec{}), Match, Info{TLSVersions: []uint16{0x0303}}},
		{"trailing byte after extensions", edit(clientHelloMsg(valid), func(m []byte) []byte {
			m = append(m, 0)
			m[3]++
			return records(m, MaxBytes)
		}), NoMatch, Info{}},
		{"truncated extension", edit(clientHelloMsg(helloSpec{exts: []helloExt{{typ: 99, data: []byte{1, 2, 3}}}}), func(m []byte) []byte {
			m = m[:len(m)-1] // extension data shorter than its length
			m[3]--
			m[len(m)-3-4-1]-- // extensions block length
			return records(m, MaxBytes)
		}), NoMatch, Info{}},
		{"unknown extensions skipped", one(helloSpec{exts: []helloExt{{typ: 0xfe0d, data: []byte{1, 2, 3}}, sniExt("x.test"), {typ: 99}}}), Match,
			Info{SNI: "x.test", TLSVersions: []uint16{0x0303}}},

		// server_name, RFC 6066 §3.
		{"SNI upper case, trailing dot", one(helloSpec{exts: []helloExt{sniExt("WWW.Example.COM.")}}), Match,
			Info{SNI: "www.example.com", TLSVersions: []uint16{0x0303}}},
		{"SNI twice in one list", one(helloSpec{exts: []helloExt{sniExt("a.test", "b.test")}}), NoMatch, Info{}},
		{"SNI extension twice", one(helloSpec{exts: []helloExt{sniExt("a.test"), sniExt("b.test")}}), NoMatch, Info{}},
		{"SNI empty list", one(helloSpec{exts: []helloExt{sniExt()}}), NoMatch, Info{}},
		{"SNI empty name", one(helloSpec{exts: []helloExt{sniExt("")}}), NoMatch, Info{}},
		{"SNI only a dot", one(helloSpec{exts: []helloExt{sniExt(".")}}), NoMatch, Info{}},
		{"SNI with NUL", one(helloSpec{exts: []helloExt{sniExt("a\x00.example.com")}}), NoMatch, Info{}},
		{"SNI with space", one(helloSpec{exts: []helloExt{sniExt("a b")}}), NoMatch, Info{}},
		{"SNI not ASCII", one(helloSpec{exts: []helloExt{sniExt("bücher.example")}}), NoMatch, Info{}},
		{"SNI other name type only", one(helloSpec{exts: []helloExt{{tlsExtServerName, []byte{0, 4, 7, 0, 1, 'x'}}}}), Match,
			Info{TLSVersions: []uint16{0x0303}}},
		{"SNI trailing bytes", one(helloSpec{exts: []helloExt{{tlsExtServerName, append(sniExt("a.test").data, 0)}}}), NoMatch, Info{}},

		// ALPN, RFC 7301 §3.1.
		{"ALPN order kept", one(helloSpec{exts: []helloExt{alpnExt("http/1.1", "h2", "\x0a\x0a")}}), Match,
			Info{ALPN: []string{"http/1.1", "h2", "\x0a\x0a"}, TLSVersions: []uint16{0x0303}}},
		{"ALPN empty list", one(helloSpec{exts: []helloExt{alpnExt()}}), NoMatch, Info{}},
		{"ALPN empty name", one(helloSpec{exts: []helloExt{alpnExt("h2", "")}}), NoMatch, Info{}},
		{"ALPN twice", one(helloSpec{exts: []helloExt{alpnExt("h2"), alpnExt("http/1.1")}}), NoMatch, Info{}},

		// supported_versions, RFC 8446 §4.2.1; GREASE, RFC 8701.
		{"versions without GREASE", one(helloSpec{exts: []helloExt{versionsExt(0x7a7a, 0x0304, 0x0303)}}), Match,
			Info{TLSVersions: []uint16{0x0304, 0x0303}}},
		{"versions only GREASE", one(helloSpec{exts: []helloExt{versionsExt(0x0a0a)}}), Match, Info{TLSVersions: []uint16{}}},
		{"versions empty", one(helloSpec{exts: []helloExt{versionsExt()}}), NoMatch, Info{}},
		{"versions odd length", one(helloSpec{exts: []helloExt{{tlsExtSupportedVersions, []byte{3, 3, 4, 3}}}}), NoMatch, Info{}},
		{"versions twice", one(helloSpec{exts: []helloExt{versionsExt(0x0304), versionsExt(0x0303)}}), NoMatch, Info{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, info := TLS(tc.b)
			if v != tc.want || !reflect.DeepEqual(info, tc.info) {
				t.Fatalf("got %v %+v, want %v %+v", v, info, tc.want, tc.info)
			}
			if len(tc.b) < 4096 {
				if msg := prefixViolation(TLS, tc.b); msg != "" {
					t.Fatal(msg)
				}
			}
		})
	}
}

// TestTLSHandshakeHeaderSplit: the 4-byte handshake header itself may be cut
// across records; the message type is still checked at its first byte.
func TestTLSHandshakeHeaderSplit(t *testing.T) {
	msg := clientHelloMsg(helloSpec{exts: []helloExt{sniExt("split.test")}})
	b := append(records(msg[:2], 1), records(msg[2:], 2)...)
	if v, info := TLS(b); v != Match || info.SNI != "split.test" {
		t.Fatalf("got %v %+v", v, info)
	}
	bad := slices.Clone(b)
	bad[5] = 2 // ServerHello
	if v, _ := TLS(bad[:6]); v != NoMatch {
		t.Fatalf("handshake type 2 in a 1-byte record: got %v", v)
	}
}

// TestTLSFragmentedCap: with many small records, the record headers count
// towards MaxBytes, and the answer comes before the bytes do.
func TestTLSFragmentedCap(t *testing.T) {
	const frag = 1000
	fixed := 4 + 2 + 32 + 33 + 6 + 2 + 2 + 4 // handshake header .. padding header
	// n records of frag bytes hold n*frag handshake bytes in n*(frag+5) stream bytes.
	n := MaxBytes / (frag + 5)
	fits := n*frag - fixed
	msgFits := clientHelloMsg(helloSpec{exts: []helloExt{paddingExt(fits)}})
	b := records(msgFits, frag)
	if len(b) > MaxBytes {
		t.Fatalf("test setup: %d bytes", len(b))
	}
	if v, _ := TLS(b); v != Match {
		t.Fatalf("hello of %d bytes in %d records: got %v, want Match", len(msgFits), n, v)
	}
	// Enough handshake bytes to fit in one record, but not in records of
	// frag bytes: NoMatch once the record that shows it is read.
	// 16369 handshake bytes fit one record (16374 bytes) but take 17
	// records of 1000 (16454 bytes). After two records the headers still to
	// come are known to push the end past MaxBytes.
	tooBig := clientHelloMsg(helloSpec{exts: []helloExt{paddingExt(MaxBytes - 5 - 10 - fixed)}})
	if v, _ := TLS(records(tooBig, MaxBytes)); v != Match {
		t.Fatalf("test setup: the hello must fit one record, got %v", v)
	}
	b = records(tooBig, frag)
	if v, _ := TLS(b[:MaxBytes]); v != NoMatch {
		t.Fatalf("hello needing more than MaxBytes: got %v", v)
	}
	const decidedBy = 2*(frag+5) + 5
	if v, _ := TLS(b[:decidedBy]); v != NoMatch {
		t.Fatalf("at %d bytes: got %v, want NoMatch", decidedBy, v)
	}
	if v, _ := TLS(b[:decidedBy-1]); v != NeedMore {
		t.Fatalf("at %d bytes: got %v, want NeedMore", decidedBy-1, v)
	}
}
