package quic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/sniff"
)

// encodeFlight packs datagrams for a fuzz input: each one with a 2-byte
// big-endian length in front.
func encodeFlight(ds ...[]byte) []byte {
	var b []byte
	for _, d := range ds {
		b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
		b = append(b, d...)
	}
	return b
}

// decodeFlight is encodeFlight's inverse; a short last length takes what
// is left.
func decodeFlight(b []byte) [][]byte {
	var ds [][]byte
	for len(b) >= 2 {
		n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
		ds = append(ds, b[2:2+n])
		b = b[2+n:]
	}
	return ds
}

// checkAssembler feeds a flight to an Assembler with small limits and
// checks what must hold for any input: no panic, the datagrams untouched,
// NotQUIC always with a reason and Done never with one, final answers
// that stay final, memory within the limits, and a Done ClientHello that
// crypto/tls's QUIC server reads with the same SNI and ALPN.
func checkAssembler(t *testing.T, ds [][]byte) {
	l := Limits{MaxHelloBytes: 4096, MaxDatagrams: 6}
	a := NewAssembler(l)
	final := NeedMore
	var finalErr error
	for i, d := range ds {
		orig := bytes.Clone(d)
		st, err := a.Add(d)
		if !bytes.Equal(d, orig) {
			t.Fatalf("datagram %d written to", i)
		}
		switch {
		case final != NeedMore && (st != final || !errors.Is(err, finalErr)):
			t.Fatalf("datagram %d: %v, %v after final %v, %v", i, st, err, final, finalErr)
		case st == NotQUIC && err == nil, st == Done && err != nil:
			t.Fatalf("datagram %d: %v with error %v", i, st, err)
		case st == NeedMore && err != nil && !a.started:
			t.Fatalf("datagram %d discarded (%v) before the flow started", i, err)
		}
		if st != NeedMore && final == NeedMore {
			final, finalErr = st, err
		}
	}
	if cap(a.stream.data) > l.MaxHelloBytes || a.Datagrams() > len(ds) {
		t.Fatalf("buffer %d bytes, %d datagrams", cap(a.stream.data), a.Datagrams())
	}
	if a.Status() != Done {
		if !reflect.DeepEqual(a.Info(), sniff.Info{}) || a.ClientHello() != nil {
			t.Fatalf("%v with Info %+v", a.Status(), a.Info())
		}
		return
	}
	info := a.Info()
	if info.SNI != strings.ToLower(info.SNI) || !slices.Contains(info.TLSVersions, tls13) {
		t.Fatalf("Info %+v", info)
	}
	chi, ok := goQUICServerSees(a.ClientHello())
	if !ok {
		// crypto/tls refuses some ClientHellos dataplane/sniff takes
		// (its stricter rules go the other way, see sniff's FuzzTLS);
		// it must at least not be the sniffer's SNI it disagrees on.
		return
	}
	if want := strings.ToLower(strings.TrimSuffix(chi.ServerName, ".")); info.SNI != want || !slices.Equal(info.ALPN, chi.SupportedProtos) {
		t.Fatalf("Info %+v, crypto/tls: SNI %q ALPN %q", info, chi.ServerName, chi.SupportedProtos)
	}
}

// FuzzAssembler mutates whole flights, headers and ciphertext: header
// parsing, coalescing and the refusals get the fuzzer's attention, since
// a mutated ciphertext never decrypts.
func FuzzAssembler(f *testing.F) {
	for _, tc := range flightCases() {
		f.Add(encodeFlight(readFlight(f, corpusDir, tc.flight)...))
	}
	f.Add(encodeFlight(unhex(f, rfc9001ClientInitial)))
	f.Add(encodeFlight(unhex(f, rfc9369ClientInitial)))
	f.Add(encodeFlight(sealPacket(f, packetSpec{typ: typeZeroRTT}), unhex(f, rfc9001ClientInitial)))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAssembler(t, decodeFlight(b))
	})
}

