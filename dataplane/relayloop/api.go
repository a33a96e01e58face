package relayloop

import (
	"errors"
	"net/netip"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/panics"
)

// ErrUnsupported is returned by New where there is no epoll (not Linux):
// the caller serves connections on goroutines instead.
var ErrUnsupported = errors.New("relay loops need Linux's epoll")

// ErrClosed ends the connections a loop still holds when it is closed, and
// those aborted (Conn.Abort).
var ErrClosed = errors.New("relay loop closed the connection")

// Options tune a Set. The zero value is usable.
type Options struct {
	// Loops is how many loops to run, each on a goroutine of its own with
	// an epoll set of its own. Zero: GOMAXPROCS.
	Loops int

	// KeepAliveAfter turns TCP keepalive on for both sockets of a
	// forwarded connection that is still open this long after it was
	// connected. Zero: 100 ms; negative: never. Unless negative, a
	// connection carried as HTTP/1.1 exchanges or served on the loop has
	// it on its client's socket from the start.
	KeepAliveAfter time.Duration

	// A panic recovered from a Handler or a Session closes the connection
	// it happened on. Done reports it as Result.Err; OnPanic hears of the
	// ones Done cannot report (raised in Accepted, HandOff or Done).
	OnPanic func(*panics.Error)

	// Log hears of accept errors other than a client gone before it was
	// accepted (out of descriptors, out of memory), after which the loop
	// leaves that listener alone for a while, 5 ms at first, doubling up
	// to a second, rather than spin on it.
	Log logr.Logger

	// moveBudget replaces the constant for the package's tests, which
	// lower it to make every transfer take many turns.
	moveBudget int
}

// Handler admits a listener's connections.
type Handler interface {
	// Accepted is called on a loop for each new connection, before
	// anything is read from it. It returns the connection's Session, or
	// nil to have it closed at once (refused: the Handler has counted
	// it).
	Accepted(c *Conn) Session
}

// End says why a Session is asked to decide.
type End uint8

const (
	// Start means nothing was read yet (a route may not need bytes at all).
	Start End = iota
	// Reading means more bytes arrived and more may follow.
	Reading
	// EOF means the client ended its stream; no more bytes will come.
	EOF
	// Timeout means the Verdict's deadline passed; no more bytes will be read.
	Timeout
	// Full means the Verdict's Limit is reached.
	Full
)

// Session is one connection's owner while the loop carries it.
type Session interface {
	// Decide is asked what to do with the bytes read so far: first with
	// none (Start), then whenever more arrive, and a last time when the
	// probe ends (EOF, Timeout, Full). b is valid during the call only.
	Decide(b []byte, end End) Verdict

	// HandOff takes the connection off the loop when a Verdict asks for
	// it: fd, a blocking-mode-agnostic non-blocking socket no loop watches
	// any more, belongs to the Session from now on, with the bytes read
	// from it so far (valid during the call only). Done is not called.
	HandOff(fd int, read []byte)

	// Done reports the end of a connection the loop carried to its end:
	// both sockets are closed.
	Done(r Result)
}

// Verdict is a Session's answer. Exactly one of Wait, Forward, Exchange,
// Serve and HandOff is set, or none: close the connection.
type Verdict struct {
	// Wait: read more, at most Limit bytes in all, until Deadline.
	Wait     bool
	Deadline time.Time
	Limit    int

	// Forward: connect to a backend and carry the connection both ways.
	Forward *Target

	// Exchange: carry the connection as HTTP/1.1 exchanges, from the
	// bytes read so far; the Session must be an Exchanger.
	Exchange *Exchange

	// Serve: the Session, which must be a Server, speaks the
	// connection's protocol itself on the loop, from the bytes read so
	// far.
	Serve *Serving

	// HandOff: give the connection to Session.HandOff.
	HandOff bool
}

