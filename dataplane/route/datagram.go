package route

import (
	"errors"

	"github.com/portmux/portmux/dataplane/quic"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/sniff"
)

// ErrShortInitial is why DatagramProber.Add asks for a datagram to be
// dropped: it carries a QUIC Initial packet in fewer than 1200 bytes, which
// a server must discard (RFC 9000 §14.1) and which a spoofed source could
// otherwise use for amplification. It is quic.ErrShortInitial.
var ErrShortInitial = quic.ErrShortInitial

// DecideDatagrams picks a route of a UDP listener for a session whose
// client has sent datagrams, in order, so far; done says no more will
// arrive before the decision must be taken (the probe timeout, or its
// byte or datagram caps). It is the pure form of DatagramProber: the same
// datagrams give the same Decision, and datagrams the prober would drop
// (see DatagramProber.Add) are skipped.
//
// Routes are tried in order as Decide tries them on a stream: the first
// that matches wins, and one still undecided (a QUIC ClientHello that
// continues in the next datagram) holds the decision back. Each protocol
// looks at the session's first datagram only, except QUIC, which reads
// Initial packets until its ClientHello is complete; SNI and ALPN
// constraints apply to QUIC as to TLS.
func DecideDatagrams(routes []snapshot.Route, datagrams [][]byte, done bool) Decision {
	p := NewDatagramProber(routes)
	d := Decision{Route: -1, NeedMore: true}
	for _, b := range datagrams {
		if dd, err := p.Add(b); err == nil {
			d = dd
		}
		if !d.NeedMore {
			return d
		}
	}
	if done {
		return p.Finish()
	}
	return d
}

// DatagramProber decides one UDP session's route as its datagrams arrive.
// It keeps what must persist between them: each protocol's verdict on the
// first datagram, and the QUIC Assembler that reassembles a ClientHello
// across datagrams, so every datagram is read once. The zero value is not
// usable; a DatagramProber is for one session. The Assembler's buffers,
// the only memory it allocates and only for datagrams that look like QUIC,
// go once QUIC is decided.
type DatagramProber struct {
	routes []snapshot.Route
	// have, verdict and info hold each protocol's answer on the first
	// datagram, by slot (QUIC's comes from asm), all taken when it came,
	// so the prober keeps no datagram.
	have    [len(protocols)]bool
	verdict [len(protocols)]sniff.Verdict
	info    [len(protocols)]sniff.Info
	// bytesMatch has bit i set when route i is a bytes route that the
	// first datagram matches; nil when the listener has none.
	bytesMatch []uint64
	// seen: the first datagram came (and was not dropped).
	seen bool
	// quicRoute: some route matches QUIC. asm reads the datagrams while
	// QUIC is undecided; quicStatus is its answer once it is.
	quicRoute  bool
	asm        quic.Assembler
	quicStatus quic.Status
	quicInfo   sniff.Info
	dcid, scid quic.ConnectionID
	quicV      quic.Version
}

// NewDatagramProber returns a prober over a UDP listener's routes.
func NewDatagramProber(routes []snapshot.Route) DatagramProber {
	p := DatagramProber{routes: routes}
	for i := range routes {
		if routes[i].Match.Protocol == snapshot.QUIC {
			p.quicRoute = true
		}
	}
	return p
}

// Add reads the session's next datagram and returns the decision so far.
// It does not keep the datagram: the caller may reuse its buffer.
// A non-nil error (ErrShortInitial) means the datagram must be dropped: it
// was not taken into account and must not reach the backend; a first
// datagram dropped leaves the prober as it was, so the session need not
// exist.
func (p *DatagramProber) Add(datagram []byte) (Decision, error) {
	if p.quicRoute && p.quicStatus == quic.NeedMore && quic.IsShortInitial(datagram) {
		return p.decide(false), ErrShortInitial
	}
	if !p.seen {
		p.seen = true
		p.first(datagram)
	}
	if p.quicRoute && p.quicStatus == quic.NeedMore {
		st, err := p.asm.Add(datagram)
		if errors.Is(err, quic.ErrShortInitial) && st == quic.NeedMore {
			// Discarded by the Assembler: a short Initial that
			// IsShortInitial let through cannot happen, but never forward
			// what was not read.
			return p.decide(false), ErrShortInitial
		}
		if st != quic.NeedMore {
			p.quicStatus, p.quicInfo = st, p.asm.Info()
			p.dcid, p.scid, p.quicV = p.asm.DCID(), p.asm.SCID(), p.asm.Version()
			p.asm = quic.Assembler{} // its buffers go
		}
	}
	return p.decide(false), nil
}

// Finish is the decision when no more datagrams will come: routes still
// undecided count as no match.
func (p *DatagramProber) Finish() Decision {
	d := p.decide(true)
	p.asm = quic.Assembler{}
	return d
}

// QUIC returns what the QUIC Assembler learnt of the session: its version
// and the client's Destination and Source Connection IDs, so a relay can
// follow the connection to a new client address. ok is false until a QUIC
// route decided the session is QUIC.
func (p *DatagramProber) QUIC() (v quic.Version, dcid, scid quic.ConnectionID, ok bool) {
	return p.quicV, p.dcid, p.scid, p.quicStatus == quic.Done
}

func (p *DatagramProber) decide(done bool) Decision {
	if !p.seen {
		if done {
			return Decision{Route: -1}
		}
		return Decision{Route: -1, NeedMore: true}
	}
	return firstMatch(p.routes, done, p.verdictOf)
}

// first takes every route's verdict on the first datagram but QUIC's: a
// datagram is whole, so a sniffer that would want more bytes has its
// answer, no.
func (p *DatagramProber) first(d []byte) {
	for i := range p.routes {
		m := &p.routes[i].Match
		if m.Protocol == snapshot.Bytes {
			if bytesVerdict(m, d) == sniff.Match {
				if p.bytesMatch == nil {
					p.bytesMatch = make([]uint64, (len(p.routes)+63)/64)
				}
				p.bytesMatch[i/64] |= 1 << (i % 64)
			}
			continue
		}
		j := slot(m.Protocol)
		if j < 0 || protocols[j].datagram == nil || p.have[j] {
			continue
		}
		p.verdict[j], p.info[j] = protocols[j].datagram(d)
		if p.verdict[j] == sniff.NeedMore {
			p.verdict[j] = sniff.NoMatch
		}
		p.have[j] = true
	}
}

// verdictOf is a route's verdict on the datagrams so far: QUIC's from the
// Assembler, the others' as first took them.
func (p *DatagramProber) verdictOf(i int, m *snapshot.Match) (sniff.Verdict, sniff.Info) {
	switch m.Protocol {
	case snapshot.QUIC:
		switch p.quicStatus {
		case quic.Done:
			return sniff.Match, p.quicInfo
		case quic.NeedMore:
			return sniff.NeedMore, sniff.Info{}
		}
		return sniff.NoMatch, sniff.Info{}
	case snapshot.Bytes:
		if p.bytesMatch != nil && p.bytesMatch[i/64]&(1<<(i%64)) != 0 {
			return sniff.Match, sniff.Info{}
		}
		return sniff.NoMatch, sniff.Info{}
	}
	if j := slot(m.Protocol); j >= 0 && p.have[j] {
		return p.verdict[j], p.info[j]
	}
	return sniff.NoMatch, sniff.Info{}
}
