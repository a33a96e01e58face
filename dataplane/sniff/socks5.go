package sniff

// socks5Version is the VER byte of every SOCKS5 message (RFC 1928 §3).
const socks5Version = 5

// SOCKS5 sniffs a SOCKS5 client greeting (RFC 1928 §3,
// https://www.rfc-editor.org/rfc/rfc1928#section-3): VER=5, NMETHODS, then
// NMETHODS method bytes. It answers Match once the whole greeting is there
// (2+NMETHODS bytes; anything after it is ignored), NeedMore before, and
// NoMatch for another version or NMETHODS=0, which offers the server nothing
// to select. Method values are not checked: every byte value is assigned or
// reserved for private methods. Nothing is extracted.
func SOCKS5(b []byte) (Verdict, Info) {
	if len(b) == 0 {
		return NeedMore, Info{}
	}
	if b[0] != socks5Version {
		return NoMatch, Info{}
	}
	if len(b) < 2 {
		return NeedMore, Info{}
	}
	n := int(b[1])
	if n == 0 {
		return NoMatch, Info{}
	}
	if len(b) < 2+n {
		return NeedMore, Info{}
	}
	return Match, Info{}
}
