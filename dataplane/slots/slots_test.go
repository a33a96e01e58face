package slots

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestTake(t *testing.T) {
	for _, c := range []struct {
		name         string
		held, limit  int
		want         bool
		wantHeldNext int64
	}{
		{"no limit", 1000, 0, true, 1001},
		{"below the cap", 2, 3, true, 3},
		{"at the cap", 3, 3, false, 3},
		{"past the cap after the cap was lowered", 5, 3, false, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			var n atomic.Int64
			n.Store(int64(c.held))
			if got := Take(&n, c.limit); got != c.want {
				t.Errorf("Take = %v, want %v", got, c.want)
			}
			if got := n.Load(); got != c.wantHeldNext {
				t.Errorf("count %d after, want %d", got, c.wantHeldNext)
			}
		})
	}
}

// TestTakeConcurrent: clients racing for the last slots get exactly as
// many as there are, and no reader sees the count past the cap meanwhile.
func TestTakeConcurrent(t *testing.T) {
	const limit, clients = 50, 8
	var n, taken atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range 20000 {
				if Take(&n, limit) {
					taken.Add(1)
				}
			}
		})
	}
	over := make(chan int64, 1)
	go func() {
		defer close(over)
		for !stop.Load() {
			if c := n.Load(); c > limit {
				over <- c
				return
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	if c, ok := <-over; ok {
		t.Errorf("the count read %d over a cap of %d", c, limit)
	}
	if got := taken.Load(); got != limit {
		t.Errorf("%d slots taken, want %d", got, limit)
	}
}
