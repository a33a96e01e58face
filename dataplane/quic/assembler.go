package quic

import (
	"bytes"
	"slices"
	"strconv"

	"github.com/portmux/portmux/dataplane/sniff"
)

// Status is where a flow's first flight stands after a datagram. It has the
// three values of sniff.Verdict, named for a flow of datagrams.
type Status uint8

const (
	// NeedMore means what came so far is a possible start of a QUIC
	// client's first flight and the ClientHello is not complete; feed the
	// flow's next datagram.
	NeedMore Status = iota
	// Done is final: the ClientHello is complete and valid; Info, Version
	// and the connection IDs are set.
	Done
	// NotQUIC is final: the flow is not a QUIC client's first flight of a
	// known version, or breaks a rule or a limit; Err says which.
	NotQUIC
)

// String names the status for logs and test failures.
func (s Status) String() string {
	switch s {
	case NeedMore:
		return "need-more"
	case Done:
		return "done"
	case NotQUIC:
		return "not-quic"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Default limits of an Assembler. quic-go also refuses Initial CRYPTO data
// past 16 KiB, and 16 KiB is what dataplane/sniff reads of a TCP stream.
// Until the dataplane forwards the flow, nobody acknowledges the client's
// packets, so the client sends at most its initial congestion window, about
// 12 datagrams of 1200 bytes (RFC 9002 §7.2: 14720 bytes), plus probes when
// its timer fires (RFC 9002 §6.2.4); 16 datagrams leave room for those.
// Real ClientHellos take 1 (classical key shares) or 2 (post-quantum).
const (
	DefaultMaxHelloBytes = 16 << 10
	DefaultMaxDatagrams  = 16
)

// Limits bound one Assembler: memory (MaxHelloBytes, plus an eighth for a
// bitmap and one datagram of scratch space) and work (MaxDatagrams
// decryptions at most, each linear in the datagram). A zero or negative
// field takes its default.
type Limits struct {
	// MaxHelloBytes caps the CRYPTO stream: the ClientHello with its
	// 4-byte handshake header.
	MaxHelloBytes int
	// MaxDatagrams caps the datagrams fed to Add, counting every one,
	// before the ClientHello is complete.
	MaxDatagrams int
}

// Assembler reads one flow's datagrams (one client address and port) until
// its ClientHello is complete. It is the stateful core of this package: the
// dataplane keeps one per new UDP flow that a QUIC route may take, calls Add
// with each datagram as it arrives, and drops it on Done or NotQUIC.
//
// The first datagram decides whether the flow is QUIC: it must start with a
// long header of version 1 or 2, and its Initial packet must decrypt
// (RFC 9001 §5). A first packet of 0-RTT is accepted as a possible start
// (NeedMore), since the Initial it follows may have been reordered after
// it. From then on, a datagram that a QUIC server would discard (short, not
// decryptable, of another connection) is discarded with its reason and the
// flow goes on, so that one stray or forged datagram does not decide a
// flow; but a packet that decrypts and then breaks a rule ends the flow, as
// does a limit.
//
// The zero value is ready to use with the default Limits. An Assembler is
// not safe for concurrent use; a flow's datagrams come one at a time.
type Assembler struct {
	limits    Limits
	status    Status
	err       error
	datagrams int

	// Set by the first Initial packet that decrypts.
	started    bool
	version    Version
	dcid, scid ConnectionID
	keys       initialKeys
	nextPN     int64 // largest packet number decrypted + 1 (RFC 9000 A.3's expected_pn)

	stream  cryptoStream
	scratch []byte // a packet decrypted in place, never the caller's datagram
	info    sniff.Info
}

// NewAssembler returns an Assembler with limits l (zero fields take the
// defaults).
func NewAssembler(l Limits) *Assembler {
	return &Assembler{limits: l}
}

func (a *Assembler) maxHello() int {
	if a.limits.MaxHelloBytes > 0 {
		return a.limits.MaxHelloBytes
	}
	return DefaultMaxHelloBytes
}

func (a *Assembler) maxDatagrams() int {
	if a.limits.MaxDatagrams > 0 {
		return a.limits.MaxDatagrams
	}
	return DefaultMaxDatagrams
}

// Add reads the flow's next datagram and returns the flow's status after
// it, with the reason the datagram was not used, if any:
//
//   - NeedMore, nil: the datagram fits a client's first flight (its CRYPTO
//     data is in, or it carried only 0-RTT); keep it for the backend.
//   - NeedMore, err: the datagram was discarded for reason err, as a QUIC
//     server would discard it (ErrShortInitial, ErrDecrypt,
//     ErrOtherConnection, ...); the flow goes on. Only after a first
//     Initial decrypted.
//   - Done, nil: the ClientHello is complete; see Info.
//   - NotQUIC, err: final, for reason err.
//
// Once Done or NotQUIC, Add returns the same without reading the datagram.
// datagram is only read, never kept or written to.
func (a *Assembler) Add(datagram []byte) (Status, error) {
	if a.status != NeedMore {
		return a.status, a.err
	}
	a.datagrams++
	if a.datagrams > a.maxDatagrams() {
		return a.fail(ErrTooManyDatagrams)
	}
	fatal, err := a.datagram(datagram)
	if err != nil {
		if fatal || !a.started {
			return a.fail(err)
		}
		return NeedMore, err
	}
	if !a.stream.complete() {
		return NeedMore, nil
	}
	// RFC 9001 §4.2: a QUIC client offers TLS 1.3 or later; one that does
	// not cannot complete a handshake, and ClientHello alone does not
	// check it.
	info, ok := sniff.ClientHello(a.stream.hello())
	if !ok || !slices.Contains(info.TLSVersions, tls13) {
		return a.fail(ErrClientHello)
	}
	a.info, a.status = info, Done
	return Done, nil
}

// tls13 is TLS 1.3's version number in supported_versions (RFC 8446 §4.2.1).
const tls13 = 0x0304

func (a *Assembler) fail(err error) (Status, error) {
	a.status, a.err = NotQUIC, err
	a.info = sniff.Info{}
	return NotQUIC, err
}

// datagram walks the packets coalesced in one datagram (RFC 9000 §12.2).
// fatal says that err came from inside a packet that decrypted, and so
// ends the flow whatever came before.
//
// The first packet decides: an error in it is the datagram's. After it,
// RFC 9000 §12.2's receiver rules apply: a packet of another Destination
// Connection ID or version, a short header packet (which runs to the end of
// the datagram), or bytes that do not parse end the walk without error (some
// clients pad datagrams with zeros after their last packet), and a later
// Initial that does not decrypt is skipped alone. 0-RTT packets are skipped
// (their keys come from an earlier connection); so are Handshake packets
// after the first.
func (a *Assembler) datagram(d []byte) (fatal bool, err error) {
	if len(d) == 0 {
		return false, ErrNotLongHeader
	}
	var first longHeader
	for rest := d; len(rest) > 0; {
		isFirst := len(rest) == len(d)
		if rest[0]&headerFormLong == 0 {
			if isFirst {
				return false, ErrNotLongHeader
			}
			return false, nil
		}
		h, err := parseLongHeader(rest)
		if err != nil {
			if isFirst {
				return false, err
			}
			return false, nil
		}
		if isFirst {
			first = h
		} else if h.version != first.version || !bytes.Equal(h.dcid, first.dcid) {
			return false, nil
		}
		switch h.typ {
		case typeInitial:
			// RFC 9000 §14.1: the datagram, not the packet, is at
			// least 1200 bytes. Checked before any key is derived.
			if len(d) < MinInitialDatagramLen {
				return false, ErrShortInitial
			}
			fatal, err := a.initial(rest[:h.end], &h)
			if err != nil && (fatal || isFirst) {
				return fatal, err
			}
		case typeHandshake:
			// A client sends Handshake packets only after the
			// server's Initial, so never first in a flow.
			if isFirst && !a.started {
				return false, ErrNotInitial
			}
		}
		rest = rest[h.end:]
	}
	return false, nil
}

// initial decrypts one Initial packet, pkt, and feeds its CRYPTO frames to
// the stream. The first one that decrypts fixes the flow's version,
// connection IDs and keys; later ones must match them.
func (a *Assembler) initial(pkt []byte, h *longHeader) (fatal bool, err error) {
	keys := &a.keys
	if !a.started {
		if len(h.dcid) < minInitialDCIDLen && len(h.token) == 0 {
			return false, ErrMalformed
		}
		p, _ := params(h.version) // parseLongHeader read only known versions
		k, err := clientInitialKeys(p, h.dcid)
		if err != nil {
			return false, err
		}
		keys = &k
	} else if h.version != a.version || !bytes.Equal(h.dcid, a.dcid.b[:a.dcid.n]) || !bytes.Equal(h.scid, a.scid.b[:a.scid.n]) {
		return false, ErrOtherConnection
	}

	if cap(a.scratch) < len(pkt) {
		a.scratch = make([]byte, len(pkt), max(len(pkt), MinInitialDatagramLen))
	}
	buf := a.scratch[:len(pkt)]
	copy(buf, pkt)
	payload, pn, err := openInitial(keys, buf, h, a.nextPN-1)
	if err != nil {
		return false, err
	}
	if !a.started {
		a.started = true
		a.version, a.keys = h.version, *keys
		a.dcid, a.scid = connectionID(h.dcid), connectionID(h.scid)
	}
	a.nextPN = max(a.nextPN, pn+1)
	if err := walkFrames(payload, &a.stream, a.maxHello()); err != nil {
		return true, err
	}
	return false, nil
}

// Status is the flow's status after the last Add.
func (a *Assembler) Status() Status { return a.status }

// Err is the reason the flow is NotQUIC, nil otherwise.
func (a *Assembler) Err() error { return a.err }

// Version is the flow's QUIC version, known from the first Initial packet
// that decrypted (0 before): the version the client chose, which a backend
// must speak or negotiate away from (RFC 9368).
func (a *Assembler) Version() Version {
	if !a.started {
		return 0
	}
	return a.version
}

// DCID is the Destination Connection ID of the client's Initial packets,
// known from the first one that decrypted (empty before). The client chose
// it at random; the server replaces it with one of its own (RFC 9000 §7.2),
// so it identifies the flow only until the server answers, and keys the
// Initial packets a client retransmits before then.
func (a *Assembler) DCID() ConnectionID {
	if !a.started {
		return ConnectionID{}
	}
	return a.dcid
}

// SCID is the Source Connection ID of the client's Initial packets (empty
// before the first one decrypted, and for a client that uses none): the
// connection ID the server will send to, which stays the client's until it
// changes it with NEW_CONNECTION_ID (RFC 9000 §5.1.1), so the dataplane can
// find the flow of a migrated client (RFC 9000 §9) from the server's side.
func (a *Assembler) SCID() ConnectionID {
	if !a.started {
		return ConnectionID{}
	}
	return a.scid
}

// Info is what the ClientHello says for routing (SNI, ALPN, TLS versions,
// as dataplane/sniff's TLS sniffer reads them); the zero Info unless Done.
func (a *Assembler) Info() sniff.Info { return a.info }

// ClientHello is the reassembled ClientHello handshake message (its 4-byte
// header included) once Done, nil otherwise, for logs or fingerprints. It is
// the Assembler's buffer: read it, do not keep or change it.
func (a *Assembler) ClientHello() []byte {
	if a.status != Done {
		return nil
	}
	return a.stream.hello()
}

// Datagrams is how many datagrams Add was given before the flow was
// decided (or so far), to log and to measure how often ClientHellos span
// datagrams.
func (a *Assembler) Datagrams() int { return a.datagrams }
