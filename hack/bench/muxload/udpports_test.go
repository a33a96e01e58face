//go:build linux

package main

import (
	"net"
	"testing"
	"time"
)

// TestUDPDialerQuarantinesPorts checks the rule: a port a session was
// dialled from is refused until clientPortQuarantine has passed.
func TestUDPDialerQuarantinesPorts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newUDPDialer()
	for _, c := range []struct {
		what string
		at   time.Duration
		port int
		want bool
	}{
		{"first use", 0, 5000, true},
		{"another port", time.Second, 5001, true},
		{"reused a second later", time.Second, 5000, false},
		{"reused just inside the quarantine", clientPortQuarantine - time.Millisecond, 5000, false},
		{"reused once the quarantine is over", clientPortQuarantine, 5000, true},
		{"the other, long after (pruned)", time.Hour, 5001, true},
	} {
		d.now = func() time.Time { return t0.Add(c.at) }
		if got := d.take(c.port); got != c.want {
			t.Errorf("%s: took %v, want %v", c.what, got, c.want)
		}
	}
	if len(d.used) != 1 {
		t.Errorf("%d ports remembered after an hour, want the one just used", len(d.used))
	}
}

// TestUDPDialerNeverRepeatsAPort dials and closes sessions one after the
// other, as a run's probes do, and checks that no two got the same port:
// with the kernel's choice alone, 500 sessions repeated one in each of 20
// trials, and the mux takes the second for the first's session.
func TestUDPDialerNeverRepeatsAPort(t *testing.T) {
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	d := newUDPDialer()
	seen := map[int]bool{}
	for range 500 {
		c, err := d.dial(l.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		_ = c.Close()
		if seen[port] {
			t.Fatalf("port %d dialled twice", port)
		}
		seen[port] = true
	}
}
