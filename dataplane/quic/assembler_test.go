package quic

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/portmux/portmux/dataplane/sniff"
)

// step is one datagram fed to an Assembler and what Add must answer.
type step struct {
	d    []byte
	want Status
	err  error
}

// flow feeds steps to a new Assembler with limits l and checks every
// answer, and that no datagram was written to.
func flow(t *testing.T, l Limits, steps ...step) *Assembler {
	t.Helper()
	a := NewAssembler(l)
	for i, s := range steps {
		orig := bytes.Clone(s.d)
		st, err := a.Add(s.d)
		if st != s.want || !errors.Is(err, s.err) || (s.err == nil) != (err == nil) {
			t.Fatalf("datagram %d: got %v, %v; want %v, %v", i, st, err, s.want, s.err)
		}
		if !bytes.Equal(orig, s.d) {
			t.Fatalf("datagram %d: Add wrote to it", i)
		}
		if st != a.Status() {
			t.Fatalf("datagram %d: Status() %v, Add %v", i, a.Status(), st)
		}
	}
	return a
}

func frames(fs ...[]byte) []byte { return bytes.Join(fs, nil) }

// TestAssemblerAccepts covers the shapes of real first flights: frames
// split, reordered and repeated within and across packets and datagrams,
// the frames an Initial may carry besides CRYPTO, coalesced 0-RTT, v2,
// tokens, and datagrams a server would discard in between.
func TestAssemblerAccepts(t *testing.T) {
	hello := helloMsg("a.example", []string{"h3", "h3-29"}, 0)
	big := helloMsg("big.example", []string{"h3"}, 2500) // three datagrams
	wantInfo := sniff.Info{SNI: "a.example", ALPN: []string{"h3", "h3-29"}, TLSVersions: []uint16{tls13}}
	h1, h2 := hello[:40], hello[40:]
	scid := []byte{1, 2, 3, 4}
	token := []byte("retry-token")
	zeroRTT := sealPacket(t, packetSpec{typ: typeZeroRTT, scid: scid, payload: []byte{framePing}})

	tests := []struct {
		name  string
		steps []step
		info  sniff.Info
		dcid  []byte
		v     Version
	}{
		{"one frame", []step{{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, hello)}), Done, nil}}, wantInfo, testDCID, Version1},
		{"frames reversed", []step{{initialDatagram(t, packetSpec{scid: scid, payload: frames(cryptoFrame(40, h2), cryptoFrame(0, h1))}), Done, nil}}, wantInfo, testDCID, Version1},
		{"frames repeated and overlapping", []step{{initialDatagram(t, packetSpec{scid: scid, payload: frames(
			cryptoFrame(10, hello[10:50]), cryptoFrame(0, hello), cryptoFrame(5, hello[5:70]), cryptoFrame(len(hello), nil))}), Done, nil}}, wantInfo, testDCID, Version1},
		{"ping ack padding between", []step{{initialDatagram(t, packetSpec{scid: scid, payload: frames(
			[]byte{framePing, framePadding, framePadding},
			[]byte{frameACK, 5, 0, 1, 1, 0, 2},       // largest 5, ranges 4-5 and 0-1
			[]byte{frameACKECN, 0, 0, 0, 0, 1, 2, 3}, // largest 0, ECN counts
			cryptoFrame(40, h2), []byte{framePing}, cryptoFrame(0, h1))}), Done, nil}}, wantInfo, testDCID, Version1},
		{"two Initials coalesced", []step{{initialDatagram(t, packetSpec{scid: scid, pn: 1, payload: cryptoFrame(40, h2)},
			sealPacket(t, packetSpec{scid: scid, pn: 0, payload: cryptoFrame(0, h1)})), Done, nil}}, wantInfo, testDCID, Version1},
		{"two datagrams", []step{
			{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, h1)}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 1, payload: cryptoFrame(40, h2)}), Done, nil},
		}, wantInfo, testDCID, Version1},
		{"two datagrams reordered", []step{
			{initialDatagram(t, packetSpec{scid: scid, pn: 1, payload: cryptoFrame(40, h2)}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 0, payload: cryptoFrame(0, h1)}), Done, nil},
		}, wantInfo, testDCID, Version1},
		{"retransmission", []step{
			{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, h1)}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 1, payload: cryptoFrame(0, h1)}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 2, payload: cryptoFrame(0, hello)}), Done, nil},
		}, wantInfo, testDCID, Version1},
		{"0-RTT coalesced", []step{{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, hello)}, zeroRTT), Done, nil}}, wantInfo, testDCID, Version1},
		{"0-RTT datagram first", []step{
			{zeroRTT, NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, hello)}), Done, nil},
		}, wantInfo, testDCID, Version1},
		{"zeros after the packet", []step{{append(sealPacket(t, packetSpec{scid: scid, payload: cryptoFrame(0, hello)}), make([]byte, 1200)...), Done, nil}}, wantInfo, testDCID, Version1},
		{"junk after the packet", []step{{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, hello)}, []byte{0xc0, 0, 0, 0}), Done, nil}}, wantInfo, testDCID, Version1},
		{"another connection coalesced is ignored", []step{{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, h1)},
			sealPacket(t, packetSpec{dcid: bytes.Repeat([]byte{9}, 8), payload: cryptoFrame(0, []byte{2})})), NeedMore, nil}}, sniff.Info{}, testDCID, Version1},
		{"v2", []step{{initialDatagram(t, packetSpec{version: Version2, scid: scid, payload: cryptoFrame(0, hello)}), Done, nil}}, wantInfo, testDCID, Version2},
		{"v2 two datagrams", []step{
			{initialDatagram(t, packetSpec{version: Version2, scid: scid, payload: cryptoFrame(40, h2)}, sealPacket(t, packetSpec{version: Version2, typ: typeZeroRTT, scid: scid})), NeedMore, nil},
			{initialDatagram(t, packetSpec{version: Version2, scid: scid, pn: 1, payload: cryptoFrame(0, h1)}), Done, nil},
		}, wantInfo, testDCID, Version2},
		{"token and a short DCID after Retry", []step{{initialDatagram(t, packetSpec{dcid: []byte{7, 7, 7, 7}, scid: scid, token: token, payload: cryptoFrame(0, hello)}), Done, nil}}, wantInfo, []byte{7, 7, 7, 7}, Version1},
		{"greased fixed bit with token", []step{{initialDatagram(t, packetSpec{clearFix: true, scid: scid, token: token, payload: cryptoFrame(0, hello)}), Done, nil}}, wantInfo, testDCID, Version1},
		{"20-byte connection IDs", []step{{initialDatagram(t, packetSpec{dcid: bytes.Repeat([]byte{0xdd}, 20), scid: bytes.Repeat([]byte{0x5c}, 20), payload: cryptoFrame(0, hello)}), Done, nil}}, wantInfo, bytes.Repeat([]byte{0xdd}, 20), Version1},
		{"4-byte packet numbers", []step{
			{initialDatagram(t, packetSpec{scid: scid, pn: 0x01020304, pnLen: 4, payload: cryptoFrame(0, h1)}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 0x01020305, pnLen: 2, payload: cryptoFrame(40, h2)}), Done, nil},
		}, wantInfo, testDCID, Version1},
		{"discarded datagrams between", []step{
			{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, h1)}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 1, badTag: true, payload: cryptoFrame(40, h2)}), NeedMore, ErrDecrypt},
			{sealPacket(t, packetSpec{scid: scid, pn: 1, payload: cryptoFrame(40, h2)}), NeedMore, ErrShortInitial},
			{initialDatagram(t, packetSpec{dcid: bytes.Repeat([]byte{1}, 8), scid: scid, payload: cryptoFrame(40, h2)}), NeedMore, ErrOtherConnection},
			{initialDatagram(t, packetSpec{scid: []byte{9}, payload: cryptoFrame(40, h2)}), NeedMore, ErrOtherConnection},
			{initialDatagram(t, packetSpec{version: Version2, scid: scid, payload: cryptoFrame(40, h2)}), NeedMore, ErrOtherConnection},
			{[]byte{0x40, 1, 2, 3}, NeedMore, ErrNotLongHeader},
			{nil, NeedMore, ErrNotLongHeader},
			{initialDatagram(t, packetSpec{scid: scid, pn: 2, payload: cryptoFrame(40, h2)}), Done, nil},
			{[]byte("after Done nothing is read"), Done, nil},
		}, wantInfo, testDCID, Version1},
		{"big ClientHello over three datagrams", []step{
			{initialDatagram(t, packetSpec{scid: scid, payload: cryptoFrame(0, big[:1100])}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 2, payload: cryptoFrame(2200, big[2200:])}), NeedMore, nil},
			{initialDatagram(t, packetSpec{scid: scid, pn: 1, payload: cryptoFrame(1100, big[1100:2200])}), Done, nil},
		}, sniff.Info{SNI: "big.example", ALPN: []string{"h3"}, TLSVersions: []uint16{tls13}}, testDCID, Version1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := flow(t, Limits{}, tc.steps...)
			if !reflect.DeepEqual(a.Info(), tc.info) {
				t.Errorf("Info %+v, want %+v", a.Info(), tc.info)
			}
			if a.Version() != tc.v || !bytes.Equal(a.DCID().Bytes(), tc.dcid) {
				t.Errorf("version %v DCID %v", a.Version(), a.DCID())
			}
			if a.Status() == Done && !bytes.Equal(a.SCID().Bytes(), scid) && a.SCID().Len() != 20 {
				t.Errorf("SCID %v", a.SCID())
			}
			if a.Status() == Done && a.ClientHello() == nil {
				t.Error("Done without ClientHello")
			}
			if n := slices.IndexFunc(tc.steps, func(s step) bool { return s.want == Done }) + 1; a.Datagrams() != n && (n > 0 || a.Datagrams() != len(tc.steps)) {
				t.Errorf("Datagrams() = %d", a.Datagrams())
			}
		})
	}
}

