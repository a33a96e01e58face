package relayloop

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// on runs f on loop l and waits for it.
func on(t testing.TB, l *loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	if !l.post(func() { defer close(done); f() }) {
		t.Fatal("loop stopped")
	}
	<-done
}

// checkIdleCount fails t unless the pool's count of idle connections
// (which Stats reports and a cap's evictor asks first) and its idle
// orders (which the evictor takes the first of) hold what its lists hold:
// the order of all of them, and each Slots value's order those of its
// own.
func checkIdleCount(t *testing.T, s *Set) {
	t.Helper()
	p := &s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	listed := map[*backend]bool{}
	for _, lst := range p.lists {
		for _, b := range lst.conns {
			listed[b] = true
		}
	}
	if p.idle != len(listed) {
		t.Errorf("the pool counts %d idle connections, its lists hold %d", p.idle, len(listed))
	}
	walk := func(name string, o *idleOrder, belongs func(*backend) bool) int {
		n := 0
		var prev *backend
		for b := o.first; b != nil; b = b.order[o.links].next {
			if b.order[o.links].prev != prev {
				t.Errorf("%s: a connection's link back is broken", name)
			}
			if !listed[b] || !belongs(b) {
				t.Errorf("%s holds a connection its lists do not, or of other slots", name)
			}
			prev = b
			n++
			if n > len(listed) {
				t.Errorf("%s holds more than the lists: a cycle", name)
				break
			}
		}
		if o.last != prev {
			t.Errorf("%s: its last is not the end of its links", name)
		}
		return n
	}
	if n := walk("the order of all", &p.all, func(*backend) bool { return true }); n != len(listed) {
		t.Errorf("the order of all holds %d idle connections, the lists %d", n, len(listed))
	}
	n := 0
	for slots, si := range p.bySlots {
		n += walk(fmt.Sprintf("slots %v's order", slots), &si.idleOrder, func(b *backend) bool { return b.bySlots == si })
	}
	if n != len(listed) {
		t.Errorf("the slots' orders hold %d idle connections, the lists %d", n, len(listed))
	}
}

// poolSet starts a Set of that many loops, and a backend that takes
// connections and reads what they send.
func poolSet(t testing.TB, loops int) (*Set, netip.AddrPort) {
	t.Helper()
	srv := peers.NewTCPServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	s, err := New(Options{Loops: loops})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, netip.MustParseAddrPort(srv.Addr)
}

// TestPoolMovesIdleConnectionsBetweenLoops follows one backend
// connection through the shared pool: pooled by loop A, taken by loop B
// (which moves it into its epoll set, and A forgets it), pooled by B,
// taken back by A, pooled again and evicted by B for a slot. The race
// detector watches both loops dispatching its events meanwhile.
func TestPoolMovesIdleConnectionsBetweenLoops(t *testing.T) {
	s, ep := poolSet(t, 2)
	a, b := s.loops[0], s.loops[1]
	key := poolKey{"k", ep}

	var released atomic.Int64
	var conn *backend
	on(t, a, func() {
		var err error
		conn, err = a.dialBackend(ep, key, &Target{})
		if err != nil {
			t.Error(err)
			return
		}
		conn.release = func() { released.Add(1) }
		a.putIdle(conn)
	})
	if st := s.Stats(); st.Backends != 1 || st.Idle != 1 {
		t.Fatalf("after A pooled it: %+v", st)
	}

	for i, hop := range []struct{ from, to *loop }{{a, b}, {b, a}} {
		var got *backend
		on(t, hop.to, func() { got = hop.to.takeIdle(key) })
		if got != conn || conn.home.Load() != hop.to {
			t.Fatalf("hop %d: took %p (home %p), want %p on %p", i, got, conn.home.Load(), conn, hop.to)
		}
		var inFrom, inTo bool
		on(t, hop.from, func() { _, inFrom = hop.from.backends[conn.id] }) // after its forget
		on(t, hop.to, func() {
			_, inTo = hop.to.backends[conn.id]
			hop.to.putIdle(conn)
		})
		if inFrom || !inTo {
			t.Errorf("hop %d: in the old home's table %v, in the new one's %v", i, inFrom, inTo)
		}
		checkIdleCount(t, s)
	}
	if st := s.Stats(); st.Backends != 1 || st.Idle != 1 {
		t.Fatalf("after two moves: %+v", st)
	}

	// A is its home again; B evicts it for a slot.
	var evicted bool
	on(t, b, func() { evicted = b.evictIdle(nil) })
	if !evicted || released.Load() != 1 {
		t.Fatalf("evicted %v, slots released %d", evicted, released.Load())
	}
	if st := s.Stats(); st.Backends != 0 || st.Idle != 0 {
		t.Errorf("after the eviction: %+v", st)
	}
	var inA bool
	on(t, a, func() { _, inA = a.backends[conn.id] })
	if inA {
		t.Error("the evicted connection is still in its old home's table")
	}
}

