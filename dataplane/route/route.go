// Package route decides which route of a listener takes a connection, from
// the bytes the client has sent so far. It is pure: no reading, no clocks.
//
// Routes are tried in order and the first that matches wins. A route whose
// sniffer needs more bytes holds the decision back, even when a later route
// would match already: otherwise the order the user wrote would depend on
// how the client's bytes were split into packets. When the probe ends (the
// probe timeout, end of stream, or the byte cap), routes still undecided
// count as no match.
//
// The sniffers look at the whole buffer each time; Prober spaces the looks
// at one connection so that its cost stays linear in the bytes it sent.
//
// Two protocols are not sniffers: "any" matches every connection at once,
// bytes or not, so it belongs last; "timeout" matches a connection that
// ended its probe without sending a byte (server-speaks-first clients), so
// it belongs before any.
package route

import (
	"path"
	"strings"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/sniff"
)

// Decision is the outcome of looking at a connection's first bytes.
type Decision struct {
	// Route is the index of the chosen route in the listener's routes, or -1
	// when none matched (or NeedMore).
	Route int

	// NeedMore means an undecided route holds the decision: read more bytes
	// and ask again, or ask with done set when no more will come.
	NeedMore bool

	// Info is what the chosen route's sniffer extracted (SNI, Host, ...).
	Info sniff.Info
}

// Decide picks a route for data. done says that no more bytes will arrive
// before the decision must be taken.
func Decide(routes []snapshot.Route, data []byte, done bool) Decision {
	return DecideTerminated(routes, data, done, "")
}

// DecideTerminated is Decide for a stream that comes out of a TLS handshake
// the dataplane terminated with server name sni. An HTTP/2 connection
// preface names no host (each stream carries its own :authority), so HTTP
// routes with hosts compare sni instead; everything else is as Decide.
func DecideTerminated(routes []snapshot.Route, data []byte, done bool, sni string) Decision {
	var c cache
	return firstMatch(routes, done, func(_ int, m *snapshot.Match) (sniff.Verdict, sniff.Info) {
		v, info := c.verdict(m, data, done)
		if v == sniff.Match && isHTTP2Preface(m, &info) && sni != "" {
			info.Host = sni
		}
		return v, info
	})
}

// firstMatch decides by the routes in order: the first whose verdict is a
// match that meets its constraints wins; a route that wants more bytes
// stops the walk (NeedMore) unless done, so a later route cannot take what
// an earlier one might still claim.
func firstMatch(routes []snapshot.Route, done bool, verdict func(i int, m *snapshot.Match) (sniff.Verdict, sniff.Info)) Decision {
	for i := range routes {
		m := &routes[i].Match
		v, info := verdict(i, m)
		switch v {
		case sniff.Match:
			if constraintsHold(m, &info) {
				return Decision{Route: i, Info: info}
			}
		case sniff.NeedMore:
			if !done {
				return Decision{Route: -1, NeedMore: true}
			}
		}
	}
	return Decision{Route: -1}
}

// protocols is the one table of the protocols a route can match, in the
// order the API lists them, each with the sniffer that decides it from a
// stream's first bytes and the one that decides it from a UDP session's
// first datagram; nil where the protocol does not serve that transport
// (snapshot.Protocol.FitsTransport says which do, and a test checks the two
// agree). bytes and timeout have neither: bytes needs the route's prefix or
// regex (on a stream's first bytes or a session's first datagram), and
// timeout is decided by the clock (see verdict). QUIC reads several
// datagrams, with state, so DatagramProber asks its Assembler, not this
// table. A protocol's index is its slot in a Decide call's cache.
var protocols = [...]struct {
	name     snapshot.Protocol
	sniff    sniff.Func
	datagram sniff.Func
}{
	{snapshot.SSH, sniff.SSH, nil},
	{snapshot.TLS, sniff.TLS, nil},
	{snapshot.HTTP, sniff.HTTP, nil},
	{snapshot.WebSocket, sniff.WebSocket, nil},
	{snapshot.OpenVPN, sniff.OpenVPN, sniff.OpenVPNUDP},
	{snapshot.SOCKS5, sniff.SOCKS5, nil},
	{snapshot.Bytes, nil, nil},
	{snapshot.Any, sniff.Any, sniff.Any},
	{snapshot.Timeout, nil, nil},
	// Recognised in datagrams only: a stream never matches them.
	{snapshot.QUIC, nil, nil},
	{snapshot.WireGuard, nil, sniff.WireGuard},
	{snapshot.DNS, nil, sniff.DNS},
}