// TestAssemblerRefuses covers each reason a flow is not QUIC, on the first
// datagram (where every fault is final) and after it (where a fault inside
// a packet that decrypted is).
func TestAssemblerRefuses(t *testing.T) {
	hello := helloMsg("a.example", []string{"h3"}, 0)
	good := func(s packetSpec) []byte {
		if s.payload == nil {
			s.payload = cryptoFrame(0, hello)
		}
		return initialDatagram(t, s)
	}
	rfc := unhex(t, rfc9001ClientInitial)
	withByte := func(b []byte, i int, c byte) []byte {
		b = bytes.Clone(b)
		b[i] = c
		return b
	}
	noTLS13 := bytes.Clone(hello)
	noTLS13[len(noTLS13)-1] = 0x03 // supported_versions: 0x0303

	tests := []struct {
		name  string
		steps []step
	}{
		{"empty", []step{{nil, NotQUIC, ErrNotLongHeader}}},
		{"short header", []step{{withByte(rfc, 0, 0x41), NotQUIC, ErrNotLongHeader}}},
		{"DNS query", []step{{[]byte{0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1}, NotQUIC, ErrUnknownVersion}}},
		{"draft-29", []step{{append([]byte{0xc0, 0xff, 0, 0, 0x1d}, rfc[5:]...), NotQUIC, ErrUnknownVersion}}},
		{"version negotiation", []step{{append([]byte{0x80, 0, 0, 0, 0}, rfc[5:]...), NotQUIC, ErrUnknownVersion}}},
		{"grease version", []step{{append([]byte{0xc0, 0x1a, 0x2a, 0x3a, 0x4a}, rfc[5:]...), NotQUIC, ErrUnknownVersion}}},
		{"header only", []step{{rfc[:5], NotQUIC, ErrMalformed}}},
		{"truncated", []step{{rfc[:1199], NotQUIC, ErrMalformed}}},
		{"truncated in the DCID", []step{{rfc[:10], NotQUIC, ErrMalformed}}},
		{"DCID of 21 bytes", []step{{withByte(rfc, 5, 21), NotQUIC, ErrMalformed}}},
		{"SCID of 21 bytes", []step{{withByte(rfc, 14, 21), NotQUIC, ErrMalformed}}},
		{"DCID of 255 bytes", []step{{withByte(rfc, 5, 255), NotQUIC, ErrMalformed}}},
		{"token length past the end", []step{{append(bytes.Clone(rfc[:15]), 0x80, 0, 0x10, 0), NotQUIC, ErrMalformed}}},
		{"length past the end", []step{{withByte(rfc, 16, 0x4f), NotQUIC, ErrMalformed}}},
		{"length too short to sample", []step{{append(append(bytes.Clone(rfc[:16]), 0x13), make([]byte, 1200)...), NotQUIC, ErrMalformed}}},
		{"short Initial", []step{{sealPacket(t, packetSpec{payload: cryptoFrame(0, hello)}), NotQUIC, ErrShortInitial}}},
		{"short Initial, 1199 bytes", []step{{sealPacket(t, packetSpec{payload: frames(cryptoFrame(0, hello), make([]byte, 1199-len(sealPacket(t, packetSpec{payload: cryptoFrame(0, hello)}))))}), NotQUIC, ErrShortInitial}}},
		{"short RFC Initial", []step{{append(withByte(rfc, 17, 0x6e)[:1170], rfc[1199-29:1199]...), NotQUIC, ErrShortInitial}}},
		{"bad tag", []step{{good(packetSpec{badTag: true}), NotQUIC, ErrDecrypt}}},
		{"flipped ciphertext bit", []step{{withByte(rfc, 600, rfc[600]^0x10), NotQUIC, ErrDecrypt}}},
		{"flipped DCID bit", []step{{withByte(rfc, 8, rfc[8]^1), NotQUIC, ErrDecrypt}}},
		{"v1 Initial labelled v2: a v2 Retry", []step{{relabel(rfc, Version2, 0), NotQUIC, ErrNotInitial}}},
		{"v1 Initial labelled v2 Initial: v2 keys", []step{{relabel(rfc, Version2, 1), NotQUIC, ErrDecrypt}}},
		{"v2 Initial labelled v1 Initial: v1 keys", []step{{relabel(unhex(t, rfc9369ClientInitial), Version1, 0), NotQUIC, ErrDecrypt}}},
		{"v2 Initial labelled v1: a v1 0-RTT", []step{{relabel(unhex(t, rfc9369ClientInitial), Version1, 1), NotQUIC, ErrMalformed}}}, // no token field: Length 0
		{"handshake first", []step{{sealPacket(t, packetSpec{typ: typeHandshake}), NotQUIC, ErrNotInitial}}},
		{"retry", []step{{append([]byte{0xf0, 0, 0, 0, 1, 0, 0}, make([]byte, 1200)...), NotQUIC, ErrNotInitial}}},
		{"reserved bits", []step{{good(packetSpec{reserved: 0x04}), NotQUIC, ErrMalformed}}},
		{"fixed bit clear without token", []step{{good(packetSpec{clearFix: true}), NotQUIC, ErrMalformed}}},
		{"DCID of 7 bytes without token", []step{{good(packetSpec{dcid: testDCID[:7]}), NotQUIC, ErrMalformed}}},
		{"STREAM frame", []step{{good(packetSpec{payload: frames(cryptoFrame(0, hello), []byte{0x08, 0, 1, 'x'})}), NotQUIC, ErrFrame}}},
		{"NEW_TOKEN frame", []step{{good(packetSpec{payload: []byte{0x07, 1, 'x'}}), NotQUIC, ErrFrame}}},
		{"HANDSHAKE_DONE frame", []step{{good(packetSpec{payload: []byte{0x1e}}), NotQUIC, ErrFrame}}},
		{"CONNECTION_CLOSE frame", []step{{good(packetSpec{payload: []byte{frameConnectionClose, 0x0a, 0, 0}}), NotQUIC, ErrFrame}}},
		{"application CONNECTION_CLOSE", []step{{good(packetSpec{payload: []byte{0x1d, 0, 0}}), NotQUIC, ErrFrame}}},
		{"PADDING in two bytes", []step{{good(packetSpec{payload: frames([]byte{0x40, 0x00}, cryptoFrame(0, hello))}), NotQUIC, ErrFrame}}},
		{"CRYPTO past the packet", []step{{good(packetSpec{payload: []byte{frameCrypto, 0, 0x80, 1, 0, 0, 1}}), NotQUIC, ErrMalformed}}},
		{"CRYPTO without length", []step{{padFirst(t, frameCrypto, 0), NotQUIC, ErrMalformed}}},
		{"CRYPTO without offset", []step{{padFirst(t, frameCrypto), NotQUIC, ErrMalformed}}},
		{"ACK truncated", []step{{padFirst(t, frameACK, 5, 0, 0), NotQUIC, ErrMalformed}}},
		{"ACK below zero", []step{{good(packetSpec{payload: []byte{frameACK, 1, 0, 0, 2}}), NotQUIC, ErrMalformed}}},
		{"ACK gap below zero", []step{{good(packetSpec{payload: []byte{frameACK, 5, 0, 1, 0, 4, 0}}), NotQUIC, ErrMalformed}}},
		{"ACK range count past the end", []step{{good(packetSpec{payload: []byte{frameACK, 5, 0, 0x7f, 0xff, 0}}), NotQUIC, ErrMalformed}}},
		{"ACK ECN truncated", []step{{padFirst(t, frameACKECN, 5, 0, 0, 0, 1), NotQUIC, ErrMalformed}}},
		{"conflicting CRYPTO", []step{{good(packetSpec{payload: frames(cryptoFrame(0, hello), cryptoFrame(10, []byte("different")))}), NotQUIC, ErrCryptoConflict}}},
		{"CRYPTO past the limit", []step{{good(packetSpec{payload: cryptoFrame(DefaultMaxHelloBytes, []byte{1})}), NotQUIC, ErrTooLarge}}},
		{"CRYPTO at a huge offset", []step{{good(packetSpec{payload: frames([]byte{frameCrypto, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 1})}), NotQUIC, ErrTooLarge}}},
		{"ClientHello over the limit", []step{{good(packetSpec{payload: cryptoFrame(0, []byte{1, 0, 0x40, 0})}), NotQUIC, ErrTooLarge}}},
		{"CRYPTO past the ClientHello", []step{{good(packetSpec{payload: frames(cryptoFrame(0, hello), cryptoFrame(len(hello), []byte{0}))}), NotQUIC, ErrClientHello}}},
		{"CRYPTO past the ClientHello, first", []step{{good(packetSpec{payload: frames(cryptoFrame(len(hello), []byte{0}), cryptoFrame(0, hello))}), NotQUIC, ErrClientHello}}},
		{"not a ClientHello", []step{{good(packetSpec{payload: cryptoFrame(0, append([]byte{2}, hello[1:]...))}), NotQUIC, ErrClientHello}}},
		{"ClientHello that does not parse", []step{{good(packetSpec{payload: cryptoFrame(0, []byte{1, 0, 0, 3, 3, 3, 0})}), NotQUIC, ErrClientHello}}},
		{"ClientHello without TLS 1.3", []step{{good(packetSpec{payload: cryptoFrame(0, noTLS13)}), NotQUIC, ErrClientHello}}},
		{"TLS record instead of a handshake message", []step{{good(packetSpec{payload: cryptoFrame(0, append([]byte{22, 3, 1, 0, byte(len(hello))}, hello...))}), NotQUIC, ErrClientHello}}},
		{"frame error in a later datagram", []step{
			{good(packetSpec{payload: cryptoFrame(0, hello[:20])}), NeedMore, nil},
			{good(packetSpec{pn: 1, payload: []byte{0x08, 0}}), NotQUIC, ErrFrame},
			{good(packetSpec{pn: 2, payload: cryptoFrame(20, hello[20:])}), NotQUIC, ErrFrame},
		}},
		{"conflict in a later datagram", []step{
			{good(packetSpec{payload: cryptoFrame(0, hello[:20])}), NeedMore, nil},
			{good(packetSpec{pn: 1, payload: cryptoFrame(0, bytes.Repeat([]byte{1}, 20))}), NotQUIC, ErrCryptoConflict},
		}},
		{"0-RTT forever", []step{
			{sealPacket(t, packetSpec{typ: typeZeroRTT}), NeedMore, nil},
			{sealPacket(t, packetSpec{typ: typeZeroRTT}), NeedMore, nil},
			{good(packetSpec{badTag: true}), NotQUIC, ErrDecrypt},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := flow(t, Limits{}, tc.steps...)
			if a.Status() == NotQUIC && (!reflect.DeepEqual(a.Info(), sniff.Info{}) || a.ClientHello() != nil) {
				t.Errorf("NotQUIC with Info %+v", a.Info())
			}
			if last := tc.steps[len(tc.steps)-1]; last.want == NotQUIC && !errors.Is(a.Err(), last.err) {
				t.Errorf("Err() = %v", a.Err())
			}
		})
	}
}

