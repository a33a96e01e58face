package quic

import (
	"crypto/aes"
	"encoding/binary"
)

// MinInitialDatagramLen is the smallest UDP payload that may carry an
// Initial packet: a client pads every datagram with an Initial to at least
// 1200 bytes, and a server must discard an Initial in a smaller one (RFC 9000
// §14.1), so that a spoofed source address cannot get more bytes back than
// it sent (amplification, RFC 9000 §8.1).
const MinInitialDatagramLen = 1200

// minInitialDCIDLen is the shortest Destination Connection ID of a client
// that has not heard from the server: "at least 8 bytes" (RFC 9000 §7.2).
// After a Retry the client uses the server's connection ID, which may be
// shorter, and then carries the Retry's token, so the bound is applied to
// Initial packets without a token only.
const minInitialDCIDLen = 8

// First-byte bits of a long header (RFC 9000 §17.2).
const (
	headerFormLong = 0x80
	fixedBit       = 0x40
	reservedBits   = 0x0c // protected; zero after removing protection
	pnLenBits      = 0x03 // protected; packet number length minus one
)

// longHeader is the clear part of a long-header packet, up to the packet
// number (RFC 9000 §17.2, §17.2.2). Its slices alias the datagram.
type longHeader struct {
	version  Version
	typ      packetType
	dcid     []byte
	scid     []byte
	token    []byte // Initial packets only
	pnOffset int    // where the protected packet number starts
	end      int    // the packet's length: pnOffset + the Length field
}

// parseLongHeader reads the long header at the start of b, whose first bit
// the caller has seen set, and bounds the packet with its Length field so
// that the next coalesced packet can be found (RFC 9000 §12.2).
//
// The version is read first, since the rest of the header's layout is only
// known for known versions (RFC 8999 §5.1 lets others have connection IDs
// of up to 255 bytes). Retry packets have no Length and never come from a
// client, so they are refused as ErrNotInitial.
func parseLongHeader(b []byte) (longHeader, error) {
	var h longHeader
	if len(b) < 5 {
		return h, ErrMalformed
	}
	first := b[0]
	h.version = Version(binary.BigEndian.Uint32(b[1:5]))
	p, ok := params(h.version)
	if !ok {
		return h, ErrUnknownVersion
	}
	h.typ = p.types[first>>4&0x03]
	if h.typ == typeRetry {
		return h, ErrNotInitial
	}
	rest := b[5:]
	var ok1, ok2 bool
	h.dcid, rest, ok1 = readConnectionID(rest)
	h.scid, rest, ok2 = readConnectionID(rest)
	if !ok1 || !ok2 {
		return h, ErrMalformed
	}
	if h.typ == typeInitial {
		n, w, ok := readVarint(rest)
		if !ok || n > uint64(len(rest)-w) {
			return h, ErrMalformed
		}
		h.token, rest = rest[w:w+int(n)], rest[w+int(n):]
	}
	length, w, ok := readVarint(rest)
	if !ok {
		return h, ErrMalformed
	}
	h.pnOffset = len(b) - len(rest) + w
	// Header protection samples 16 bytes starting 4 bytes after the start
	// of the packet number (RFC 9001 §5.4.2), so Length is at least 20.
	if length > uint64(len(b)-h.pnOffset) || length < 4+hpSampleLen {
		return h, ErrMalformed
	}
	h.end = h.pnOffset + int(length)
	// The fixed bit is 1 (RFC 9000 §17.2) unless the client greases it,
	// which it may do in an Initial only when it has a token from a server
	// that allowed it (RFC 9287 §3.1), and in 0-RTT packets of such a
	// server.
	if first&fixedBit == 0 && (h.typ == typeHandshake || h.typ == typeInitial && len(h.token) == 0) {
		return h, ErrMalformed
	}
	return h, nil
}

// readConnectionID reads a length-prefixed connection ID of at most
// MaxConnectionIDLen bytes (RFC 9000 §17.2).
func readConnectionID(b []byte) (id, rest []byte, ok bool) {
	if len(b) == 0 {
		return nil, nil, false
	}
	n := int(b[0])
	if n > MaxConnectionIDLen || len(b)-1 < n {
		return nil, nil, false
	}
	return b[1 : 1+n], b[1+n:], true
}

// openInitial removes the header protection of the Initial packet pkt and
// opens its AEAD, in place: pkt must be the Assembler's copy of the packet,
// never the caller's datagram. largest is the largest packet number
// received so far in the Initial space (-1 for none), to expand the
// truncated packet number. It returns the plaintext payload, aliasing pkt,
// and the packet number.
func openInitial(k *initialKeys, pkt []byte, h *longHeader, largest int64) ([]byte, int64, error) {
	// RFC 9001 §5.4.1: the mask is AES-ECB of the sample; a long header
	// protects the low 4 bits of the first byte, then as many packet
	// number bytes as those bits say.
	var mask [aes.BlockSize]byte
	k.hp.Encrypt(mask[:], pkt[h.pnOffset+4:h.pnOffset+4+hpSampleLen])
	pkt[0] ^= mask[0] & 0x0f
	pnLen := int(pkt[0]&pnLenBits) + 1
	var truncated int64
	for i := range pnLen {
		pkt[h.pnOffset+i] ^= mask[1+i]
		truncated = truncated<<8 | int64(pkt[h.pnOffset+i])
	}
	pn := decodePacketNumber(largest, truncated, pnLen*8)
	hdrLen := h.pnOffset + pnLen
	nonce := k.nonce(uint64(pn))
	// RFC 9001 §5.3: the associated data is the header, unprotected, up
	// to and including the packet number.
	payload, err := k.aead.Open(pkt[hdrLen:hdrLen], nonce[:], pkt[hdrLen:h.end], pkt[:hdrLen])
	if err != nil {
		return nil, 0, ErrDecrypt
	}
	// RFC 9000 §17.2: reserved bits are checked once both protections are
	// off; RFC 9000 §12.4: a packet carries at least one frame.
	if pkt[0]&reservedBits != 0 || len(payload) == 0 {
		return nil, 0, ErrMalformed
	}
	return payload, pn, nil
}

// decodePacketNumber expands a truncated packet number of bits bits to the
// full one closest to the next expected, largest+1 (RFC 9000 §17.1 and
// Appendix A.3, whose pseudocode this follows).
func decodePacketNumber(largest, truncated int64, bits int) int64 {
	expected := largest + 1
	win := int64(1) << bits
	hwin := win / 2
	mask := win - 1
	candidate := expected&^mask | truncated
	switch {
	case candidate <= expected-hwin && candidate < 1<<62-win:
		return candidate + win
	case candidate > expected+hwin && candidate >= win:
		return candidate - win
	}
	return candidate
}
