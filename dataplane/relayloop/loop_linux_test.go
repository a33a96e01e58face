package relayloop

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
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

// TestTimersSeeTheirOwnTime: a timer that fell due after the loop woke
// (while it handled that wake-up's events) fires with the loop's clock at
// or past its deadline. Connections' timers compare their deadline with
// the clock and re-arm themselves when it looks early: with the clock of
// the wake-up they re-armed at the same deadline, fireTimers popped it
// again, and the loop spun forever (a CI run of
// TestHTTPModeRouteIdleTimeout hung in Shutdown on it).
func TestTimersSeeTheirOwnTime(t *testing.T) {
	l := &loop{epoch: time.Now().Add(-time.Second)}
	l.clock = l.now() // the wake-up
	due := l.clock + int64(time.Millisecond)
	var seen int64
	l.timers.push(timer{at: due, fn: func() { seen = l.clock }})
	time.Sleep(2 * time.Millisecond) // the wake-up's events took longer
	l.fireTimers()
	if seen < due {
		t.Errorf("a timer due at %d fired with the clock at %d: it looks early to itself", due, seen)
	}
}

// The buffer free list serves as many head buffers as a loop's
// connections hold mid-exchange (four each) without allocating, and
// holds at most freeBufferBytes, whatever sizes come back.
func TestBufferFreeList(t *testing.T) {
	const held = 4 * 48 // 48 connections mid-exchange on one loop
	l := &loop{}
	cycle := func() {
		bufs := make([][]byte, 0, held)
		for range held {
			bufs = append(bufs, l.getBuffer(firstHeadBuffer))
		}
		for _, b := range bufs {
			l.putBuffer(b)
		}
	}
	cycle() // the first round allocates them
	var bufs [held][]byte
	allocs := testing.AllocsPerRun(10, func() {
		for i := range bufs {
			bufs[i] = l.getBuffer(firstHeadBuffer)
		}
		for _, b := range bufs {
			l.putBuffer(b)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations for %d buffers taken and given back, want 0", allocs, held)
	}
	for range 100 {
		l.putBuffer(make([]byte, copyChunk))
		l.putBuffer(make([]byte, defaultMaxHead))
	}
	var sum int
	for _, b := range l.buffers {
		sum += cap(b)
	}
	if sum > freeBufferBytes || sum != l.bufferBytes {
		t.Errorf("free list holds %d bytes (counted %d), want at most %d", sum, l.bufferBytes, freeBufferBytes)
	}
	if b := l.getBuffer(defaultMaxHead); len(b) != defaultMaxHead {
		t.Errorf("getBuffer(%d) gave %d bytes", defaultMaxHead, len(b))
	}
}

// TestIdleLoopParks: a loop with nothing to do waits for the kernel to
// wake it. Before it parks it yields its core and looks again, once a
// round (run): yielding and looking until an event came would keep a
// core busy for nothing, a round every microsecond or so.
func TestIdleLoopParks(t *testing.T) {
	s, err := New(Options{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := s.loops[0]
	looks := func() int {
		ch := make(chan int, 1)
		if !l.post(func() { ch <- l.looks }) {
			t.Fatal("the loop stopped")
		}
		return <-ch
	}
	before := looks()
	time.Sleep(200 * time.Millisecond)
	// Each call of looks wakes the loop once, for a few looks; nothing
	// else should.
	if n := looks() - before; n > 20 {
		t.Fatalf("an idle loop looked at its events %d times in 200 ms: it does not park", n)
	}
}
