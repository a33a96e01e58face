//go:build linux

package main

import (
	"strings"
	"syscall"
	"testing"
)

// TestSkipIdleBeyondThePeersDescriptors: a peer that holds more than its
// two sockets per idle connection skips, with the reason, the idle-N it
// cannot hold under the open-file limit, and runs those it can.
func TestSkipIdleBeyondThePeersDescriptors(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fits := int(lim.Cur / 6)
	for _, tc := range []struct {
		name    string
		peerFDs int
		idle    int
		want    string
	}{
		{"two sockets, as many as the limit", 0, int(lim.Cur), ""},
		{"six descriptors, fits", 6, fits, ""},
		{"six descriptors, one more than fits", 6, fits + 1, "the peer holds 6 descriptors per idle connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{opt: options{cmd: "mux", routes: []string{routeSSH}, peerFDs: tc.peerFDs}}
			got := r.skip(scenario{kind: kindIdle, route: routeSSH, idle: tc.idle})
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("skip(idle-%d) = %q, want %q", tc.idle, got, tc.want)
			}
		})
	}
}
