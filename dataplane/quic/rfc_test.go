package quic

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/portmux/portmux/dataplane/sniff"
)

// TestInitialKeys checks the key derivation against the client keys of RFC
// 9001 Appendix A.1 and RFC 9369 Appendix A.1.
func TestInitialKeys(t *testing.T) {
	dcid := unhex(t, "8394c8f03e515708")
	tests := []struct {
		version Version
		key, iv string
		hp      string
	}{
		{Version1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2"},
		{Version2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9"},
	}
	for _, tc := range tests {
		t.Run(tc.version.String(), func(t *testing.T) {
			p, _ := params(tc.version)
			k, err := clientInitialKeys(p, dcid)
			if err != nil {
				t.Fatal(err)
			}
			// The AEAD and header protection keys are inside ciphers;
			// check them by what they do: the hp mask of a zero
			// block, and a seal under the expected key.
			if !bytes.Equal(k.iv[:], unhex(t, tc.iv)) {
				t.Errorf("iv %x, want %s", k.iv, tc.iv)
			}
			want, err := clientInitialKeysFrom(unhex(t, tc.key), unhex(t, tc.iv), unhex(t, tc.hp))
			if err != nil {
				t.Fatal(err)
			}
			var got, exp [16]byte
			k.hp.Encrypt(got[:], make([]byte, 16))
			want.hp.Encrypt(exp[:], make([]byte, 16))
			if got != exp {
				t.Errorf("hp key differs from %s", tc.hp)
			}
			nonce := k.nonce(7)
			if !bytes.Equal(k.aead.Seal(nil, nonce[:], []byte("x"), nil), want.aead.Seal(nil, nonce[:], []byte("x"), nil)) {
				t.Errorf("key differs from %s", tc.key)
			}
		})
	}
}

// TestRFCSampleInitial opens the sample client Initial of each RFC: header
// protection, AEAD, packet number, frames, and the ClientHello's SNI and
// ALPN, as the RFC's plaintext says.
func TestRFCSampleInitial(t *testing.T) {
	wantInfo := sniff.Info{SNI: "example.com", ALPN: []string{"alpn"}, TLSVersions: []uint16{0x0304}}
	// RFC 9001 Appendix A.2: the CRYPTO frame's start, then PADDING.
	wantPlain := unhex(t, "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868")
	for _, tc := range []struct {
		name    string
		packet  string
		version Version
	}{
		{"rfc9001-v1", rfc9001ClientInitial, Version1},
		{"rfc9369-v2", rfc9369ClientInitial, Version2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := unhex(t, tc.packet)
			orig := bytes.Clone(d)
			var a Assembler
			st, err := a.Add(d)
			if st != Done || err != nil {
				t.Fatalf("Add: %v, %v", st, err)
			}
			if !bytes.Equal(d, orig) {
				t.Fatal("Add wrote to the datagram")
			}
			if !reflect.DeepEqual(a.Info(), wantInfo) {
				t.Errorf("Info %+v, want %+v", a.Info(), wantInfo)
			}
			if a.Version() != tc.version || a.DCID().String() != "8394c8f03e515708" || a.SCID().Len() != 0 {
				t.Errorf("version %v DCID %v SCID %q", a.Version(), a.DCID(), a.SCID())
			}
			if a.nextPN != 3 {
				t.Errorf("packet number %d, want 2", a.nextPN-1)
			}
			if v, info := Sniff(d); v != sniff.Match || !reflect.DeepEqual(info, wantInfo) {
				t.Errorf("Sniff: %v %+v", v, info)
			}

			// The plaintext, as the RFC prints it.
			h, err := parseLongHeader(d)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := params(h.version)
			k, _ := clientInitialKeys(p, h.dcid)
			payload, pn, err := openInitial(&k, bytes.Clone(d), &h, -1)
			if err != nil || pn != 2 {
				t.Fatalf("open: pn %d, %v", pn, err)
			}
			if !bytes.HasPrefix(payload, wantPlain) || len(payload) != 1162 {
				t.Errorf("plaintext %x... (%d bytes)", payload[:32], len(payload))
			}
		})
	}
}

// clientInitialKeysFrom makes keys from given key material, to compare
// derived keys with the RFC's.
func clientInitialKeysFrom(key, iv, hp []byte) (initialKeys, error) {
	var k initialKeys
	block, err := newAES(key)
	if err != nil {
		return k, err
	}
	if k.aead, err = newGCM(block); err != nil {
		return k, err
	}
	if k.hp, err = newAES(hp); err != nil {
		return k, err
	}
	copy(k.iv[:], iv)
	return k, nil
}
