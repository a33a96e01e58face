//go:build !linux

package relayloop

import (
	"net"
	"net/netip"
)

// Set is unavailable here: New returns ErrUnsupported.
type Set struct{}

// New returns ErrUnsupported: relay loops need epoll.
func New(Options) (*Set, error) { return nil, ErrUnsupported }

// Stats are what the loops hold now.
type Stats struct{ Conns, Pipes, Backends, Idle, Calls int64 }

// Stats is zero: there are no loops.
func (*Set) Stats() Stats { return Stats{} }

// CloseIdle does nothing.
func (*Set) CloseIdle(any) {}

// EvictIdle returns false: there are no loops' connections.
func (*Set) EvictIdle(any) bool { return false }

// Close does nothing.
func (*Set) Close() error { return nil }

// Acceptor is unavailable here.
type Acceptor struct{}

// Accept returns ErrUnsupported.
func (*Set) Accept(*net.TCPListener, Handler) (*Acceptor, error) { return nil, ErrUnsupported }

// Stop does nothing.
func (*Acceptor) Stop() {}

// Conn is unavailable here.
type Conn struct{}

// Peer is the zero AddrPort.
func (*Conn) Peer() netip.AddrPort { return netip.AddrPort{} }

// Local is the zero AddrPort.
func (*Conn) Local() netip.AddrPort { return netip.AddrPort{} }

// Abort does nothing.
func (*Conn) Abort() {}

// EvictIdle returns false: there are no loops' connections.
func (*Conn) EvictIdle(any) bool { return false }

// Flush does nothing.
func (*Conn) Flush() {}

// Flusher returns Flush.
func (*Conn) Flusher() func() { return func() {} }

// FlushFromLoop does nothing.
func (*Conn) FlushFromLoop() {}

// Adopt returns ErrUnsupported.
func (*Set) Adopt(int, netip.AddrPort, Handler, *TLS, []byte) (*Conn, error) {
	return nil, ErrUnsupported
}

// Caller is unavailable here.
type Caller struct{}

// Caller returns a Caller whose calls fail with ErrUnsupported.
func (*Set) Caller() *Caller { return &Caller{} }

// Caller returns a Caller whose calls fail with ErrUnsupported.
func (*Conn) Caller() *Caller { return &Caller{} }

// Call is unavailable here.
type Call struct{}

// NewCall returns a Call whose Start fails.
func (*Caller) NewCall(CallRequest) *Call { return &Call{} }

// Start does nothing: no Call is made here (Set is never made).
func (*Caller) Start(...*Call) {}

// Abort does nothing.
func (*Call) Abort(error) {}

// Resume does nothing.
func (*Call) Resume() {}