// FuzzInitialPayloads has the fuzzer write the plaintext of Initial
// packets, which the test seals with real keys, so that frame parsing,
// the CRYPTO reassembly and the ClientHello parser get mutated input
// past the AEAD. The input is split at 0xff 0xfe into the payloads of
// successive packets; version2 picks v2's keys and types, and coalesce
// puts the first two packets in one datagram.
func FuzzInitialPayloads(f *testing.F) {
	hello := goQUICClientHello(f, "fuzz.example", []string{"h3", "hq-interop"})
	small := helloMsg("small.example", []string{"h3"}, 0)
	sep := []byte{0xff, 0xfe}
	f.Add(cryptoFrame(0, small), false, false)
	f.Add(bytes.Join([][]byte{cryptoFrame(900, hello[900:]), cryptoFrame(0, hello[:900])}, sep), false, false)
	f.Add(bytes.Join([][]byte{cryptoFrame(0, hello[:900]), cryptoFrame(900, hello[900:])}, sep), true, true)
	f.Add(bytes.Join(cryptoFrames(hello, 300), sep), false, true)
	f.Add(frames([]byte{framePing, frameACK, 3, 0, 1, 0, 0, 1}, cryptoFrame(10, small[10:]), cryptoFrame(0, small[:12])), true, false)
	f.Fuzz(func(t *testing.T, b []byte, version2, coalesce bool) {
		v := Version1
		if version2 {
			v = Version2
		}
		payloads := bytes.Split(b, sep)
		if len(payloads) > 8 {
			return
		}
		var ds [][]byte
		for i, p := range payloads {
			pkt := initialDatagram(t, packetSpec{version: v, scid: []byte{1}, pn: uint64(i), payload: p})
			if coalesce && i == 1 {
				prev := sealPacket(t, packetSpec{version: v, scid: []byte{1}, pn: 0, payload: payloads[0]})
				pkt = initialDatagram(t, packetSpec{version: v, scid: []byte{1}, pn: 1, payload: p}, prev)
				ds[0] = pkt
				continue
			}
			ds = append(ds, pkt)
		}
		checkAssembler(t, ds)
	})
}

// FuzzCryptoStream holds the reassembly to a byte-map model: frames cut
// from one message at offsets and lengths the fuzzer picks, some with a
// byte changed, in the order it picks. Until add fails the stream holds
// what the model holds; a conflict is reported exactly when a changed
// byte lands on one already in; complete exactly when every byte is in.
func FuzzCryptoStream(f *testing.F) {
	f.Add([]byte{0, 0, 200, 0, 0, 200, 200, 0, 1, 144, 100, 0})
	f.Add([]byte{0, 60, 10, 0, 0, 0, 70, 0, 0, 1, 200, 0, 0, 70, 255, 0, 1, 100, 100, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		msg := helloMsg("model.example", []string{"h3"}, 400)
		limit := len(msg) + 64
		var s cryptoStream
		model := make([]int, limit) // -1: not received
		for i := range model {
			model[i] = -1
		}
		for len(ops) >= 4 {
			off, n, change := int(binary.BigEndian.Uint16(ops))%(limit+8), int(ops[2]), ops[3]&1 == 1
			ops = ops[4:]
			data := make([]byte, n)
			for i := range data {
				if off+i < len(msg) {
					data[i] = msg[off+i]
				}
			}
			if change && n > 0 {
				data[n/2] ^= 0x5a
			}
			conflict := false
			for i, c := range data {
				if off+i < limit && model[off+i] >= 0 && byte(model[off+i]) != c {
					conflict = true
				}
			}
			err := s.add(uint64(off), data, limit)
			if errors.Is(err, ErrCryptoConflict) != (conflict && off+n <= limit && (s.total == 0 || off+n <= s.total)) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrClientHello) {
				t.Fatalf("add(%d, %d bytes): %v, model conflict %v", off, n, err, conflict)
			}
			if err != nil {
				return
			}
			for i, c := range data {
				model[off+i] = int(c)
			}
			for i, m := range model[:len(s.data)] {
				in := s.have[i/64]&(1<<(i%64)) != 0
				if in != (m >= 0) || in && s.data[i] != byte(m) {
					t.Fatalf("byte %d: stream %v %d, model %d", i, in, s.data[i], m)
				}
			}
			full := s.total > 0 && !slices.Contains(model[:s.total], -1)
			if s.complete() != full {
				t.Fatalf("complete %v, model %v", s.complete(), full)
			}
		}
	})
}