// TestEvictIdleTakesOnlyItsSlots: at the cap a request closes only an
// idle connection that holds a slot of the same kind as the one it
// lacks (Target.Slots): another listener's stay pooled.
func TestEvictIdleTakesOnlyItsSlots(t *testing.T) {
	s, ep := poolSet(t, 1)
	l := s.loops[0]
	released := map[string]int{}
	on(t, l, func() {
		for _, slots := range []string{"a", "b"} {
			conn, err := l.dialBackend(ep, poolKey{slots, ep}, &Target{Slots: slots})
			if err != nil {
				t.Error(err)
				return
			}
			conn.release = func() { released[slots]++ }
			l.putIdle(conn)
		}
	})
	for i, step := range []struct {
		slots    any
		evicted  bool
		released map[string]int
	}{
		{"c", false, map[string]int{}},
		{"a", true, map[string]int{"a": 1}},
		{"a", false, map[string]int{"a": 1}},
		{nil, true, map[string]int{"a": 1, "b": 1}},
		{nil, false, map[string]int{"a": 1, "b": 1}},
	} {
		var evicted bool
		var got map[string]int
		on(t, l, func() {
			evicted = l.evictIdle(step.slots)
			got = maps.Clone(released)
		})
		if evicted != step.evicted || !maps.Equal(got, step.released) {
			t.Errorf("step %d, evictIdle(%v): evicted %v, released %v; want %v, %v", i, step.slots, evicted, got, step.evicted, step.released)
		}
		checkIdleCount(t, s)
	}
}

