package route

import (
	"slices"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// TestProtocolTable checks that the table maps each protocol to its own
// sniffer: a route of protocol p takes a real first flight of p and refuses
// those of the other sniffed protocols. A protocol added to the table needs
// a capture here.
func TestProtocolTable(t *testing.T) {
	captures := map[snapshot.Protocol]string{
		snapshot.SSH:       "ssh_client_first_flight.bin",
		snapshot.TLS:       "tls13_clienthello_curl.bin",
		snapshot.HTTP:      "http11_get_curl.bin",
		snapshot.WebSocket: "http11_websocket_upgrade_curl.bin",
		snapshot.OpenVPN:   "openvpn_tcp_client_hard_reset_v2.bin",
		snapshot.SOCKS5:    "socks5_greeting_curl.bin",
	}
	// What a capture of one protocol also is: a WebSocket handshake is an
	// HTTP request.
	also := map[snapshot.Protocol][]snapshot.Protocol{snapshot.WebSocket: {snapshot.HTTP}}

	seen := map[snapshot.Protocol]bool{}
	for _, p := range protocols {
		if seen[p.name] {
			t.Errorf("protocol %q is in the table twice", p.name)
		}
		seen[p.name] = true
		switch p.name {
		case snapshot.Bytes, snapshot.Timeout:
			if p.sniff != nil {
				t.Errorf("%s has a sniffer; Decide decides it without one", p.name)
			}
			continue
		case snapshot.QUIC, snapshot.WireGuard, snapshot.DNS:
			if p.sniff != nil {
				t.Errorf("%s has a stream sniffer; it is recognised in datagrams only", p.name)
			}
			continue
		case snapshot.Any:
			continue // matches everything: TestDecide
		}
		if p.sniff == nil {
			t.Errorf("%s has no sniffer", p.name)
			continue
		}
		if _, ok := captures[p.name]; !ok {
			t.Errorf("%s has no capture in this test", p.name)
		}
	}
	for own, file := range captures {
		data := corpus(t, file)
		for _, p := range Protocols() {
			if _, sniffed := captures[p]; !sniffed {
				continue
			}
			want := p == own || slices.Contains(also[own], p)
			d := Decide(routes(snapshot.Match{Protocol: p}), data, true)
			if got := d.Route == 0; got != want {
				t.Errorf("a %s route on %s: matched %v, want %v", p, file, got, want)
			}
		}
	}
}

// TestUnknownProtocolMatchesNothing: a protocol outside the table (a
// snapshot from a newer compile, say), or one recognised in datagrams
// only, takes no stream, and does not hold the decision back.
func TestUnknownProtocolMatchesNothing(t *testing.T) {
	for _, p := range []snapshot.Protocol{"gopher", snapshot.QUIC} {
		rs := routes(snapshot.Match{Protocol: p}, snapshot.Match{Protocol: snapshot.Any})
		if d := Decide(rs, []byte("x"), false); d.Route != 1 || d.NeedMore {
			t.Errorf("a %s route first: Decide = %+v, want route 1", p, d)
		}
	}
	if slot("gopher") != -1 || slot("") != -1 || slot("SSH") != -1 {
		t.Error("slot finds a protocol that is not in the table")
	}
}
