package peers

import (
	"runtime"
	"testing"
)

// HeldAfter fails t when the live heap grows by more than limit bytes for
// each of n ended connections that run(n) opens and ends. A leak grows it
// every time; what a box busy with other work adds (a pool that grew
// while the server lagged) does not: a round within the limit passes,
// and three rounds over it fail. what names the connections in messages.
func HeldAfter(t testing.TB, n, limit int, what string, run func(count int)) {
	t.Helper()
	var grown int64
	for range 3 {
		before := liveHeap()
		run(n)
		after := liveHeap()
		grown = int64(after) - int64(before)
		t.Logf("live heap %d -> %d bytes over %d ended %s", before, after, n, what)
		if grown <= int64(n*limit) {
			return
		}
	}
	t.Errorf("the live heap grew by %d bytes over %d ended %s (%d each) in each of three rounds, want at most %d each",
		grown, n, what, grown/int64(n), limit)
}

// liveHeap is the heap's live bytes after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC() // the second empties sync.Pools' victim caches
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