// TestAssemblerLimits checks both caps and that a small MaxHelloBytes
// bounds the buffer.
func TestAssemblerLimits(t *testing.T) {
	hello := helloMsg("a.example", nil, 3000)
	var ds [][]byte
	for i, f := range cryptoFrames(hello, 1000) {
		ds = append(ds, initialDatagram(t, packetSpec{pn: uint64(i), payload: f}))
	}
	flow(t, Limits{MaxDatagrams: 3}, step{ds[0], NeedMore, nil}, step{ds[1], NeedMore, nil}, step{ds[2], NeedMore, nil},
		step{ds[3], NotQUIC, ErrTooManyDatagrams}, step{ds[3], NotQUIC, ErrTooManyDatagrams})
	flow(t, Limits{MaxDatagrams: 4}, step{ds[0], NeedMore, nil}, step{ds[1], NeedMore, nil}, step{ds[2], NeedMore, nil},
		step{ds[3], Done, nil})
	flow(t, Limits{MaxHelloBytes: 1500}, step{ds[0], NotQUIC, ErrTooLarge})
	flow(t, Limits{MaxHelloBytes: 1500}, step{ds[1], NotQUIC, ErrTooLarge})
	a := flow(t, Limits{MaxHelloBytes: 1500},
		step{initialDatagram(t, packetSpec{payload: cryptoFrame(200, hello[200:1200])}), NeedMore, nil},
		step{initialDatagram(t, packetSpec{pn: 1, payload: cryptoFrame(1200, hello[1200:1500])}), NeedMore, nil},
		step{ds[0], NotQUIC, ErrTooLarge})
	if cap(a.stream.data) > 1500 || cap(a.stream.have)*64 > 1500+63 {
		t.Errorf("buffer of %d bytes with a limit of 1500", cap(a.stream.data))
	}
}

