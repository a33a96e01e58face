// Package slots counts what the dataplane holds against its caps
// (connections per listener and in all, UDP sessions, backend connections
// of http mode).
//
// A count that a refused client bumps and then takes back reads above its
// cap for that instant: the gauges that show it would say the cap does not
// hold, and a slot freed during the instant is refused to the next client
// too. Take never counts past the cap.
package slots

import "sync/atomic"

// Take counts one more in n unless limit (0: no limit) are counted
// already, and says whether it did. Give the slot back with n.Add(-1).
func Take(n *atomic.Int64, limit int) bool {
	for {
		c := n.Load()
		if limit > 0 && c >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(c, c+1) {
			return true
		}
	}
}
