package quic

import (
	"bytes"
	"testing"
)

// TestLongHeaderIDs reads the IDs of real first flights without keys, as
// the Assembler does with them, and refuses what is not a long header of
// a known version.
func TestLongHeaderIDs(t *testing.T) {
	for _, tc := range flightCases() {
		if tc.status != Done {
			continue
		}
		d := readFlight(t, corpusDir, tc.flight)[0]
		v, dcid, scid, ok := LongHeaderIDs(d)
		if !ok || v != tc.v || dcid.String() != tc.dcid || scid.String() != tc.scid {
			t.Errorf("%s: %v %v %s %s, want %v %s %s", tc.flight, ok, v, dcid, scid, tc.v, tc.dcid, tc.scid)
		}
	}
	handshake := sealPacket(t, packetSpec{typ: typeHandshake, dcid: []byte{1, 2, 3, 4}, scid: []byte{9, 8, 7, 6, 5}, payload: make([]byte, 30)})
	if _, dcid, scid, ok := LongHeaderIDs(handshake); !ok || dcid.String() != "01020304" || scid.String() != "0908070605" {
		t.Errorf("a Handshake packet: %v %s %s", ok, dcid, scid)
	}
	for name, d := range map[string][]byte{
		"empty":           nil,
		"short header":    append([]byte{0x40}, make([]byte, 40)...),
		"unknown version": {0xc0, 0xff, 0, 0, 0x1d, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"cut":             handshake[:7],
	} {
		if _, _, _, ok := LongHeaderIDs(d); ok {
			t.Errorf("%s: read as a long header", name)
		}
	}
}

func TestShortHeaderDCID(t *testing.T) {
	cid := []byte{0xaa, 0xbb, 0xcc, 0xdd}
	pkt := append(append([]byte{0x41}, cid...), make([]byte, 20)...)
	for _, tc := range []struct {
		name string
		d    []byte
		n    int
		want []byte
		ok   bool
	}{
		{"4-byte ID", pkt, 4, cid, true},
		{"0-byte ID", pkt, 0, []byte{}, true},
		{"long header", append([]byte{0xc1}, pkt[1:]...), 4, nil, false},
		{"fixed bit clear", append([]byte{0x01}, pkt[1:]...), 4, nil, false},
		{"too short for a packet", pkt[:1+4+16], 4, nil, false},
		{"ID longer than 20", pkt, 21, nil, false},
		{"negative", pkt, -1, nil, false},
	} {
		got, ok := ShortHeaderDCID(tc.d, tc.n)
		if ok != tc.ok || ok && !bytes.Equal(got.Bytes(), tc.want) {
			t.Errorf("%s: %x %v, want %x %v", tc.name, got.Bytes(), ok, tc.want, tc.ok)
		}
	}
}

func TestIsShortInitial(t *testing.T) {
	rfc := unhex(t, rfc9001ClientInitial)
	v2 := unhex(t, rfc9369ClientInitial)
	for _, tc := range []struct {
		name string
		d    []byte
		want bool
	}{
		{"RFC 9001 Initial", rfc, false},
		{"cut to 1199", rfc[:1199], true},
		{"cut to its header", rfc[:20], true},
		{"cut to its version", rfc[:5], true},
		{"v2 cut", v2[:600], true},
		{"a small Handshake packet", sealPacket(t, packetSpec{typ: typeHandshake, payload: make([]byte, 30)}), false},
		{"unknown version", append([]byte{0xc0, 0xff, 0, 0, 0x1d}, rfc[5:300]...), false},
		{"short header", append([]byte{0x40}, rfc[1:300]...), false},
		{"four bytes", rfc[:4], false},
	} {
		if got := IsShortInitial(tc.d); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
