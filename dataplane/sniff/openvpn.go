package sniff

// OpenVPN control-channel constants (OpenVPN's ssl_pkt.h): the opcode is the
// high 5 bits of a packet's first byte, the key_id the low 3.
const (
	openvpnOpcodeShift     = 3
	openvpnHardResetV2     = 7  // P_CONTROL_HARD_RESET_CLIENT_V2
	openvpnHardResetV3     = 10 // P_CONTROL_HARD_RESET_CLIENT_V3 (tls-crypt-v2)
	openvpnLengthFieldSize = 2  // TCP framing: big-endian packet length
)

// Packet length bounds, those OpenVPN's own port-share probe uses
// (is_openvpn_protocol in ps.c), so that PortMux accepts what an OpenVPN
// server sharing its port would:
//   - V2: 14 (no wrapping) to 255. --tls-auth adds an HMAC (16 to 64 bytes)
//     and a replay packet id with timestamp (8); --tls-crypt adds 8 and a
//     32-byte tag; the largest is well under 255.
//   - V3: at least 336 (a wrapped client key, WKc, is at least 290 bytes:
//     2-byte length, 256-bit tag, 2048-bit key; plus the tls-crypt header)
//     and below 1024+255 (TLS_CRYPT_V2_MAX_WKC_LEN is 1024, with room for
//     the rest of the packet).
const (
	openvpnV2MinLen = 14
	openvpnV2MaxLen = 255
	openvpnV3MinLen = 336
	openvpnV3MaxLen = 1024 + 255 - 1
)

// openvpnPlainLen is the length of an unwrapped V2 hard reset: opcode (1),
// session id (8), ACK array length (1, zero: nothing to acknowledge yet),
// message packet id (4, zero: the first reliable packet).
const openvpnPlainLen = 1 + 8 + 1 + 4

// OpenVPN sniffs an OpenVPN client over TCP by its first packet, a hard
// reset. OpenVPN has no RFC; the format is its source's: opcodes and the
// control packet header in ssl_pkt.h, the ACK array and message packet id in
// reliable.c, the length bounds in ps.c (see
// https://github.com/OpenVPN/openvpn/tree/master/src/openvpn). Over TCP a
// packet is a 2-byte big-endian length, then the opcode byte
// opcode<<3 | key_id.
//
// The rule:
//   - 3 bytes decide the shape: the opcode byte is P_CONTROL_HARD_RESET_
//     CLIENT_V2 (7) or _V3 (10, tls-crypt-v2) with key_id 0 (a new session
//     always starts with key 0), and the length is within that opcode's
//     bounds (V2: 14..255, V3: 336..1278, OpenVPN's own port-share rule).
//     The first byte alone already rules out lengths above 1278.
//   - Match needs the whole first packet (2+length bytes, at most 1280).
//     Clients send it in one write, so waiting costs nothing, and it lets
//     the unwrapped form be checked: a V2 packet of exactly 14 bytes must
//     have an empty ACK array and message packet id 0. Wrapped packets
//     (--tls-auth, --tls-crypt, tls-crypt-v2) are opaque past the opcode
//     and session id, so only their length and opcode are checked.
func OpenVPN(b []byte) (Verdict, Info) {
	if len(b) == 0 {
		return NeedMore, Info{}
	}
	if int(b[0]) > openvpnV3MaxLen>>8 {
		return NoMatch, Info{}
	}
	if len(b) < openvpnLengthFieldSize {
		return NeedMore, Info{}
	}
	n := int(b[0])<<8 | int(b[1])
	if (n < openvpnV2MinLen || n > openvpnV2MaxLen) && (n < openvpnV3MinLen || n > openvpnV3MaxLen) {
		return NoMatch, Info{}
	}
	if len(b) < openvpnLengthFieldSize+1 {
		return NeedMore, Info{}
	}
	op := b[2]
	switch op {
	case openvpnHardResetV2 << openvpnOpcodeShift:
		if n > openvpnV2MaxLen {
			return NoMatch, Info{}
		}
	case openvpnHardResetV3 << openvpnOpcodeShift:
		if n < openvpnV3MinLen {
			return NoMatch, Info{}
		}
	default:
		return NoMatch, Info{}
	}
	pkt := b[openvpnLengthFieldSize:]
	if len(pkt) < n {
		return NeedMore, Info{}
	}
	if n == openvpnPlainLen && op == openvpnHardResetV2<<openvpnOpcodeShift {
		// opcode, session id [1:9], ACK array length [9], packet id [10:14].
		if pkt[9] != 0 || pkt[10]|pkt[11]|pkt[12]|pkt[13] != 0 {
			return NoMatch, Info{}
		}
	}
	return Match, Info{OpenVPNOpcode: op >> openvpnOpcodeShift}
}
