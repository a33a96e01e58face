package route

import (
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/sniff"
)

func TestDecideTerminatedHTTP2ByServerName(t *testing.T) {
	preface := []byte(sniff.HTTP2Preface)
	rs := routes(
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"api.test"}},
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"*.web.test"}},
		snapshot.Match{Protocol: snapshot.WebSocket},
		snapshot.Match{Protocol: snapshot.HTTP},
	)
	for _, tc := range []struct {
		sni  string
		want int
	}{
		{"api.test", 0},
		{"www.web.test", 1},
		{"other.test", 3}, // the route without hosts takes any preface
		{"", 3},           // not terminated here: no host to compare
	} {
		d := DecideTerminated(rs, preface, false, tc.sni)
		if d.NeedMore || d.Route != tc.want {
			t.Errorf("SNI %q: route %d (need more %v), want %d", tc.sni, d.Route, d.NeedMore, tc.want)
		}
		if tc.sni != "" && d.Info.Host != tc.sni {
			t.Errorf("SNI %q: Info.Host %q", tc.sni, d.Info.Host)
		}
	}
	// A partial preface waits; an HTTP/1.1 request keeps its own Host,
	// whatever the server name.
	if d := DecideTerminated(rs, preface[:10], false, "api.test"); !d.NeedMore {
		t.Errorf("partial preface decided %+v", d)
	}
	h1 := []byte("GET / HTTP/1.1\r\nHost: x.web.test\r\n\r\n")
	if d := DecideTerminated(rs, h1, false, "api.test"); d.Route != 1 {
		t.Errorf("HTTP/1.1 with Host x.web.test under SNI api.test: route %d, want 1", d.Route)
	}
	// Decide, without a server name, never matches a host route.
	if d := Decide(rs[:2], preface, false); d.Route != -1 {
		t.Errorf("Decide without SNI chose route %d for the preface", d.Route)
	}
}
