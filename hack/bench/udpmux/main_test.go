package main

import (
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// TestBenchSnapshot checks that the snapshot udpmux serves is valid and
// routes DNS before anything else.
func TestBenchSnapshot(t *testing.T) {
	snap := benchSnapshot("127.0.0.1:17443", "127.0.0.1:17011", "127.0.0.1:17012", 20000)
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	l := snap.Listeners[0]
	if !l.UDP() || len(l.Routes) != 2 || l.Routes[0].Match.Protocol != snapshot.DNS || l.Routes[1].Match.Protocol != snapshot.Any {
		t.Errorf("listener %+v", l)
	}
}
