package relayloop

import (
	"errors"
	"net/netip"
	"time"

	"github.com/portmux/portmux/dataplane/h1"
)

// Exchanger is a Session whose connection the loop carries as HTTP/1.1
// exchanges: it reads each request's head, asks Request what to do with
// it, sends the head the Exchanger gives back and the body after it to a
// backend connection it keeps alive in a pool the loops share, reads the
// response's head, asks Response for the head the client gets, and
// moves the body back. Bodies are framed by package h1 and never
// buffered whole; the heads' meaning (routing, rewriting, status codes)
// is the Exchanger's alone.
//
// Why: a request carried this way costs the reads and writes its bytes
// need and nothing of the runtime's (no goroutine, no netpoller, no
// timer per request), which is what separates a Go proxy from haproxy in
// http mode.
type Exchanger interface {
	Session

	// Request decides the request whose whole head is head (valid during
	// the call only): forward it, answer it, hand the connection off
	// before it, or close the connection.
	Request(head []byte) Step

	// Response gives the head the client gets for the backend's
	// response head (valid during the call), and how its body is framed.
	// A Step without Head fails the exchange with a 502-class error
	// (Failed is asked for the client's response).
	Response(head []byte) Step

	// Failed is asked for the response the client gets when the exchange
	// in flight failed before any byte of a response reached the client:
	// a dial or a pooled connection failed, the backend sent a bad head
	// or none in time, a request's head was too large or too slow. nil
	// closes the connection without a word. The client's connection is
	// closed after it either way.
	Failed(err error) []byte

	// Ended reports each exchange's end, whether the response reached
	// the client whole or not.
	Ended(x ExchangeResult)
}

// Step is an Exchanger's answer about a head.
type Step struct {
	// Head is what is sent on: to the backend (a request, with Target),
	// to the client (a response; or, from Request without Target, the
	// whole answer to the request, body included). It is copied before
	// the call returns to the loop.
	Head []byte

	// Body is how the body after the head is framed, Length a Sized
	// body's length. From Request, the request's body; from Response,
	// the response's. A Request's answer without Target leaves the
	// request's body unread: the connection closes after it unless Body
	// is None.
	Body   h1.Kind
	Length int64

	// Target, from Request, is where the request goes. Its Endpoints
	// are tried from First: an idle connection to the endpoint kept
	// under the same Pool key is used if there is one, else one is
	// dialled after taking a slot from Target.Slot.
	Target *Target

	// Retry, from Request, lets the loop send the request once more on a
	// new connection when a pooled one turns out closed before any byte
	// of a response came: only for requests with no body that a client
	// may retry (RFC 9110 §9.2.2).
	Retry bool

	// Interim, from Response, marks a 1xx response: its head, if any
	// (none drops it), goes to the client, and the final response's
	// head follows.
	Interim bool

	// Close, from Request, closes the client's connection once this
	// exchange ends; from Response, the backend's (it is not pooled).
	// An UntilClose response body ends both.
	Close bool

	// HandOff, from Request, gives the connection to Session.HandOff
	// with this request's bytes unread (only asked between exchanges).
	HandOff bool
}

// Exchange tunes a connection carried as HTTP/1.1 exchanges.
type Exchange struct {
	// MaxHead is the longest request or response head, its empty line
	// included; a longer request head fails with ErrHeadTooLarge.
	// Zero: 64 KiB. The loop holds a head's bytes only while it arrives.
	MaxHead int

	// HeadTimeout bounds how long a request's head may take to arrive
	// once its first byte has (ErrHeadTimeout). Zero: 10 s.
	HeadTimeout time.Duration

	// IdleTimeout closes a connection with no request in flight for this
	// long. Zero: 60 s.
	IdleTimeout time.Duration

	// ResponseTimeout bounds the wait for a response's head once its
	// request is sent whole (ErrResponseTimeout). Zero: none beyond the
	// Target's IdleTimeout, which also ends an exchange whose bytes stop
	// flowing either way.
	ResponseTimeout time.Duration
}

// Why an exchange failed, for Failed.
var (
	ErrHeadTooLarge    = errors.New("request head too large")
	ErrHeadTimeout     = errors.New("request head not received in time")
	ErrResponseTimeout = errors.New("backend sent no response head in time")
	ErrBackendClosed   = errors.New("backend closed the connection before a response")
	ErrNoSlot          = errors.New("no connection slot for the backend")
	// ErrRequestBody wraps the framing error of a client's request body
	// (h1.ErrMalformed, h1.ErrTooLarge): the client's fault, not the
	// backend's.
	ErrRequestBody = errors.New("request body")
	// ErrClientLeft ends an exchange whose client closed its connection
	// in a request, or before its response.
	ErrClientLeft = errors.New("client left")
)

// ExchangeResult is what became of one exchange.
type ExchangeResult struct {
	// Endpoint is the backend the request went to; Reused that its
	// connection came from the pool.
	Endpoint netip.AddrPort
	Reused   bool
	// Up counts the request's bytes delivered to the backend (the head
	// as rewritten), Down the response's delivered to the client.
	Up, Down int64
	// Err is why the exchange did not complete: a backend or client
	// failure, a timeout, ErrClosed.
	Err error
}

// Defaults of Exchange.
const (
	defaultMaxHead     = 64 << 10
	defaultHeadTimeout = 10 * time.Second
	defaultIdleTimeout = 60 * time.Second
	// firstHeadBuffer is what a connection's head buffer starts at; it
	// grows to MaxHead only for a head that needs it.
	firstHeadBuffer = 4 << 10
)

func (x Exchange) withDefaults() Exchange {
	if x.MaxHead <= 0 {
		x.MaxHead = defaultMaxHead
	}
	if x.HeadTimeout <= 0 {
		x.HeadTimeout = defaultHeadTimeout
	}
	if x.IdleTimeout <= 0 {
		x.IdleTimeout = defaultIdleTimeout
	}
	return x
}
