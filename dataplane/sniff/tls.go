package sniff

import (
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// Record and handshake constants (RFC 8446 §5.1 and §4, RFC 5246 §6.2).
const (
	tlsRecordTypeHandshake  = 22
	tlsRecordHeaderLen      = 5 // type, legacy_record_version, length
	tlsHandshakeHeaderLen   = 4 // msg_type, uint24 length
	tlsHandshakeClientHello = 1
	// tlsMaxRecordLen is the largest record length accepted, 2^14+2048
	// (RFC 5246 §6.2.3, the bound crypto/tls applies to a first record).
	// A plaintext handshake record should stay within 2^14 (RFC 8446
	// §5.1); the slack costs nothing and refuses nothing a server accepts.
	tlsMaxRecordLen = 1<<14 + 2048
)

// Extension types read from the ClientHello.
const (
	tlsExtServerName        = 0  // RFC 6066 §3
	tlsExtALPN              = 16 // RFC 7301 §3.1
	tlsExtSupportedVersions = 43 // RFC 8446 §4.2.1
	tlsServerNameTypeHost   = 0  // NameType host_name, RFC 6066 §3
)

// TLS sniffs a TLS ClientHello (RFC 8446 §4.1.2,
// https://www.rfc-editor.org/rfc/rfc8446#section-4.1.2; RFC 5246 §7.4.1.2 for
// TLS 1.2 and older) and extracts SNI, ALPN and the offered versions.
//
// Records: every record up to the end of the ClientHello must be a handshake
// record (type 22) with a version 3.x, x ≤ 4 (clients send 0x0301 or 0x0303;
// any of 0x0300..0x0304 is taken), and a length of 1 to 2^14+2048. The
// ClientHello may be fragmented over several records (large post-quantum key
// shares, clients that cut records small) and those over several TCP
// segments: the fragments are joined until the handshake header's length is
// met, NeedMore until then. The records must carry exactly the ClientHello,
// so a record that runs past its end is NoMatch.
//
// Cap: NoMatch as soon as it is certain that the ClientHello would not be
// complete within the first MaxBytes (16 KiB) of the stream, counting the
// record headers, so the peek never waits for what it could not hold.
// Real ClientHellos, post-quantum ones included, are 0.2 to 2 KiB.
//
// Match needs the whole ClientHello and a well-formed one: the fixed fields
// within RFC 8446 §4.1.2's limits (legacy_version 3.x, a legacy_session_id
// of at most 32 bytes, a non-empty even cipher_suites list, at least one
// compression method; crypto/tls defers some of these to later in its
// handshake, a sniffer has no later), the extensions block (absent is fine
// before TLS 1.3), and the three extensions read here. A server_name list that is empty, names a host_name
// twice, or whose host name is empty or not printable ASCII; an ALPN list
// that is empty or has an empty name; a supported_versions list of odd
// length; any of the three extensions twice (RFC 8446 §4.2: a router reading
// the first copy and a backend the second would disagree): all NoMatch.
// A ClientHello without SNI matches with SNI "".
func TLS(b []byte) (Verdict, Info) {
	hello, v := tlsClientHello(clip(b))
	if v != Match {
		return v, Info{}
	}
	info, ok := parseClientHello(hello)
	if !ok {
		return NoMatch, Info{}
	}
	return Match, info
}

// ClientHello parses a ClientHello handshake message, msg_type and 24-bit
// length included, that arrived outside TLS records: QUIC carries the
// handshake in CRYPTO frames (RFC 9001 §4), and dataplane/quic reassembles
// them. It applies TLS's rules for the message and its extensions and
// returns the same Info, so a QUIC route matches SNI and ALPN as a TLS route
// does. ok is false for anything but exactly one well-formed ClientHello.
func ClientHello(msg []byte) (info Info, ok bool) {
	return parseClientHello(msg)
}

// tlsClientHello walks the handshake records at the start of b and returns
// the ClientHello handshake message (header included) once it is complete.
// A message within one record is returned in place; one spread over several
// is copied into a new slice of at most MaxBytes.
func tlsClientHello(b []byte) ([]byte, Verdict) {
	s := cryptobyte.String(b)
	var (
		hdr     [tlsHandshakeHeaderLen]byte // the handshake header, which may itself straddle records
		carried int                         // handshake bytes in the records whose header was read
		msgLen  = -1                        // handshake header + body, once the header is known
		records int
	)
	for {
		var typ uint8
		var vers, n uint16
		if !s.ReadUint8(&typ) {
			return nil, NeedMore
		}
		if typ != tlsRecordTypeHandshake {
			return nil, NoMatch
		}
		if !s.ReadUint16(&vers) {
			return nil, NeedMore
		}
		if vers>>8 != 3 || vers&0xff > 4 {
			return nil, NoMatch
		}
		if !s.ReadUint16(&n) {
			return nil, NeedMore
		}
		if n == 0 || n > tlsMaxRecordLen {
			// RFC 8446 §5.1: no zero-length handshake fragments.
			return nil, NoMatch
		}
		recEnd := len(b) - len(s) + int(n) // stream offset of this record's end
		have := s[:min(int(n), len(s))]
		for i := 0; carried+i < tlsHandshakeHeaderLen && i < len(have); i++ {
			hdr[carried+i] = have[i]
		}
		if carried == 0 && len(have) > 0 && hdr[0] != tlsHandshakeClientHello {
			return nil, NoMatch
		}
		if msgLen < 0 && carried+len(have) >= tlsHandshakeHeaderLen {
			msgLen = tlsHandshakeHeaderLen + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
		}
		carried += int(n)

		// The least stream length at which the ClientHello can be
		// complete: this record, then, if it cannot be the last, one more
		// record header and the bytes still missing.
		end := recEnd
		switch {
		case msgLen < 0:
			if carried < tlsHandshakeHeaderLen {
				end += tlsRecordHeaderLen + tlsHandshakeHeaderLen - carried
			}
		case carried > msgLen:
			return nil, NoMatch // the record holds more than the ClientHello
		case carried < msgLen:
			end += tlsRecordHeaderLen + msgLen - carried
		}
		if end > MaxBytes {
			return nil, NoMatch
		}

		if !s.Skip(int(n)) {
			return nil, NeedMore
		}
		records++
		if carried == msgLen {
			break
		}
	}
	if records == 1 {
		return b[tlsRecordHeaderLen : tlsRecordHeaderLen+msgLen], Match
	}
	msg := make([]byte, 0, msgLen)
	s = cryptobyte.String(b)
	for range records {
		var frag cryptobyte.String
		s.Skip(1 + 2) // type and version, checked above
		s.ReadUint16LengthPrefixed(&frag)
		msg = append(msg, frag...)
	}
	return msg, Match
}

// parseClientHello reads a complete ClientHello handshake message with
// cryptobyte, checking the structure of RFC 8446 §4.1.2 and of the
// extensions it extracts, and copies out what routing needs.
func parseClientHello(msg []byte) (Info, bool) {
	s := cryptobyte.String(msg)
	var (
		typ    uint8
		body   cryptobyte.String
		legacy uint16
	)
	if !s.ReadUint8(&typ) || typ != tlsHandshakeClientHello ||
		!s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return Info{}, false
	}
	var sessionID, suites, compression cryptobyte.String
	if !body.ReadUint16(&legacy) || legacy>>8 != 3 ||
		!body.Skip(32) || // random
		!body.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!body.ReadUint16LengthPrefixed(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!body.ReadUint8LengthPrefixed(&compression) || len(compression) < 1 {
		return Info{}, false
	}

	var (
		sni, alpn, versions            cryptobyte.String
		haveSNI, haveALPN, haveVersion bool
	)
	if !body.Empty() {
		var exts cryptobyte.String
		if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
			return Info{}, false
		}
		for !exts.Empty() {
			var ext uint16
			var data cryptobyte.String
			if !exts.ReadUint16(&ext) || !exts.ReadUint16LengthPrefixed(&data) {
				return Info{}, false
			}
			ok := true
			switch ext {
			case tlsExtServerName:
				ok = !haveSNI
				haveSNI = true
				if ok {
					sni, ok = parseServerName(data)
				}
			case tlsExtALPN:
				ok = !haveALPN && validALPN(data)
				haveALPN = true
				alpn = data
			case tlsExtSupportedVersions:
				ok = !haveVersion && data.ReadUint8LengthPrefixed(&versions) &&
					data.Empty() && len(versions) >= 2 && len(versions)%2 == 0
				haveVersion = true
			}
			if !ok {
				return Info{}, false
			}
		}
	}
	return clientHelloInfo(sni, alpn, versions, haveVersion, legacy), true
}