// TestAssemblerOrders feeds a real ClientHello (crypto/tls's, post-quantum,
// 1.8 KiB) cut into CRYPTO frames and spread over datagrams, in every
// order of the datagrams: Done exactly at the last one, with the SNI and
// ALPN crypto/tls was given.
func TestAssemblerOrders(t *testing.T) {
	hello := goQUICClientHello(t, "orders.example", []string{"h3", "doq"})
	want := sniff.Info{SNI: "orders.example", ALPN: []string{"h3", "doq"}, TLSVersions: []uint16{tls13}}
	for _, size := range []int{len(hello), 1000, 600, 257, 100} {
		fs := cryptoFrames(hello, size)
		for _, perDatagram := range []int{1, 2, 3} {
			var ds [][]byte
			for i := 0; i < len(fs); i += perDatagram {
				pn := uint64(len(ds))
				ds = append(ds, initialDatagram(t, packetSpec{pn: pn, payload: frames(fs[i:min(i+perDatagram, len(fs))]...)}))
			}
			if len(ds) > 5 {
				continue // 6! orders is too many; random orders below
			}
			for _, order := range permutations(len(ds)) {
				checkOrder(t, ds, order, want)
			}
		}
	}
	// Many frames over many datagrams, with repeats: random orders.
	rng := rand.New(rand.NewPCG(1, 2))
	fs := cryptoFrames(hello, 37)
	for range 200 {
		rng.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
		var ds [][]byte
		for i := 0; i < len(fs); i += 12 {
			ds = append(ds, initialDatagram(t, packetSpec{pn: uint64(len(ds)), payload: frames(fs[i:min(i+12, len(fs))]...)}))
		}
		dup := rng.IntN(len(ds))
		ds = slices.Insert(ds, rng.IntN(len(ds)), ds[dup])
		order := rng.Perm(len(ds))
		checkOrder(t, ds, order, want)
	}
}

