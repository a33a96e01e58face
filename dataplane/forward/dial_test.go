package forward

import (
	"context"
	"net"
	"slices"
	"testing"
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