// Protocols lists every protocol a route can match, in the API's order:
// the values the API's match.protocol accepts (compile validates specs
// against it, and a test checks it against the API's enum and the
// snapshot's constants).
func Protocols() []snapshot.Protocol {
	out := make([]snapshot.Protocol, len(protocols))
	for i, p := range protocols {
		out[i] = p.name
	}
	return out
}

// slot returns p's index in protocols, or -1 for a protocol it lacks.
func slot(p snapshot.Protocol) int {
	for i := range protocols {
		if protocols[i].name == p {
			return i
		}
	}
	return -1
}

// cache keeps one sniffer result per protocol within a Decide call, so ten
// TLS routes parse the ClientHello once.
type cache struct {
	have [len(protocols)]bool
	v    [len(protocols)]sniff.Verdict
	info [len(protocols)]sniff.Info
}

func (c *cache) verdict(m *snapshot.Match, data []byte, done bool) (sniff.Verdict, sniff.Info) {
	switch m.Protocol {
	case snapshot.Timeout:
		switch {
		case len(data) > 0:
			return sniff.NoMatch, sniff.Info{}
		case done:
			return sniff.Match, sniff.Info{}
		default:
			return sniff.NeedMore, sniff.Info{}
		}
	case snapshot.Bytes:
		return bytesVerdict(m, data), sniff.Info{}
	}
	i := slot(m.Protocol)
	if i < 0 || protocols[i].sniff == nil {
		return sniff.NoMatch, sniff.Info{}
	}
	if !c.have[i] {
		c.v[i], c.info[i] = protocols[i].sniff(data)
		c.have[i] = true
	}
	return c.v[i], c.info[i]
}

func bytesVerdict(m *snapshot.Match, data []byte) sniff.Verdict {
	if len(m.Prefix) > 0 {
		return sniff.Prefix(data, m.Prefix)
	}
	if m.Regex != nil {
		// Match within the first sniff.MaxBytes, else NeedMore: more bytes
		// could still match, and the probe's end decides.
		return sniff.Regex(data, m.Regex)
	}
	return sniff.NoMatch
}

// isHTTP2Preface reports the Info the HTTP sniffer returns for the HTTP/2
// connection preface.
func isHTTP2Preface(m *snapshot.Match, info *sniff.Info) bool {
	return m.Protocol == snapshot.HTTP && info.Method == "PRI" && info.Path == "*" && info.Host == ""
}

// constraintsHold checks a matched protocol's extra conditions: SNI and ALPN
// for TLS, Host and path for HTTP and WebSocket.
func constraintsHold(m *snapshot.Match, info *sniff.Info) bool {
	if len(m.SNI) > 0 && !HostMatches(m.SNI, info.SNI) {
		return false
	}
	if len(m.ALPN) > 0 && !anyIn(m.ALPN, info.ALPN) {
		return false
	}
	if len(m.Host) > 0 && !HostMatches(m.Host, info.Host) {
		return false
	}
	if m.PathPrefix != "" && !PathHasPrefix(cleanPath(info.Path), m.PathPrefix) {
		return false
	}
	return true
}

// HostMatches reports whether name (already lowercase) is one of patterns.
// A pattern "*.example.com" matches exactly one label in front of
// example.com, as certificate wildcards do (RFC 6125 §6.4.3);
// "**.example.com" matches one or more labels, as Gateway API hostnames
// do (compile writes it for Gateway listeners and routes).
func HostMatches(patterns []string, name string) bool {
	if name == "" {
		return false
	}
	for _, p := range patterns {
		if rest, ok := strings.CutPrefix(p, "**."); ok {
			if len(name) > len(rest)+1 && strings.HasSuffix(name, rest) && name[len(name)-len(rest)-1] == '.' && name[0] != '.' {
				return true
			}
			continue
		}
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			dot := strings.IndexByte(name, '.')
			if dot > 0 && name[dot+1:] == rest {
				return true
			}
			continue
		}
		if p == name {
			return true
		}
	}
	return false
}

// PathHasPrefix reports whether path starts with prefix at a segment
// boundary: "/tunnel" matches "/tunnel" and "/tunnel/x", not "/tunnels".
func PathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// cleanPath resolves dot segments and repeated slashes, as the backend will,
// so "/public/../admin" cannot pass a "/public" prefix to reach /admin.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		return p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func anyIn(want, offered []string) bool {
	for _, w := range want {
		for _, o := range offered {
			if w == o {
				return true
			}
		}
	}
	return false
}
