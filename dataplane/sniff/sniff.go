package sniff

import (
	"strconv"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// MaxBytes is the most bytes of a stream any sniffer looks at: the
// dataplane's probe buffer, snapshot.DefaultMaxProbeBytes, which is where
// it is defined. Given MaxBytes bytes, every sniffer but Regex answers Match
// or NoMatch, and bytes past MaxBytes never change an answer, so a client
// cannot keep a connection in the probe by sending more.
const MaxBytes = snapshot.DefaultMaxProbeBytes

// Verdict is what the bytes seen so far say about one protocol. It is
// three-valued because a connection's first bytes arrive in pieces: the
// caller keeps peeking while any route it cares about says NeedMore.
type Verdict uint8

const (
	// NeedMore means the bytes so far are a possible start of the protocol
	// and more bytes may decide. At the end of the probe (deadline or
	// MaxBytes) the caller treats it as NoMatch.
	NeedMore Verdict = iota
	// Match is final: more bytes never turn it into NoMatch, and Info does
	// not change (SSH's SSHVersion excepted, see SSH).
	Match
	// NoMatch is final: no continuation of these bytes is the protocol.
	NoMatch
)

// String names the verdict for logs and test failures.
func (v Verdict) String() string {
	switch v {
	case NeedMore:
		return "need-more"
	case Match:
		return "match"
	case NoMatch:
		return "no-match"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Info is what a sniffer extracted for routing and logs. Only the fields of
// the protocol that matched are set; a NoMatch or NeedMore returns the zero
// Info. Strings and slices are copies: they never alias the peeked bytes, so
// the peek buffer can be reused once the verdict is in.
type Info struct {
	// SNI is the TLS server_name (RFC 6066 §3) in lower case without a
	// trailing dot, "" when the ClientHello carries none. Route matching
	// compares host names, and DNS names are case-insensitive.
	SNI string
	// ALPN is the TLS application_layer_protocol_negotiation list (RFC 7301)
	// in the client's order of preference, as sent (GREASE values included).
	ALPN []string
	// TLSVersions is the supported_versions list (RFC 8446 §4.2.1) without
	// GREASE values (RFC 8701), or the single legacy_version of the
	// ClientHello when the extension is absent (TLS 1.2 and older clients).
	TLSVersions []uint16

	// Method is the HTTP request method, case kept (methods are
	// case-sensitive, RFC 9110 §9.1).
	Method string
	// Host is the HTTP request's host name for routing: from an
	// absolute-form request-target if there is one, else from the Host
	// header (RFC 9112 §3.2); lower case, without port, brackets of an IPv6
	// literal or trailing dot. Routes compare host names without port.
	Host string
	// Path is the decoded path of the request-target, as net/http's
	// URL.Path has it ("/" for an absolute-form target with an empty path,
	// "" for CONNECT, "*" for OPTIONS *). Dot segments are not removed.
	Path string
	// WebSocket reports an HTTP/1.1 WebSocket opening handshake (RFC 6455
	// §4.1); set by both HTTP and WebSocket.
	WebSocket bool

	// SSHVersion is the client's identification line (RFC 4253 §4.2)
	// without CR LF, for example "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10".
	SSHVersion string

	// OpenVPNOpcode is the opcode of the client's first packet: 7
	// (P_CONTROL_HARD_RESET_CLIENT_V2) or 10 (P_CONTROL_HARD_RESET_CLIENT_V3,
	// tls-crypt-v2). Backends that only speak V2 need to know.
	OpenVPNOpcode uint8
}

// Func is the shape every protocol sniffer shares, so that the router can
// hold one per protocol (dataplane/route's table maps each protocol a route
// can match to its sniffer).
type Func func(b []byte) (Verdict, Info)

// clip keeps the first MaxBytes bytes, so that what lies past the cap can
// never change a verdict.
func clip(b []byte) []byte {
	if len(b) > MaxBytes {
		return b[:MaxBytes]
	}
	return b
}

// prefixVerdict compares the start of b with a literal: NoMatch on the first
// differing byte, NeedMore while b is a proper prefix of lit, Match once lit
// is all there.
func prefixVerdict(b []byte, lit string) Verdict {
	n := min(len(b), len(lit))
	if string(b[:n]) != lit[:n] {
		return NoMatch
	}
	if n < len(lit) {
		return NeedMore
	}
	return Match
}
