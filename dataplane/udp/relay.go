package udp

import (
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/panics"
)

// Options configure a Relay. The zero value is usable.
type Options struct {
	// Log receives one line per session and the listener's errors.
	Log logr.Logger
	// LogSessions logs each session at info level; otherwise at V(1).
	LogSessions bool
	// Metrics to update; nil creates unregistered ones.
	Metrics *Metrics
	// Admit takes a slot of a cap shared with other listeners (the
	// snapshot's maxConnections, which TCP connections count against
	// too) for a new session, and Release gives it back when the session
	// ends. Nil: no shared cap.
	Admit   func() bool
	Release func()
	// OnPanic is told of a panic recovered while handling a datagram, to
	// count it with the TCP path's; the Relay logs it and ends the
	// session it concerned.
	OnPanic func(*panics.Error)
	// Batch is how many datagrams one system call reads from the listener
	// socket (recvmmsg) or writes to it (sendmmsg). 1 reads and writes one
	// datagram per call without the batch API's per-datagram address
	// allocations. Zero: DefaultBatch.
	Batch int
	// SweepInterval is how often sessions are checked for their idle and
	// probe timeouts, so a session outlives its timeout by at most this.
	// Zero: DefaultSweepInterval.
	SweepInterval time.Duration
	// Now is the clock of the per-client rate limits. Nil: time.Now.
	Now func() time.Time

	// lockedHook, for tests, is called with each datagram while its
	// session's mu is held (fromClient: client to backend; else backend to
	// client), so a test can panic there. Nil in production.
	lockedHook func(fromClient bool, d []byte)
	// noGSO keeps backend buffers segmented by the sender cut into
	// datagrams, as without GRO: the comparison of BenchmarkRelayDownload.
	noGSO bool
	// noJoin sends runs of same-size datagrams to one client one per
	// message, as without GSO: the comparison of BenchmarkRelayDownload.
	noJoin bool
	// noListenGRO reads a client's segmented sends cut into datagrams by
	// the kernel, as without GRO: the comparison of BenchmarkRelayUpload.
	noListenGRO bool
}

// Defaults of Options.
const (
	// DefaultBatch: see BenchmarkRelay for what batching buys; 8 messages
	// of maxDatagram bytes are 512 KiB per direction and listener.
	DefaultBatch = 8
	// DefaultSweepInterval makes a DNS session (5 s) end within 5.25 s.
	DefaultSweepInterval = 250 * time.Millisecond
)

// maxDatagram is the largest UDP payload over IPv4 and IPv6 without
// jumbograms: every read buffer holds one whole, so no datagram is cut.
const maxDatagram = 65535

// maxAliases bounds the client addresses one session answers to: its
// first one and those a QUIC client migrated or was rebound to. The
// oldest is forgotten first.
const maxAliases = 4

// maxConnectionIDs bounds the QUIC connection IDs one session is found by.
const maxConnectionIDs = 8
