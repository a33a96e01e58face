package dataplane

import (
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

func TestClientSpeaksFirst(t *testing.T) {
	route := func(p snapshot.Protocol) snapshot.Route { return snapshot.Route{Match: snapshot.Match{Protocol: p}} }
	cases := []struct {
		name string
		l    snapshot.Listener
		want bool
	}{
		{"ssh and tls", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.SSH), route(snapshot.TLS)}}, true},
		{"any as fallback", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.SSH), route(snapshot.Any)}}, true},
		{"any first", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.Any)}}, false},
		{"timeout route", snapshot.Listener{Routes: []snapshot.Route{route(snapshot.SSH), route(snapshot.Timeout)}}, false},
		{"no routes", snapshot.Listener{}, true},
		{"PROXY header first", snapshot.Listener{ProxyProtocol: true, Routes: []snapshot.Route{route(snapshot.Timeout)}}, true},
		{"TLS terminated", snapshot.Listener{TLS: &snapshot.TLSConfig{}, Routes: []snapshot.Route{route(snapshot.Any)}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientSpeaksFirst(&tc.l); got != tc.want {
				t.Errorf("clientSpeaksFirst = %v, want %v", got, tc.want)
			}
		})
	}
}
