package route

import "github.com/portmux/portmux/dataplane/snapshot"

// probeWorkFactor bounds what sniffing one connection may cost: the
// sniffers are given at most this many times the bytes the client sent,
// plus the final look when the probe ends, however the client splits its
// bytes. 4 lets every client that sends its first flight in a few segments
// be decided at each read (the usual case costs no delay at all).
const probeWorkFactor = 4

// Prober decides one connection's route as its bytes arrive, at a cost
// linear in the bytes received.
//
// The sniffers look at the whole buffer on every call: an HTTP header block
// or a regular expression is scanned from its start again. A client that
// sends 16 KiB one byte per segment would make a plain loop over Decide
// scan 128 MB (4.5 s of CPU for one unanchored regex route). A Prober
// skips a look that would take the total past probeWorkFactor times the
// bytes seen, and answers NeedMore instead; the looks it takes are then
// spaced geometrically (each at least a third bigger than the last), so a
// dribbling client costs a few times its bytes, and a decision it delays
// is taken by the next read or, at the latest, by the look with done set
// when the probe ends, which is never skipped.
//
// The zero value is not usable; a Prober is for one connection.
type Prober struct {
	routes []snapshot.Route
	sni    string
	// scanned is how many bytes the sniffers were given so far.
	scanned int
}

// NewProber returns a Prober over a listener's routes. sni is the server
// name of a TLS handshake the dataplane terminated before sniffing, or ""
// (see DecideTerminated).
func NewProber(routes []snapshot.Route, sni string) Prober {
	return Prober{routes: routes, sni: sni}
}

// Decide is DecideTerminated within the work budget: data is everything the
// client has sent so far, done says no more will come.
func (p *Prober) Decide(data []byte, done bool) Decision {
	if !done && p.scanned > 0 && p.scanned+len(data) > probeWorkFactor*len(data) {
		return Decision{Route: -1, NeedMore: true}
	}
	p.scanned += len(data)
	return DecideTerminated(p.routes, data, done, p.sni)
}
