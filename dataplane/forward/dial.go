package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// Dialer connects to one of a backend's endpoints. Connections are spread
// round-robin; a failed dial moves on to the next endpoint, so one dead
// endpoint costs a connection one failed attempt, not its whole life.
type Dialer struct {
	// Timeout bounds each attempt. Zero means 5s.
	Timeout time.Duration

	// KeepAlive is net.Dialer's: 0 for Go's default, negative to leave TCP
	// keepalive off (a Parker turns it on when the connection idles).
	KeepAlive time.Duration

	// next is the round-robin cursor; it only grows.
	next atomic.Uint64
}

// ErrNoEndpoints is returned when a backend has no ready endpoint: a finding
// for the operator, not a crash.
var ErrNoEndpoints = errors.New("backend has no ready endpoints")

// Dial connects to one of endpoints, trying each at most once, starting at
// the next one in turn. It returns the connection and the endpoint used. The
// error, if every attempt failed, names each endpoint's failure.
func (d *Dialer) Dial(ctx context.Context, endpoints []string) (net.Conn, string, error) {
	if len(endpoints) == 0 {
		return nil, "", ErrNoEndpoints
	}
	return d.dialFrom(ctx, endpoints, d.next.Add(1)-1)
}

// Next returns the endpoint whose turn it is, moving the turn on, or ""
// when there is none. http mode picks the endpoint of each request with
// it, so that its connection pool is keyed by endpoint, and dials the
// picked one with DialFrom.
func (d *Dialer) Next(endpoints []string) string {
	if len(endpoints) == 0 {
		return ""
	}
	return endpoints[(d.next.Add(1)-1)%uint64(len(endpoints))]
}

// Turn returns the index, among n endpoints, whose turn it is, moving the
// turn on: for callers that connect on their own (the relay loops), so
// that they share the round-robin with Dial.
func (d *Dialer) Turn(n int) int {
	if n <= 0 {
		return 0
	}
	return int((d.next.Add(1) - 1) % uint64(n))
}

// DialFrom is Dial starting at first: when first fails, the endpoints
// after it are tried in turn. An address that is not one of endpoints is
// the only one tried.
func (d *Dialer) DialFrom(ctx context.Context, endpoints []string, first string) (net.Conn, string, error) {
	i := slices.Index(endpoints, first)
	if i < 0 {
		return d.dialFrom(ctx, []string{first}, 0)
	}
	return d.dialFrom(ctx, endpoints, uint64(i))
}

// dialFrom tries each of endpoints once, from index start on.
func (d *Dialer) dialFrom(ctx context.Context, endpoints []string, start uint64) (net.Conn, string, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var errs []error
	nd := net.Dialer{Timeout: timeout, KeepAlive: d.KeepAlive}
	for i := range len(endpoints) {
		ep := endpoints[(start+uint64(i))%uint64(len(endpoints))]
		c, err := dialOne(ctx, &nd, ep)
		if err == nil {
			return c, ep, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", fmt.Errorf("dial %d endpoint(s): %w", len(endpoints), errors.Join(errs...))
}

// dialOne dials one endpoint within nd.Timeout, or until ctx ends.
//
// For an IP address and port under a context that can end (the dataplane
// dials under its Shutdown context), the timeout becomes the context's
// deadline without a timer: net.Dialer would otherwise wrap ctx in a
// context.WithDeadline per dial (a timer, a child context registered
// with ctx and removed again), while the socket's write deadline, which
// net arms from ctx.Deadline for the connect, bounds the dial all the
// same. A host name keeps the real deadline context: its resolver waits
// on Done, which only such a context closes at the deadline.
func dialOne(ctx context.Context, nd *net.Dialer, ep string) (net.Conn, error) {
	if ctx.Done() == nil || nd.Timeout <= 0 {
		return nd.DialContext(ctx, "tcp", ep)
	}
	if _, err := netip.ParseAddrPort(ep); err != nil {
		return nd.DialContext(ctx, "tcp", ep)
	}
	deadline := time.Now().Add(nd.Timeout)
	if d, ok := ctx.Deadline(); !ok || deadline.Before(d) {
		ctx = deadlineContext{Context: ctx, deadline: deadline}
	}
	plain := *nd
	plain.Timeout = 0
	return plain.DialContext(ctx, "tcp", ep)
}

// deadlineContext is its parent with an earlier deadline that closes
// nothing when it passes: for a dial, whose socket deadline enforces it.
type deadlineContext struct {
	context.Context
	deadline time.Time
}

func (c deadlineContext) Deadline() (time.Time, bool) { return c.deadline, true }