// TestEvictIdleClosesTheLongestIdle: at a cap the connection that gives
// way is the one idle the longest among those of the slots asked for
// (nil: any), whatever its key or loop; one taken and pooled again is
// idle since it came back.
func TestEvictIdleClosesTheLongestIdle(t *testing.T) {
	s, ep := poolSet(t, 2)
	var mu sync.Mutex // the loops close what is left at the end, together
	closed := map[string]bool{}
	conns := map[string]*backend{}
	// Pooled in this order, by the loops in turn, over two keys each.
	for i, name := range []string{"a1", "b1", "a2", "b2", "a3"} {
		l := s.loops[i%2]
		on(t, l, func() {
			slots := name[:1]
			conn, err := l.dialBackend(ep, poolKey{slots + name[1:], ep}, &Target{Slots: slots})
			if err != nil {
				t.Error(err)
				return
			}
			conn.release = func() {
				mu.Lock()
				defer mu.Unlock()
				closed[name] = true
			}
			conns[name] = conn
			l.putIdle(conn)
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	// a1 is taken for a request and comes back: now idle the shortest.
	l := s.loops[0]
	on(t, l, func() {
		if got := l.takeIdle(poolKey{"a1", ep}); got != conns["a1"] {
			t.Errorf("took %p, want a1's %p", got, conns["a1"])
			return
		}
		l.putIdle(conns["a1"])
	})
	checkIdleCount(t, s)
	for i, step := range []struct {
		slots  any
		closes string // "": none
	}{
		{"a", "a2"},
		{nil, "b1"},
		{"c", ""},
		{"b", "b2"},
		{"b", ""},
		{nil, "a3"},
		{"a", "a1"},
		{nil, ""},
	} {
		mu.Lock()
		before := maps.Clone(closed)
		mu.Unlock()
		var evicted bool
		on(t, l, func() { evicted = l.evictIdle(step.slots) })
		var got, want []string
		mu.Lock()
		for name := range closed {
			if !before[name] {
				got = append(got, name)
			}
		}
		mu.Unlock()
		if step.closes != "" {
			want = []string{step.closes}
		}
		if evicted != (step.closes != "") || !slices.Equal(got, want) {
			t.Errorf("step %d, evictIdle(%v): evicted %v, closed %v; want %v", i, step.slots, evicted, got, want)
		}
		checkIdleCount(t, s)
	}
}

// TestSetEvictIdleFromAGoroutine: a goroutine at the cap has a loop
// evict an idle connection of its slots, and has the slot back when
// EvictIdle returns.
func TestSetEvictIdleFromAGoroutine(t *testing.T) {
	s, ep := poolSet(t, 2)
	l := s.loops[1]
	var released atomic.Int64
	on(t, l, func() {
		conn, err := l.dialBackend(ep, poolKey{"k", ep}, &Target{Slots: "a"})
		if err != nil {
			t.Error(err)
			return
		}
		conn.release = func() { released.Add(1) }
		l.putIdle(conn)
	})
	if s.EvictIdle("b") || released.Load() != 0 {
		t.Fatalf("another listener's slots: evicted, %d released", released.Load())
	}
	if !s.EvictIdle("a") || released.Load() != 1 {
		t.Fatalf("its own slots: not evicted before EvictIdle returned (%d released)", released.Load())
	}
	if s.EvictIdle("a") || s.EvictIdle(nil) {
		t.Error("evicted again with nothing idle")
	}
	if st := s.Stats(); st.Backends != 0 || st.Idle != 0 {
		t.Errorf("after the eviction: %+v", st)
	}
}

// TestPoolKeepsListsOfOpenKeysOnly: a key's idle list stays in the pool
// while a connection of the key is open, idle or in use, and goes with
// the last one, so that a pool whose endpoints come and go does not
// grow; so does a Slots value's idle order. A retired key's connections close as they come back, and so do
// those dialled for it after.
func TestPoolKeepsListsOfOpenKeysOnly(t *testing.T) {
	s, ep := poolSet(t, 1)
	l := s.loops[0]
	// lists counts the idle lists, and fails t unless each has its
	// Slots value's order (the keys' Slots are their Pools).
	lists := func() int {
		t.Helper()
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		if len(s.pool.bySlots) != len(s.pool.lists) {
			t.Errorf("%d slots' idle orders for %d idle lists", len(s.pool.bySlots), len(s.pool.lists))
		}
		return len(s.pool.lists)
	}
	dial := func(key poolKey) *backend {
		var b *backend
		on(t, l, func() {
			var err error
			if b, err = l.dialBackend(ep, key, &Target{Slots: key.pool}); err != nil {
				t.Error(err)
			}
		})
		if b == nil {
			t.FailNow()
		}
		return b
	}
	k1, k2 := poolKey{"one", ep}, poolKey{"two", ep}
	a, b, c := dial(k1), dial(k1), dial(k2)
	on(t, l, func() { l.putIdle(a) })
	if n := lists(); n != 2 {
		t.Fatalf("%d idle lists with two keys open, want 2", n)
	}
	on(t, l, func() {
		if got := l.takeIdle(k1); got != a {
			t.Errorf("took %p, want the pooled %p", got, a)
		}
		l.closeOwn(a)
		l.closeOwn(c)
	})
	if n := lists(); n != 1 {
		t.Fatalf("%d idle lists with one key open, want 1", n)
	}
	on(t, l, func() { l.putIdle(b) })
	if st := s.Stats(); st.Backends != 1 || st.Idle != 1 {
		t.Fatalf("after pooling the last: %+v", st)
	}

	s.CloseIdle("one")
	waitFor(t, func() bool { return s.Stats().Backends == 0 })
	if n := lists(); n != 0 {
		t.Fatalf("%d idle lists with no connection open, want 0", n)
	}
	d := dial(k1)
	on(t, l, func() { l.putIdle(d) })
	if st := s.Stats(); st.Backends != 0 || st.Idle != 0 || lists() != 0 {
		t.Errorf("a retired key's new connection was pooled: %+v, %d lists", st, lists())
	}
	checkIdleCount(t, s)
}

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPoolSweepsIdleConnections: a connection idle for longer than its
// Target's PoolIdle is closed by its loop and counted out of the pool.
func TestPoolSweepsIdleConnections(t *testing.T) {
	s, ep := poolSet(t, 1)
	l := s.loops[0]
	on(t, l, func() {
		for _, idle := range []time.Duration{20 * time.Millisecond, time.Hour} {
			b, err := l.dialBackend(ep, poolKey{idle, ep}, &Target{PoolIdle: idle})
			if err != nil {
				t.Error(err)
				return
			}
			l.putIdle(b)
		}
	})
	if st := s.Stats(); st.Backends != 2 || st.Idle != 2 {
		t.Fatalf("after pooling two: %+v", st)
	}
	waitFor(t, func() bool { return s.Stats().Backends == 1 })
	if st := s.Stats(); st.Idle != 1 {
		t.Errorf("after the sweep: %+v, want the hour-long one idle", st)
	}
	checkIdleCount(t, s)
}

// BenchmarkEvictIdleOthersIdle measures what a listener at its own cap
// pays to find none of its connections idle while n connections of
// other listeners are: a client refused there costs this, and takes the
// pool's lock, which every request's take and put also take, for as long.
func BenchmarkEvictIdleOthersIdle(b *testing.B) {
	for _, n := range []int{10, 1000, 8000} {
		b.Run(fmt.Sprintf("idle=%d", n), func(b *testing.B) {
			var lim syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(2*n)+256 {
				b.Skipf("%d idle connections need %d descriptors; the limit is %d", n, 2*n, lim.Cur)
			}
			s, ep := poolSet(b, 1)
			l := s.loops[0]
			on(b, l, func() {
				for range n {
					conn, err := l.dialBackend(ep, poolKey{"others", ep}, &Target{Slots: "others", MaxIdle: n})
					if err != nil {
						b.Error(err)
						return
					}
					l.putIdle(conn)
				}
			})
			if st := s.Stats(); st.Idle != int64(n) {
				b.Fatalf("%d idle, want %d", st.Idle, n)
			}
			b.ReportAllocs()
			for b.Loop() {
				if s.EvictIdle("full") {
					b.Fatal("evicted another listener's connection")
				}
			}
		})
	}
}