// parseServerName reads a server_name extension (RFC 6066 §3) and returns
// the host_name, with one trailing dot removed, or nil if there is none.
func parseServerName(data cryptobyte.String) (cryptobyte.String, bool) {
	var list, host cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return nil, false
	}
	seenHost := false
	for !list.Empty() {
		var nameType uint8
		var name cryptobyte.String
		// Every NameType's data starts with a 16-bit length (RFC 6066 §3),
		// so unknown types can be skipped.
		if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
			return nil, false
		}
		if nameType != tlsServerNameTypeHost {
			continue
		}
		if seenHost {
			return nil, false // "MUST NOT contain more than one name of the same name_type"
		}
		seenHost = true
		host = name
	}
	if !seenHost {
		return nil, true
	}
	if len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1]
	}
	if len(host) == 0 {
		return nil, false
	}
	for _, c := range host {
		if c <= ' ' || c >= 0x7f {
			return nil, false // HostName is ASCII (RFC 6066 §3); no spaces or controls in a DNS name
		}
	}
	return host, true
}

// validALPN checks a ProtocolNameList (RFC 7301 §3.1): not empty, and no
// empty name.
func validALPN(data cryptobyte.String) bool {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return false
	}
	for !list.Empty() {
		var name cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&name) || name.Empty() {
			return false
		}
	}
	return true
}

