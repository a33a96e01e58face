package quic

import "strconv"

// Version is a QUIC version number, the 32 bits after a long header's first
// byte (RFC 9000 §15). The routing layer logs it and may route on it; the
// Initial keys, labels and packet types depend on it.
type Version uint32

// The versions whose Initial packets this package reads.
const (
	// Version1 is QUIC version 1 (RFC 9000 §15).
	Version1 Version = 0x00000001
	// Version2 is QUIC version 2 (RFC 9369 §3.1), version 1 with other
	// constants, made so that middleboxes cannot ossify on version 1's.
	Version2 Version = 0x6b3343cf
)

// String names the version for logs: "v1", "v2", or the number in hex.
func (v Version) String() string {
	switch v {
	case Version1:
		return "v1"
	case Version2:
		return "v2"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

// Known reports whether this package reads the version's Initial packets.
// A client offering another version gets nothing from this package; the
// dataplane may still route it (by port) or drop it.
func (v Version) Known() bool {
	return v == Version1 || v == Version2
}

// packetType is a long header's packet type in version-independent terms;
// each version encodes it in the first byte's bits 4 and 5 its own way.
type packetType uint8

const (
	typeInitial packetType = iota
	typeZeroRTT
	typeHandshake
	typeRetry
)

// versionParams are the constants a version changes.
type versionParams struct {
	// salt is the initial_salt of RFC 9001 §5.2 (v1) or RFC 9369 §3.3.1.
	salt [20]byte
	// keyLabel, ivLabel and hpLabel are the HKDF labels of the packet
	// protection keys: RFC 9001 §5.1 (v1) and RFC 9369 §3.3.2 (v2).
	keyLabel, ivLabel, hpLabel string
	// types maps the two type bits of the first byte to a packet type:
	// RFC 9000 §17.2 Table 5 (v1) and RFC 9369 §3.2 (v2).
	types [4]packetType
}

// params returns the constants of a known version, ok false for others.
// It is a switch over literals, so nothing can change them at run time.
func params(v Version) (versionParams, bool) {
	switch v {
	case Version1:
		return versionParams{
			salt: [20]byte{
				0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
				0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
			},
			keyLabel: "quic key", ivLabel: "quic iv", hpLabel: "quic hp",
			types: [4]packetType{typeInitial, typeZeroRTT, typeHandshake, typeRetry},
		}, true
	case Version2:
		return versionParams{
			salt: [20]byte{
				0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93,
				0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
			},
			keyLabel: "quicv2 key", ivLabel: "quicv2 iv", hpLabel: "quicv2 hp",
			types: [4]packetType{typeRetry, typeInitial, typeZeroRTT, typeHandshake},
		}, true
	}
	return versionParams{}, false
}
