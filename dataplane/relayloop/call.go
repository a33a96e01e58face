package relayloop

import "time"

// CallRequest is a request without a body that a loop sends to a
// backend for a caller that is not one of its connections, an HTTP/2
// stream say, whose connection is served elsewhere: the loop takes a
// backend connection from the pool the exchanges share (or dials one),
// writes the head, reads the response's head and body, and passes them
// to Sink, all without a goroutine of its own.
//
// Why: an HTTP/2 stream served on a goroutine that blocks on its
// backend costs that goroutine's wake-ups (the handler's start, the
// netpoller's wake once the response is readable) per request; in
// http mode's HTTP/2 benchmark that and the scheduler's work around it
// were a third of the CPU per request.
type CallRequest struct {
	// Head is the request's whole head as the backend gets it, its
	// empty line included. The call owns it from NewCall until the
	// Sink's Ended, and reads it no more after that.
	Head []byte

	// Target is where the request goes, as a Step's (its Pool, Slot,
	// MaxIdle and PoolIdle included); IdleTimeout ends a call whose
	// backend sends nothing for this long while the Sink takes what it
	// sends.
	Target *Target

	// Retry lets the loop send the request once more on a new connection
	// when a pooled one turns out closed before any byte of a response
	// came (only for a request a client may retry, RFC 9110 §9.2.2).
	Retry bool

	// MaxHead is the longest response head; zero: 64 KiB.
	MaxHead int

	// ResponseTimeout bounds the wait for the response's head once the
	// request is sent; zero: only Target.IdleTimeout.
	ResponseTimeout time.Duration

	Sink CallSink
}

// CallSink takes a call's response. Its methods run on the loop's
// goroutine, one at a time, and must not block.
type CallSink interface {
	// Response is given each head the backend sends, whole (valid during
	// the call only): a 1xx one, for which it returns a Step with
	// Interim set, then the final one, for which it says how the body is
	// framed (Body, Length) and whether the backend's connection may
	// carry another request (not Close). An error fails the call.
	Response(head []byte) (Step, error)

	// Data is offered the response body's data as it arrives, chunked
	// framing removed (valid during the call only). It returns how much
	// it took: less stops the call, which reads nothing more from the
	// backend until Resume and then offers the rest first.
	Data(p []byte) int

	// Ended reports the end of the call: Err is nil once the whole body
	// was taken, and trailer holds the field lines of a chunked body's
	// trailer section, if any. Nothing else is called after it.
	Ended(x ExchangeResult, trailer []byte)
}
