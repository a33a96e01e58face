package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	start := d.next.Add(1) - 1
	var errs []error
	nd := net.Dialer{Timeout: timeout, KeepAlive: d.KeepAlive}
	for i := range len(endpoints) {
		ep := endpoints[(start+uint64(i))%uint64(len(endpoints))]
		c, err := nd.DialContext(ctx, "tcp", ep)
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