// Server is a Session that speaks its connection's protocol itself, on
// the loop (Verdict.Serve): the loop reads what the client sends and
// hands it over as it comes, and writes what the Server has to send as
// the client takes it, with no goroutine, netpoller registration or
// runtime timer of the connection's own. What reads the client with a
// goroutine blocked in a read costs a wake-up, a read that finds nothing
// and a trip through the runtime's poller per burst; here one epoll
// wait serves every connection of the loop.
//
// Its methods are called on the loop, one at a time, and must not block.
type Server interface {
	Session
	// Input takes the client's bytes in order, those read while
	// deciding first; b is valid during the call only. An error ends
	// the connection: nothing more is read, and it closes once Output
	// has said so (or at once, if nothing is left to send).
	Input(b []byte) error
	// InputEnded says that the client ended its stream (err nil) or
	// that reading it failed: no more Input. The connection stays open
	// until Output says close.
	InputEnded(err error)
	// Output returns the next bytes to send, nil for none yet; they
	// stay the Server's but are not touched until Output is called
	// again, once they are all sent. close: the connection closes once
	// these bytes are sent (Done follows). Output is asked after every
	// Input and InputEnded, after a Flush, and again whenever what it
	// gave is sent.
	Output() (b []byte, close bool)
}

// Serving tunes a connection a Server speaks on the loop.
type Serving struct {
	// WriteTimeout closes the connection once bytes have waited this
	// long for the client to take any of them. Zero: 2 minutes.
	WriteTimeout time.Duration
}

// Target is where and how to forward a connection.
type Target struct {
	// Endpoints are tried in turn from Endpoints[First] until one
	// accepts the connection, each for at most DialTimeout (zero: 5 s).
	Endpoints   []netip.AddrPort
	First       int
	DialTimeout time.Duration

	// Header is sent to the backend before the bytes read from the
	// client (a PROXY header); it is not counted in Result.Up.
	Header []byte

	// IdleTimeout closes the connection once neither direction has
	// carried a byte for this long (observed at a granularity of the
	// timeout itself, as the forward package does). Zero: never.
	IdleTimeout time.Duration

	// Pool and Slot serve exchanges (Step.Target) only. Pool keys the
	// loop's idle backend connections this request may reuse: those
	// opened for requests with the same key (comparable; nil keys none).
	// Slot, if set, is asked before a new backend connection is dialled;
	// false fails the exchange with ErrNoSlot, and release is called
	// once the connection is closed, pooled or not. At its cap Slot may
	// have one of the loops' idle connections give its slot up through
	// loops, which evicts on the loop that asks; Slots tags the
	// connections dialled for the Target (comparable), so that Slot can
	// choose those that hold the slots it lacks.
	Pool  any
	Slot  func(loops Evictor) (release func(), ok bool)
	Slots any
	// MaxIdle caps the idle connections kept per Pool key and endpoint
	// over the Set (zero: 16); PoolIdle closes one idle for longer
	// (zero: 90 s).
	MaxIdle  int
	PoolIdle time.Duration
}

// Result is what became of a connection the loop carried to its end.
type Result struct {
	// Dialed reports that a backend accepted the connection: Endpoint.
	Dialed   bool
	Endpoint netip.AddrPort
	// DialErr holds every endpoint's failure when none accepted it.
	DialErr error

	// Up counts the client's bytes delivered to the backend, the ones
	// read while deciding included; Down the backend's delivered to the
	// client.
	Up, Down int64

	// Idle: the idle timeout ended the connection.
	Idle bool

	// Err is what ended the connection other than both sides closing
	// their streams: a read or write error, ErrClosed, a panic.
	Err error
}

// Evictor closes the relay loops' idle backend connection that has been
// idle the longest among those dialled for slots (Target.Slots; nil:
// any), and reports whether there was one. At a cap, a kept-alive idle
// connection is a cache that gives its slot to a request or a client;
// which ones may give way, and in which order beside the caller's other
// pools, is the caller's decision.
type Evictor interface {
	EvictIdle(slots any) bool
}
