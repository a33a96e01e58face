package dataplane

import "time"

// Defaults of HTTPLimits. net/http's own defaults suit a server behind a
// proxy, not one on the open internet: 1 MiB of headers per request, no
// header timeout, keep-alive forever, 250 streams per HTTP/2 connection.
const (
	// DefaultHTTPMaxHeaderBytes caps a request's header block; a larger
	// one gets 431. Browsers with heavy cookies send a few KiB, and nginx
	// (4 buffers of 8 KiB) and haproxy (16 KiB buffers) refuse much less
	// than this: it passes real clients, while a request holds 64 KiB of
	// the dataplane's memory, not 1 MiB.
	DefaultHTTPMaxHeaderBytes = 64 << 10

	// DefaultHTTPReadHeaderTimeout is how long a request's header block
	// may take once its first byte has come: a client that trickles
	// headers (slowloris) loses its connection then, instead of holding
	// it and its slot of maxConnections.
	DefaultHTTPReadHeaderTimeout = 10 * time.Second

	// DefaultHTTPIdleTimeout closes a kept-alive connection (HTTP/1.1 or
	// HTTP/2) with no request for this long. An idle client holds a slot
	// of maxConnections; browsers reconnect at once when they need to
	// (nginx waits 75 s by default).
	DefaultHTTPIdleTimeout = 60 * time.Second

	// DefaultHTTPMaxConcurrentStreams caps the streams open at once on one
	// HTTP/2 connection: each is a goroutine here and may need a backend
	// connection. 100 is the least RFC 9113 §6.5.2 recommends, and what
	// haproxy advertises (nginx: 128).
	DefaultHTTPMaxConcurrentStreams = 100

	// DefaultHTTPWriteTimeout closes an HTTP/2 connection whose client
	// takes none of its responses for this long: it stops reading, or
	// opens no flow-control window for a response that waits for one.
	// Either way it holds the responses and what was fetched for them:
	// a stream whose response is larger than one read (16 KiB) holds its
	// backend connection too, up to maxConcurrentStreams of them per
	// connection. The HTTP/2 server's own default
	// (2 min) suits a server behind a proxy; 30 s is haproxy's usual
	// `timeout client`. The clock restarts whenever the client opens
	// window for a waiting response and, on the relay loops, whenever
	// it takes a byte; on goroutines each write of buffered output (at
	// most about 64 KiB) must be taken within it.
	DefaultHTTPWriteTimeout = 30 * time.Second
)

// HTTPLimits bound what one client connection in http mode can make the
// dataplane hold. Zero fields take the defaults above.
type HTTPLimits struct {
	// MaxHeaderBytes caps a request's header block (an HTTP/2 header list
	// too); a larger one gets 431. It caps a backend's response heads
	// too: a larger one is a 502.
	MaxHeaderBytes int

	// ReadHeaderTimeout bounds the arrival of a request's header block.
	ReadHeaderTimeout time.Duration

	// IdleTimeout closes a connection with no request in flight for this
	// long. Zero: DefaultHTTPIdleTimeout, or Options.IdleTimeout when that
	// is set and shorter.
	IdleTimeout time.Duration

	// MaxConcurrentStreams caps the streams open at once on one HTTP/2
	// connection; the client waits for one to end before it opens more.
	MaxConcurrentStreams int

	// WriteTimeout closes an HTTP/2 connection whose client takes none of
	// its responses for this long (DefaultHTTPWriteTimeout).
	WriteTimeout time.Duration
}

// withDefaults fills the zero fields; idle is Options.IdleTimeout.
func (l HTTPLimits) withDefaults(idle time.Duration) HTTPLimits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultHTTPMaxHeaderBytes
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultHTTPReadHeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultHTTPIdleTimeout
		if idle > 0 && idle < l.IdleTimeout {
			l.IdleTimeout = idle
		}
	}
	if l.MaxConcurrentStreams <= 0 {
		l.MaxConcurrentStreams = DefaultHTTPMaxConcurrentStreams
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultHTTPWriteTimeout
	}
	return l
}

// maxHead is the largest request or response head http mode takes.
func (s *Server) maxHead() int {
	return s.opt.HTTP.withDefaults(s.opt.IdleTimeout).MaxHeaderBytes
}