// clientHelloInfo copies the extracted fields out of the peeked bytes. The
// SNI and all ALPN names share one string allocation.
func clientHelloInfo(sni, alpn, versions cryptobyte.String, haveVersion bool, legacy uint16) Info {
	var info Info

	var list cryptobyte.String
	names, size := 0, len(sni)
	if alpn != nil {
		alpn.ReadUint16LengthPrefixed(&list) // validated by validALPN
		for l := list; !l.Empty(); names++ {
			var name cryptobyte.String
			l.ReadUint8LengthPrefixed(&name)
			size += len(name)
		}
	}
	if size > 0 {
		var sb strings.Builder
		sb.Grow(size)
		for _, c := range sni {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			sb.WriteByte(c)
		}
		for l := list; !l.Empty(); {
			var name cryptobyte.String
			l.ReadUint8LengthPrefixed(&name)
			sb.Write(name)
		}
		all := sb.String()
		info.SNI, all = all[:len(sni)], all[len(sni):]
		if names > 0 {
			info.ALPN = make([]string, 0, names)
			for l := list; !l.Empty(); {
				var name cryptobyte.String
				l.ReadUint8LengthPrefixed(&name)
				info.ALPN = append(info.ALPN, all[:len(name)])
				all = all[len(name):]
			}
		}
	}

	if !haveVersion {
		info.TLSVersions = []uint16{legacy}
		return info
	}
	info.TLSVersions = make([]uint16, 0, len(versions)/2)
	for !versions.Empty() {
		var v uint16
		versions.ReadUint16(&v)
		if !isGREASE(v) {
			info.TLSVersions = append(info.TLSVersions, v)
		}
	}
	return info
}

// isGREASE reports the reserved values 0x0A0A, 0x1A1A, ... 0xFAFA that
// clients offer to keep servers tolerant (RFC 8701 §2); they are not versions.
func isGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}
