package relayloop

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The timer heap pops in deadline order whatever the pushes' order.
func TestTimerHeapOrder(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 10, 1000} {
		var h timerHeap
		var want []int64
		for range n {
			at := rand.Int64N(100)
			want = append(want, at)
			h.push(timer{at: at})
		}
		slices.Sort(want)
		var got []int64
		for len(h) > 0 {
			got = append(got, h.pop().at)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: popped %v, want %v", n, got, want)
		}
	}
}
