package quic

// Header reading without keys, for a relay that follows QUIC connections
// across client addresses (RFC 9000 §9) without decrypting anything past
// the client's first flight.

// LongHeaderIDs reads the connection IDs of the first packet of datagram
// when it is a long-header packet of version 1 or 2 (any type but Retry,
// which carries no Length): the packet's Destination and Source Connection
// IDs as it sent them. A server's long-header packets name, in their SCID,
// the connection ID its client will address short-header packets to, so a
// relay learns from them which IDs belong to a session. Nothing is
// decrypted or allocated; ok is false for anything else.
func LongHeaderIDs(datagram []byte) (v Version, dcid, scid ConnectionID, ok bool) {
	if len(datagram) == 0 || datagram[0]&headerFormLong == 0 {
		return 0, dcid, scid, false
	}
	h, err := parseLongHeader(datagram)
	if err != nil {
		return 0, dcid, scid, false
	}
	return h.version, connectionID(h.dcid), connectionID(h.scid), true
}

// ShortHeaderDCID returns the first n bytes after a short header's first
// byte (RFC 9000 §17.3): its Destination Connection ID when the receiver's
// IDs are n bytes long, which only the receiver knows; a relay that learnt
// a session's IDs tries the lengths it learnt. ok is false when datagram
// does not start with a short header (form bit clear, fixed bit set) or is
// too short; a short-header packet also carries a packet number and an AEAD
// tag, so n bytes alone are not a packet.
func ShortHeaderDCID(datagram []byte, n int) (ConnectionID, bool) {
	if n < 0 || n > MaxConnectionIDLen || len(datagram) < 1+n+1+16 {
		return ConnectionID{}, false
	}
	if datagram[0]&(headerFormLong|fixedBit) != fixedBit {
		return ConnectionID{}, false
	}
	return connectionID(datagram[1 : 1+n]), true
}

// IsShortInitial reports whether datagram starts with an Initial packet of
// version 1 or 2 and is shorter than MinInitialDatagramLen: a datagram a
// server must discard (RFC 9000 §14.1), so a relay drops it rather than
// carry it to a backend that would. It reads the header only.
func IsShortInitial(datagram []byte) bool {
	if len(datagram) >= MinInitialDatagramLen || len(datagram) < 5 || datagram[0]&headerFormLong == 0 {
		return false
	}
	h, err := parseLongHeader(datagram)
	if err != nil {
		// A header cut short by the datagram's end is still an Initial
		// of a known version: the type is in the first byte.
		v := Version(uint32(datagram[1])<<24 | uint32(datagram[2])<<16 | uint32(datagram[3])<<8 | uint32(datagram[4]))
		p, ok := params(v)
		return ok && p.types[datagram[0]>>4&0x03] == typeInitial
	}
	return h.typ == typeInitial
}