func checkOrder(t *testing.T, ds [][]byte, order []int, want sniff.Info) {
	t.Helper()
	var a Assembler
	for i, k := range order {
		st, err := a.Add(ds[k])
		if err != nil {
			t.Fatalf("order %v, datagram %d: %v", order, i, err)
		}
		if st == Done {
			// Done as soon as every byte is in: a duplicate may be
			// left over.
			if !reflect.DeepEqual(a.Info(), want) {
				t.Fatalf("order %v: Info %+v", order, a.Info())
			}
			chi, ok := goQUICServerSees(a.ClientHello())
			if !ok || chi.ServerName != want.SNI || !slices.Equal(chi.SupportedProtos, want.ALPN) {
				t.Fatalf("order %v: crypto/tls sees %v %+v", order, ok, chi)
			}
			return
		}
	}
	t.Fatalf("order %v: %v after %d datagrams", order, a.Status(), len(order))
}

// permutations lists every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

// TestSniff checks the one-datagram form on the three outcomes.
func TestSniff(t *testing.T) {
	small := goQUICClientHello(t, "s.example", []string{"h3"}, tls.X25519)
	pq := goQUICClientHello(t, "s.example", []string{"h3"})
	if v, info := Sniff(initialDatagram(t, packetSpec{payload: cryptoFrame(0, small)})); v != sniff.Match || info.SNI != "s.example" {
		t.Errorf("whole ClientHello: %v %+v", v, info)
	}
	if v, info := Sniff(initialDatagram(t, packetSpec{payload: cryptoFrame(0, pq[:1000])})); v != sniff.NeedMore || !reflect.DeepEqual(info, sniff.Info{}) {
		t.Errorf("first half: %v %+v", v, info)
	}
	if v, _ := Sniff(sealPacket(t, packetSpec{payload: cryptoFrame(0, small)})); v != sniff.NoMatch {
		t.Errorf("short Initial: %v", v)
	}
}

// padFirst seals a 1200-byte Initial whose payload ends with frame, after
// PADDING, so that the frame is cut by the packet's end.
func padFirst(t *testing.T, frame ...byte) []byte {
	t.Helper()
	return sealPacket(t, packetSpec{payload: append(make([]byte, 1180), frame...)})
}

// relabel returns packet with another version and type bits.
func relabel(packet []byte, v Version, typeBits byte) []byte {
	p := bytes.Clone(packet)
	p[0] = p[0]&^0x30 | typeBits<<4
	binary.BigEndian.PutUint32(p[1:5], uint32(v))
	return p
}
