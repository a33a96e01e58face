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

// Re-arming and disarming connections' timers, in any order, keeps the
// heap a heap and every connection's position true, and pops each armed
// connection once, at its last time.
func TestTimerHeapArmAndDisarm(t *testing.T) {
	l := &loop{}
	conns := make([]*Conn, 50)
	for i := range conns {
		conns[i] = &Conn{}
	}
	want := map[*Conn]int64{} // the model: armed connections and their time
	check := func(step int) {
		t.Helper()
		if len(l.timers) != len(want) {
			t.Fatalf("step %d: %d timers, want %d", step, len(l.timers), len(want))
		}
		for i, tm := range l.timers {
			if i > 0 && l.timers[(i-1)/2].at > tm.at {
				t.Fatalf("step %d: timer %d at %d is before its parent's %d", step, i, tm.at, l.timers[(i-1)/2].at)
			}
			if tm.c.timerPos != i+1 || want[tm.c] != tm.at {
				t.Fatalf("step %d: timer %d (at %d) has position %d, want %d at %d", step, i, tm.at, tm.c.timerPos, i+1, want[tm.c])
			}
		}
	}
	for step := range 5000 {
		c := conns[rand.IntN(len(conns))]
		switch rand.IntN(3) {
		case 0, 1:
			at := rand.Int64N(1000)
			l.arm(c, at)
			want[c] = at
		case 2:
			l.disarm(c)
			delete(want, c)
		}
		check(step)
	}
	var last int64
	for len(l.timers) > 0 {
		tm := l.timers.pop()
		if tm.at < last || want[tm.c] != tm.at || tm.c.timerPos != 0 {
			t.Fatalf("popped %d after %d (armed at %d, position %d)", tm.at, last, want[tm.c], tm.c.timerPos)
		}
		delete(want, tm.c)
		last = tm.at
	}
	if len(want) != 0 {
		t.Fatalf("%d armed connections never popped", len(want))
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
