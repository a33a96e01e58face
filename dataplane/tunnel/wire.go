package tunnel

import (
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// The handshake's vocabulary; see the package documentation.
const (
	// Subprotocol names this wire format in Sec-WebSocket-Protocol.
	Subprotocol = "portmux.tunnel.v1"

	// ParamTarget and ParamProtocol are the query parameters of the
	// handshake request.
	ParamTarget   = "target"
	ParamProtocol = "protocol"

	// ProtocolTCP and ProtocolUDP are the values of ParamProtocol.
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// Close codes of the private range (RFC 6455 §7.4.2) this format uses.
const (
	// CloseReset aborts a TCP stream: the sending end failed (the target
	// or local connection was reset, a write failed).
	CloseReset websocket.StatusCode = 4000
	// CloseIdle ends a tunnel that carried nothing for its idle timeout.
	CloseIdle websocket.StatusCode = 4001
)

// Defaults of Options and Client fields left zero.
const (
	DefaultKeepAlive      = 20 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultIdleTimeout ends a TCP tunnel that carried no byte either way
	// for this long (pings do not count), so idle tunnels cannot hold the
	// server's slots and sockets for ever.
	DefaultIdleTimeout = time.Hour
)

// udpSocketBuffer is the receive buffer asked for UDP sockets that relay
// tunnels.
const udpSocketBuffer = 512 << 10

// maxDatagram bounds a UDP message: the largest UDP payload (65535 minus
// the 8-byte header, and less over IPv4, rounded up).
const maxDatagram = 65535

// maxTargetLen bounds the target name a report repeats: what a client asks
// for is logged, so an unbounded one is cut.
const maxTargetLen = 256

// Outcome says how one tunnel request ended. It is a metrics label.
type Outcome string

// The outcomes. The first group ran a tunnel, the second was refused before
// the upgrade.
const (
	OutcomeClosed      Outcome = "closed"       // both ends finished the stream, a UDP tunnel was closed, or the client went away (1001)
	OutcomeError       Outcome = "error"        // a read or write failed, or a peer reset the stream
	OutcomeDeadPeer    Outcome = "dead_peer"    // no pong and nothing else heard within the keepalive bound
	OutcomeIdleTimeout Outcome = "idle_timeout" // the tunnel carried nothing for its idle timeout

	OutcomeBadRequest   Outcome = "bad_request"  // 400 (and 405, 426): no target, unknown protocol, not a WebSocket handshake
	OutcomeUnauthorized Outcome = "unauthorized" // 401: token missing or wrong
	OutcomeForbidden    Outcome = "forbidden"    // 403: target not allowed (or not for this protocol), foreign origin
	OutcomeDialError    Outcome = "dial_error"   // 502: every endpoint of the target failed
	OutcomeUnavailable  Outcome = "unavailable"  // 503: the tunnel's token Secret is missing
)

// Report is what the Handler tells about one request: a tunnel that ran, or
// a refusal.
type Report struct {
	// Target is the name the client asked for, cut to 256 bytes. It comes
	// from the client: use it as a metrics label only when Allowed.
	Target string
	// Allowed is true when Target (and its protocol) is in the allow list.
	Allowed bool
	// UDP is true for a datagram tunnel.
	UDP bool
	// Backend is the allowed target's Backend.Name ("ns/svc:port" or the
	// address): a bounded label, empty when the target was not allowed.
	Backend string
	// Endpoint is the address dialled, empty when nothing was.
	Endpoint string

	// Up counts payload bytes from the client to the target, Down from
	// the target to the client; for UDP, datagram payloads. UpDatagrams and
	// DownDatagrams count UDP datagrams.
	Up, Down                   int64
	UpDatagrams, DownDatagrams int64

	// Start is when the request reached the Handler; Duration how long it
	// was served.
	Start    time.Time
	Duration time.Duration

	// Status is the HTTP status answered: 101 for a tunnel.
	Status  int
	Outcome Outcome
	// Err explains a refusal or a failure; nil for a clean end.
	Err error
}

// RefusedError is a handshake the server answered with an HTTP status other
// than 101.
type RefusedError struct {
	Status int
	// Message is the first line of the response body.
	Message string
}

func (e *RefusedError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("tunnel refused: %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("tunnel refused: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Permanent reports whether trying again cannot help: the server refused
// the request itself (4xx). 5xx answers (a target that cannot be dialled, a
// missing Secret) may change and are retried.
func (e *RefusedError) Permanent() bool { return e.Status >= 400 && e.Status < 500 }

// ResetError is a TCP stream the peer aborted, or a connection that closed
// before the stream ended.
type ResetError struct {
	Code   websocket.StatusCode
	Reason string
}

func (e *ResetError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("tunnel reset by peer (close %d)", int(e.Code))
	}
	return fmt.Sprintf("tunnel reset by peer (close %d: %s)", int(e.Code), e.Reason)
}
