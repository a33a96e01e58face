package quic

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// unhex decodes hex with spaces and newlines, as RFCs print it.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// packetSpec describes a long-header packet for sealPacket. Zero fields
// take what a real client sends: an Initial of v1 with an 8-byte DCID,
// packet number 0 in one byte.
type packetSpec struct {
	version  Version
	typ      packetType
	dcid     []byte
	scid     []byte
	token    []byte
	pn       uint64
	pnLen    int
	payload  []byte // plaintext frames
	reserved byte   // reserved bits to set, 0x0c at most
	clearFix bool   // clear the fixed bit
	badTag   bool   // flip a bit of the AEAD tag
}

var testDCID = []byte{0x8d, 0xd8, 0x3c, 0x27, 0x8b, 0xa1, 0x05, 0x9e}

// sealPacket builds a protected packet as a client would (RFC 9001 §5.3,
// §5.4), with the package's key derivation and the standard library's AEAD
// and AES. The RFC vectors check the derivation independently.
func sealPacket(t testing.TB, s packetSpec) []byte {
	t.Helper()
	if s.version == 0 {
		s.version = Version1
	}
	if s.dcid == nil {
		s.dcid = testDCID
	}
	if s.pnLen == 0 {
		s.pnLen = 1
	}
	p, ok := params(s.version)
	if !ok {
		t.Fatalf("no params for %v", s.version)
	}
	var bits byte
	for i, typ := range p.types {
		if typ == s.typ {
			bits = byte(i)
		}
	}
	first := headerFormLong | fixedBit | bits<<4 | s.reserved | byte(s.pnLen-1)
	if s.clearFix {
		first &^= fixedBit
	}
	hdr := []byte{first}
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(s.version))
	hdr = append(hdr, byte(len(s.dcid)))
	hdr = append(hdr, s.dcid...)
	hdr = append(hdr, byte(len(s.scid)))
	hdr = append(hdr, s.scid...)
	if s.typ == typeInitial {
		hdr = appendVarint(hdr, uint64(len(s.token)))
		hdr = append(hdr, s.token...)
	}
	payload := s.payload
	if n := s.pnLen + len(payload) + tagLen; n < 4+hpSampleLen {
		payload = append(append([]byte(nil), payload...), make([]byte, 4+hpSampleLen-n)...)
	}
	hdr = append(hdr, 0x40|byte((s.pnLen+len(payload)+tagLen)>>8), byte(s.pnLen+len(payload)+tagLen)) // 2-byte varint
	pnOffset := len(hdr)
	for i := s.pnLen - 1; i >= 0; i-- {
		hdr = append(hdr, byte(s.pn>>(8*i)))
	}
	keys, err := clientInitialKeys(p, s.dcid)
	if err != nil {
		t.Fatal(err)
	}
	nonce := keys.nonce(s.pn)
	pkt := keys.aead.Seal(hdr, nonce[:], payload, hdr)
	if s.badTag {
		pkt[len(pkt)-1] ^= 1
	}
	var mask [16]byte
	keys.hp.Encrypt(mask[:], pkt[pnOffset+4:pnOffset+4+hpSampleLen])
	pkt[0] ^= mask[0] & 0x0f
	for i := range s.pnLen {
		pkt[pnOffset+i] ^= mask[1+i]
	}
	return pkt
}

// initialDatagram seals an Initial packet whose payload is padded with
// PADDING frames so that the datagram, with the packets coalesced after it,
// is 1200 bytes.
func initialDatagram(t testing.TB, s packetSpec, after ...[]byte) []byte {
	t.Helper()
	rest := 0
	for _, p := range after {
		rest += len(p)
	}
	for {
		n := len(sealPacket(t, s))
		if n+rest >= MinInitialDatagramLen {
			break
		}
		s.payload = append(bytes.Clone(s.payload), make([]byte, MinInitialDatagramLen-n-rest)...)
	}
	d := sealPacket(t, s)
	for _, p := range after {
		d = append(d, p...)
	}
	return d
}

// appendVarint appends v in the shortest encoding of RFC 9000 §16.
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, uint16(v)|0x4000)
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x80000000)
	}
	return binary.BigEndian.AppendUint64(b, v|0xc000000000000000)
}

// cryptoFrame is a CRYPTO frame (RFC 9000 §19.6).
func cryptoFrame(off int, data []byte) []byte {
	b := appendVarint([]byte{frameCrypto}, uint64(off))
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// cryptoFrames cuts msg into CRYPTO frames of at most size bytes.
func cryptoFrames(msg []byte, size int) [][]byte {
	var frames [][]byte
	for off := 0; off < len(msg); off += size {
		frames = append(frames, cryptoFrame(off, msg[off:min(off+size, len(msg))]))
	}
	return frames
}

// goQUICClientHello is the ClientHello crypto/tls sends as a QUIC client
// (RFC 9001 §4), with Go's default key shares (X25519MLKEM768 first, so
// about 1.8 KiB) unless curves are given.
func goQUICClientHello(t testing.TB, sni string, alpn []string, curves ...tls.CurveID) []byte {
	t.Helper()
	c := tls.QUICClient(&tls.QUICConfig{TLSConfig: &tls.Config{
		ServerName: sni, NextProtos: alpn, CurvePreferences: curves, MinVersion: tls.VersionTLS13,
	}})
	c.SetTransportParameters([]byte{0x04, 0x04, 0x80, 0x10, 0x00, 0x00}) // initial_max_data
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		e := c.NextEvent()
		switch e.Kind {
		case tls.QUICWriteData:
			if e.Level == tls.QUICEncryptionLevelInitial {
				return append([]byte(nil), e.Data...)
			}
		case tls.QUICNoEvent:
			t.Fatal("crypto/tls wrote no ClientHello")
		}
	}
}

// goQUICServerSees hands a ClientHello to crypto/tls as a QUIC server and
// returns what it parsed of it, if it got as far as asking for a config:
// the oracle the fuzz and corpus tests hold the package to.
func goQUICServerSees(hello []byte) (*tls.ClientHelloInfo, bool) {
	var got *tls.ClientHelloInfo
	s := tls.QUICServer(&tls.QUICConfig{TLSConfig: &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			got = chi
			return nil, errStopHandshake
		},
	}})
	defer s.Close()
	if err := s.Start(context.Background()); err != nil {
		return nil, false
	}
	_ = s.HandleData(tls.QUICEncryptionLevelInitial, hello)
	return got, got != nil
}

type stopHandshake struct{}

func (stopHandshake) Error() string { return "stop after the ClientHello" }

var errStopHandshake error = stopHandshake{}

// helloMsg builds a minimal ClientHello handshake message offering TLS 1.3
// with the given SNI and ALPN, plus a padding extension of pad bytes to make
// it of a chosen size.
func helloMsg(sni string, alpn []string, pad int) []byte {
	var b cryptobyte.Builder
	b.AddUint8(handshakeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			if sni != "" {
				b.AddUint16(0)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8(0)
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(sni)) })
					})
				})
			}
			if len(alpn) > 0 {
				b.AddUint16(16)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						for _, p := range alpn {
							b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
						}
					})
				})
			}
			b.AddUint16(43) // supported_versions: TLS 1.3
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(tls13) })
			})
			if pad > 0 {
				b.AddUint16(21)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, pad)) })
			}
		})
	})
	return b.BytesOrPanic()
}

func newAES(key []byte) (cipher.Block, error)    { return aes.NewCipher(key) }
func newGCM(b cipher.Block) (cipher.AEAD, error) { return cipher.NewGCM(b) }
