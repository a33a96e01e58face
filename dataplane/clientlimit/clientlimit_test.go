package clientlimit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestKey(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		if got := Key(netip.MustParseAddr(tt.addr)).String(); got != tt.want {
			t.Errorf("Key(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// step is one admission or release in a scenario, of a connection or
// (with request) of a request in flight.
type step struct {
	at      time.Duration // after t0
	addr    string
	release bool    // release this client's last admitted connection, or a request
	request bool    // Hold (or, with release, Unhold) a request instead
	want    Refusal // for admissions; for requests, Connections means refused
}

func TestTable(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		steps  []step
	}{
		{"connection cap per client", Limits{MaxConnections: 2}, []step{
			{addr: "192.0.2.1"}, {addr: "192.0.2.1"},
			{addr: "192.0.2.1", want: Connections},
			{addr: "192.0.2.2"}, // another client is not affected
			{addr: "192.0.2.1", release: true},
			{addr: "192.0.2.1"}, // a slot freed
		}},
		{"an IPv6 /64 is one client", Limits{MaxConnections: 1}, []step{
			{addr: "2001:db8::1"},
			{addr: "2001:db8::2", want: Connections},
			{addr: "2001:db8:0:1::1"},
		}},
		{"rate: burst of twice the rate, then refills", Limits{Rate: 2}, []step{
			{addr: "192.0.2.1"}, {addr: "192.0.2.1"}, {addr: "192.0.2.1"}, {addr: "192.0.2.1"},
			{addr: "192.0.2.1", want: TooFast},
			{addr: "192.0.2.2"},
			{at: 500 * time.Millisecond, addr: "192.0.2.1"}, // one token back
			{at: 500 * time.Millisecond, addr: "192.0.2.1", want: TooFast},
		}},
		{"a refused connection takes no slot", Limits{MaxConnections: 1, Rate: 1}, []step{
			{addr: "192.0.2.1"},
			{addr: "192.0.2.1", want: Connections},
			{addr: "192.0.2.1", release: true},
			{addr: "192.0.2.1"}, // the second token of the burst
		}},
		{"no limits", Limits{}, []step{
			{addr: "192.0.2.1"}, {addr: "192.0.2.1"}, {addr: "192.0.2.1"},
			{addr: "192.0.2.1", request: true}, {addr: "192.0.2.1", request: true},
		}},
		{"requests in flight are capped apart from connections", Limits{MaxConnections: 1, MaxRequests: 2}, []step{
			{addr: "192.0.2.1"},
			{addr: "192.0.2.1", request: true}, {addr: "192.0.2.1", request: true},
			{addr: "192.0.2.1", request: true, want: Connections},
			{addr: "192.0.2.2"}, {addr: "192.0.2.2", request: true}, // another client is not affected
			{addr: "192.0.2.1", want: Connections}, // requests take no connection
			{addr: "192.0.2.1", request: true, release: true},
			{addr: "192.0.2.1", request: true}, // a request ended: room for one
			{addr: "192.0.2.1", request: true, want: Connections},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable()
			keys := map[string][]netip.Prefix{}
			for i, s := range tt.steps {
				if s.request {
					key := Key(netip.MustParseAddr(s.addr))
					if s.release {
						tab.Unhold(key)
					} else if held := tab.Hold(key, tt.limits); held != (s.want == Admitted) {
						t.Fatalf("step %d (a request of %s): held %v, want %v", i, s.addr, held, s.want == Admitted)
					}
					continue
				}
				if s.release {
					k := keys[s.addr]
					tab.Release(k[len(k)-1])
					keys[s.addr] = k[:len(k)-1]
					continue
				}
				k, got := tab.Admit(netip.MustParseAddr(s.addr), t0.Add(s.at), tt.limits)
				if got != s.want {
					t.Fatalf("step %d (%s at %v): %q, want %q", i, s.addr, s.at, got, s.want)
				}
				if got == Admitted {
					keys[s.addr] = append(keys[s.addr], k)
				}
			}
		})
	}
}

// TestTableForgetsIdleClients: memory stays bounded by the clients that
// hold connections or opened some recently, however many come and go.
func TestTableForgetsIdleClients(t *testing.T) {
	tab := NewTable()
	l := Limits{MaxConnections: 4, Rate: 10}
	held, _ := tab.Admit(netip.MustParseAddr("198.51.100.1"), t0, l)
	for i := range 100_000 {
		addr := netip.MustParseAddr(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		now := t0.Add(time.Duration(i) * time.Millisecond)
		k, r := tab.Admit(addr, now, l)
		if r != Admitted {
			t.Fatalf("client %d refused: %s", i, r)
		}
		tab.Release(k)
	}
	// 100,000 clients over 100 s, each refilled a second after it left:
	// only about a second's worth (and the sweep's slack) remain.
	if n := tab.Len(); n > 2*minSweep+1 {
		t.Errorf("table holds %d clients after 100,000 came and went, want at most %d", n, 2*minSweep+1)
	}
	// The client that holds a connection is remembered.
	if _, r := tab.Admit(netip.MustParseAddr("198.51.100.1"), t0.Add(200*time.Second), Limits{MaxConnections: 1}); r != Connections {
		t.Errorf("client with an open connection: %q, want it counted", r)
	}
	tab.Release(held)
}

// TestTableForgetsAnAttackOnceOver: the clients of a burst that ended
// are forgotten at the first admission a minute later, not kept until
// the table doubles again.
func TestTableForgetsAnAttackOnceOver(t *testing.T) {
	tab := NewTable()
	l := Limits{MaxConnections: 4, Rate: 10}
	for i := range 50_000 { // within 50 ms: none has refilled yet
		addr := netip.MustParseAddr(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		k, r := tab.Admit(addr, t0.Add(time.Duration(i)*time.Microsecond), l)
		if r != Admitted {
			t.Fatalf("client %d refused: %s", i, r)
		}
		tab.Release(k)
	}
	if n := tab.Len(); n < 50_000 {
		t.Fatalf("%d clients during the burst, want all 50,000 remembered (their budgets are not refilled)", n)
	}
	k, _ := tab.Admit(netip.MustParseAddr("198.51.100.1"), t0.Add(2*time.Minute), l)
	if n := tab.Len(); n != 1 {
		t.Errorf("%d clients after the first admission two minutes later, want the new one only", n)
	}
	tab.Release(k)
}

// TestTableKeepsClientsWithRequestsInFlight: a client whose connection
// ended while its requests run on (an HTTP/2 stream's handler outlives
// its connection) is remembered until they end, then forgotten.
func TestTableKeepsClientsWithRequestsInFlight(t *testing.T) {
	tab := NewTable()
	l := Limits{MaxConnections: 1, MaxRequests: 1}
	key, r := tab.Admit(netip.MustParseAddr("192.0.2.1"), t0, l)
	if r != Admitted || !tab.Hold(key, l) {
		t.Fatal("the first connection and request were refused")
	}
	tab.Release(key)
	if tab.Len() != 1 || tab.Hold(key, l) {
		t.Fatalf("after the connection ended: %d clients, and a second request held; want the client and its request remembered", tab.Len())
	}
	tab.Unhold(key)
	if n := tab.Len(); n != 0 {
		t.Errorf("%d clients after the last request ended, want none", n)
	}
}
