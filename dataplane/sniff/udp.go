package sniff

import (
	"golang.org/x/net/dns/dnsmessage"
)

// The UDP sniffers below read the first datagram of a flow (a client address
// and port on a UDP listener). A datagram arrives whole, so they answer
// Match or NoMatch, never NeedMore; they share the Verdict and Info of the
// stream sniffers so that one route table can hold both. QUIC, which needs
// the Initial packets decrypted and may need several datagrams, is
// dataplane/quic's Sniff and Assembler.

// WireGuard message layout (the WireGuard paper, §5.4.2, "First Message:
// Initiator to Responder", https://www.wireguard.com/papers/wireguard.pdf,
// and wireguard-go's device/noise-protocol.go MessageInitiation).
const (
	wgTypeInitiation  = 1
	wgInitiationLen   = 148 // type 1, reserved 3, sender 4, ephemeral 32, static 32+16, timestamp 12+16, mac1 16, mac2 16
	wgEphemeralOffset = 8
	wgEphemeralLen    = 32
	wgMAC1Offset      = 116
	wgMACLen          = 16
)

// WireGuard sniffs a WireGuard handshake initiation, the first datagram of
// every WireGuard session: exactly 148 bytes, message type 1 followed by
// three reserved zero bytes (receivers drop anything else), a sender index,
// then the Noise IK first message and two MACs. The ephemeral public key and
// mac1 are checked not to be all zeros: no initiator sends those (an
// all-zero Curve25519 key gives an all-zero shared secret, which the
// responder refuses), and a datagram of zeros after the type is the most
// likely thing to be mistaken for one. mac1 cannot be verified without the
// responder's public key, so a forged initiation of the right shape
// matches; the responder checks mac1 before any work (WireGuard paper
// §5.4.4), so forwarding one costs it little.
//
// Info is empty: an initiation carries nothing to route on but, encrypted,
// the initiator's static key.
func WireGuard(b []byte) (Verdict, Info) {
	if len(b) != wgInitiationLen || b[0] != wgTypeInitiation || b[1]|b[2]|b[3] != 0 ||
		allZero(b[wgEphemeralOffset:wgEphemeralOffset+wgEphemeralLen]) ||
		allZero(b[wgMAC1Offset:wgMAC1Offset+wgMACLen]) {
		return NoMatch, Info{}
	}
	return Match, Info{}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// openvpnSessionIDLen is the length of the session id that follows the
// opcode byte of every control packet (OpenVPN's session_id.h, SID_SIZE).
const openvpnSessionIDLen = 8

// OpenVPNUDP sniffs an OpenVPN client over UDP by its first datagram, a
// hard reset. Over UDP a packet is one datagram, with no length prefix (the
// prefix of the TCP framing, see OpenVPN, exists because TCP has no packet
// boundaries); the datagram's length is the packet's. The rules are
// OpenVPN's over TCP, applied to that length:
//   - the opcode byte is P_CONTROL_HARD_RESET_CLIENT_V2 (7) or _V3 (10,
//     tls-crypt-v2) with key_id 0;
//   - the length is within that opcode's bounds (V2: 14..255, V3:
//     336..1278, those of OpenVPN's own port-share probe, ps.c);
//   - the session id, 8 bytes after the opcode, is not all zeros: the
//     client picks it at random and OpenVPN treats zero as "no session"
//     (session_id_defined in session_id.h);
//   - an unwrapped V2 reset (exactly 14 bytes) has an empty ACK array and
//     message packet id 0. Wrapped packets (--tls-auth, --tls-crypt,
//     tls-crypt-v2) are opaque past the session id.
//
// Info has the opcode, as OpenVPN's does.
func OpenVPNUDP(b []byte) (Verdict, Info) {
	n := len(b)
	if n == 0 {
		return NoMatch, Info{}
	}
	switch op := b[0]; op {
	case openvpnHardResetV2 << openvpnOpcodeShift:
		if n < openvpnV2MinLen || n > openvpnV2MaxLen {
			return NoMatch, Info{}
		}
		// opcode, session id [1:9], ACK array length [9], packet id [10:14].
		if n == openvpnPlainLen && (b[9] != 0 || b[10]|b[11]|b[12]|b[13] != 0) {
			return NoMatch, Info{}
		}
	case openvpnHardResetV3 << openvpnOpcodeShift:
		if n < openvpnV3MinLen || n > openvpnV3MaxLen {
			return NoMatch, Info{}
		}
	default:
		return NoMatch, Info{}
	}
	if allZero(b[1 : 1+openvpnSessionIDLen]) {
		return NoMatch, Info{}
	}
	return Match, Info{OpenVPNOpcode: b[0] >> openvpnOpcodeShift}
}

// DNS header bits not in dnsmessage.Header (RFC 1035 §4.1.1).
const (
	dnsHeaderLen = 12
	dnsFlagZ     = 0x40 // byte 3: reserved, must be zero
)

// DNS sniffs a DNS request over UDP (RFC 1035 §4.1,
// https://www.rfc-editor.org/rfc/rfc1035#section-4.1), parsed with
// golang.org/x/net/dns/dnsmessage. A DNS header has no magic number, so the
// rules are those of a request a server would answer:
//   - QR is 0 (a query, not a response) and the opcode is QUERY (0),
//     NOTIFY (4, RFC 1996) or UPDATE (5, RFC 2136); IQUERY is obsolete
//     (RFC 3425) and STATUS was never defined;
//   - Z is zero (RFC 1035 §4.1.1) and RCODE is 0 (a request has no error);
//   - exactly one question (RFC 9619: a QUERY must not carry more, and
//     servers answer no other count; NOTIFY and UPDATE have one zone) with
//     a name that parses (label and name lengths, compression pointers
//     within the message and not looping) and a class IN, CH, HS, NONE or
//     ANY;
//   - a QUERY has no answers, and every record of every section parses, at
//     most one of them an OPT (RFC 6891 §6.1.1).
//
// Bytes after the last record are not looked at. Info is empty.
func DNS(b []byte) (Verdict, Info) {
	if len(b) < dnsHeaderLen || b[2]&0x80 != 0 || b[3]&dnsFlagZ != 0 {
		return NoMatch, Info{}
	}
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || h.Response || h.RCode != dnsmessage.RCodeSuccess {
		return NoMatch, Info{}
	}
	qd := int(b[4])<<8 | int(b[5])
	an := int(b[6])<<8 | int(b[7])
	switch h.OpCode {
	case 0: // QUERY
		if an != 0 {
			return NoMatch, Info{}
		}
	case 4, 5: // NOTIFY, UPDATE
	default:
		return NoMatch, Info{}
	}
	if qd != 1 {
		return NoMatch, Info{}
	}
	q, err := p.Question()
	if err != nil || q.Type == 0 {
		return NoMatch, Info{}
	}
	switch q.Class {
	case dnsmessage.ClassINET, dnsmessage.ClassCHAOS, dnsmessage.ClassHESIOD, dnsClassNone, dnsmessage.ClassANY:
	default:
		return NoMatch, Info{}
	}
	if p.SkipAllQuestions() != nil || p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return NoMatch, Info{}
	}
	opts := 0
	for {
		rh, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone { //nolint:errorlint // dnsmessage returns the sentinel itself
			break
		}
		if err != nil || p.SkipAdditional() != nil {
			return NoMatch, Info{}
		}
		if rh.Type == dnsmessage.TypeOPT {
			if opts++; opts > 1 {
				return NoMatch, Info{}
			}
		}
	}
	return Match, Info{}
}

// dnsClassNone is class NONE (RFC 2136 §1.3), used in UPDATE.
const dnsClassNone dnsmessage.Class = 254
