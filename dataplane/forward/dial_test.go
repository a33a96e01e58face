package forward

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// listening returns the address of a listener that accepts (the kernel
// completes the handshake) until cleanup, and one where nothing listens.
func listening(t *testing.T) (live, dead string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead = gone.Addr().String()
	_ = gone.Close()
	return ln.Addr().String(), dead
}

func TestDialerNextTakesTurns(t *testing.T) {
	var d Dialer
	eps := []string{"a:1", "b:1", "c:1"}
	var got []string
	for range 4 {
		got = append(got, d.Next(eps))
	}
	if want := []string{"a:1", "b:1", "c:1", "a:1"}; !slices.Equal(got, want) {
		t.Fatalf("Next: %q, want %q", got, want)
	}
	if ep := d.Next(nil); ep != "" {
		t.Fatalf("Next(nil) = %q", ep)
	}
}

func TestDialerDialFrom(t *testing.T) {
	live, dead := listening(t)
	tests := []struct {
		name      string
		endpoints []string
		first     string
		want      string // endpoint used; "" for an error
	}{
		{"first answers", []string{dead, live}, live, live},
		{"first fails, the next answers", []string{dead, live}, dead, live},
		{"wraps around", []string{live, dead}, dead, live},
		{"every endpoint fails", []string{dead}, dead, ""},
		{"an address not among endpoints is the only one tried", []string{live}, dead, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Dialer
			c, ep, err := d.DialFrom(context.Background(), tt.endpoints, tt.first)
			if c != nil {
				_ = c.Close()
			}
			if ep != tt.want || (err == nil) != (tt.want != "") {
				t.Fatalf("DialFrom(%q, %q) = %q, %v; want %q", tt.endpoints, tt.first, ep, err, tt.want)
			}
		})
	}
}

// TestDialerTimeoutAndCancel dials an address that drops SYNs: the
// dial ends at the Dialer's timeout, or at the context's deadline when
// that comes first, or when the context is cancelled, with an error that
// says which. The dataplane dials under a cancellable context, for which
// the timeout is enforced by the socket's deadline, not by a timer.
func TestDialerTimeoutAndCancel(t *testing.T) {
	hole := peers.BlackholeAddr(t)
	tests := []struct {
		name        string
		timeout     time.Duration
		ctxDeadline time.Duration // 0: none
		cancelAfter time.Duration // 0: never
		wantTimeout bool
		wantCancel  bool
	}{
		{name: "the dial timeout", timeout: 200 * time.Millisecond, wantTimeout: true},
		{name: "an earlier context deadline", timeout: time.Minute, ctxDeadline: 200 * time.Millisecond, wantTimeout: true},
		{name: "cancelled", timeout: time.Minute, cancelAfter: 200 * time.Millisecond, wantCancel: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.ctxDeadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.ctxDeadline)
				defer cancel()
			}
			if tt.cancelAfter > 0 {
				stop := time.AfterFunc(tt.cancelAfter, cancel)
				defer stop.Stop()
			}
			d := Dialer{Timeout: tt.timeout}
			done := make(chan error, 1)
			go func() {
				c, _, err := d.Dial(ctx, []string{hole})
				if c != nil {
					_ = c.Close()
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the dial did not end")
			}
			var ne net.Error
			if gotTimeout := errors.As(err, &ne) && ne.Timeout(); gotTimeout != tt.wantTimeout {
				t.Errorf("dial error %v: timeout %v, want %v", err, gotTimeout, tt.wantTimeout)
			}
			if gotCancel := errors.Is(err, context.Canceled); gotCancel != tt.wantCancel {
				t.Errorf("dial error %v: cancelled %v, want %v", err, gotCancel, tt.wantCancel)
			}
		})
	}
}
