package relayloop

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pool is a Set's idle backend connections of exchanges, shared by its
// loops: a request on one loop reuses a connection another loop's
// request left, as one pool per route did on goroutines (haproxy's
// threads steal idle connections from each other for the same reason).
// A connection stays in its home loop's epoll set while idle; the loop
// that takes it from another moves it into its own (two epoll_ctl
// calls, only when the newest idle connection of the key is not its
// own).
type pool struct {
	mu sync.Mutex
	// lists holds the idle list of every key with a connection open. A
	// connection keeps its list (backend.list), so that pooling it costs
	// no lookup: a request's take and put hashed its key five times, an
	// interface and an address, 0.7 µs of an h2c request in a perf split.
	lists map[poolKey]*idleList
	// retired Target.Pool values' connections are closed as they come
	// back, and those dialled for them in the next minute too (CloseIdle).
	retired map[any]struct{}
	// idle counts the connections in lists: what Stats reports, and a
	// cap's quick answer when none is idle (oldestLocked).
	idle int
	// all orders every idle connection by the time it went idle, and
	// bySlots those of each Slots value with a connection open (made and
	// dropped as lists are): at a cap the evictor closes the first.
	all     idleOrder
	bySlots map[any]*slotsIdle

	held   atomic.Int64 // backend connections open, in use or idle
	nextID atomic.Uint64
}

// idleList is one key's idle connections; the pool's mu guards it.
type idleList struct {
	key   poolKey
	conns []*backend // the most recently used last
	// open counts the key's connections, idle or not: the list leaves
	// the pool's map with the last.
	open    int
	retired bool // its connections close as they come back
}

// opened gives b, just dialled for key and slots, its idle list and its
// slots' idle order, made if need be, and counts it open in both; p.mu
// is held.
func (p *pool) opened(b *backend, key poolKey, slots any) {
	lst := p.lists[key]
	if lst == nil {
		if p.lists == nil {
			p.lists = map[poolKey]*idleList{}
		}
		_, retired := p.retired[key.pool]
		lst = &idleList{key: key, retired: retired}
		p.lists[key] = lst
	}
	lst.open++
	si := p.bySlots[slots]
	if si == nil {
		if p.bySlots == nil {
			p.bySlots = map[any]*slotsIdle{}
		}
		si = &slotsIdle{idleOrder: idleOrder{links: bySlotsLinks}, slots: slots}
		p.bySlots[slots] = si
	}
	si.open++
	b.list, b.bySlots = lst, si
}

// closed counts b, out of the idle lists, one connection fewer open in
// its key's list and its slots' order, which leave the pool with their
// last; p.mu is held.
func (p *pool) closed(b *backend) {
	lst, si := b.list, b.bySlots
	b.list, b.bySlots = nil, nil
	lst.open--
	if lst.open == 0 && p.lists[lst.key] == lst {
		delete(p.lists, lst.key)
	}
	si.open--
	if si.open == 0 && p.bySlots[si.slots] == si {
		delete(p.bySlots, si.slots)
	}
}

// idleOrder lists idle connections in the order they went idle, through
// links in the connections themselves (backend.order), so that the one
// idle the longest is first. At a cap the evictor closes it at once: it
// walked every idle connection, under the lock every request's take and
// put take, for each client its listener's cap then refused, 3.4 ns an
// idle connection (31 µs at 8,000: BenchmarkEvictIdleOthersIdle).
type idleOrder struct {
	first, last *backend
	links       int // which of backend.order links this order
}

// The orders a pooled connection is in, by index of backend.order;
// pool.all's is 0, so that a pool's zero value is ready.
const (
	allLinks     = iota // pool.all
	bySlotsLinks        // its slots' (slotsIdle)
)

// orderLinks are a connection's neighbours in one idleOrder.
type orderLinks struct{ prev, next *backend }

// slotsIdle is the idle order of the connections dialled for one Slots
// value; open counts those connections, idle or not.
type slotsIdle struct {
	idleOrder
	slots any
	open  int
}

// push puts b, just idle, last.
func (o *idleOrder) push(b *backend) {
	ln := &b.order[o.links]
	ln.prev, ln.next = o.last, nil
	if o.last != nil {
		o.last.order[o.links].next = b
	} else {
		o.first = b
	}
	o.last = b
}

// unlink takes b out of the order; b must be in it.
func (o *idleOrder) unlink(b *backend) {
	ln := &b.order[o.links]
	if ln.prev != nil {
		ln.prev.order[o.links].next = ln.next
	} else {
		o.first = ln.next
	}
	if ln.next != nil {
		ln.next.order[o.links].prev = ln.prev
	} else {
		o.last = ln.prev
	}
	*ln = orderLinks{}
}

// enter counts b, just put in its key's list, idle in the pool's orders;
// leave, taken out of it, no longer. p.mu is held.
func (p *pool) enter(b *backend) {
	p.idle++
	p.all.push(b)
	b.bySlots.push(b)
}

func (p *pool) leave(b *backend) {
	p.idle--
	p.all.unlink(b)
	b.bySlots.unlink(b)
}

// takeIdle takes an idle connection of key: the one used last among
// l's own, else the one used last, moved to l from its home loop (two
// epoll_ctl calls, which taking l's own first keeps to the requests that
// need them: under wrk, taking the newest whatever its loop moved a
// third of them); nil when there is none.
func (l *loop) takeIdle(key poolKey) *backend {
	p := &l.set.pool
	for {
		p.mu.Lock()
		lst := p.lists[key]
		if lst == nil || len(lst.conns) == 0 {
			p.mu.Unlock()
			return nil
		}
		idle := lst.conns
		i := len(idle) - 1
		for j := i; j >= 0; j-- {
			if idle[j].home.Load() == l {
				i = j
				break
			}
		}
		b := idle[i]
		p.cut(lst, i)
		from := b.home.Load()
		b.home.Store(l)
		p.mu.Unlock()
		if from == l {
			return b
		}
		if l.adopt(b, from) {
			return b
		}
	}
}

// adopt moves b, just taken from the pool, from its home loop's epoll
// set into l's; false when that failed and b was closed.
func (l *loop) adopt(b *backend, from *loop) bool {
	_ = sysEpollCtl(from.epfd, unix.EPOLL_CTL_DEL, b.fd, nil)
	from.post(func() { from.forget2(b) })
	// Adding reports the socket's readiness at once, as a first event.
	b.r, b.w, b.end = false, false, false
	l.backends[b.id] = b
	if err := l.ctl(unix.EPOLL_CTL_ADD, b.fd, backendBit|b.id, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
		l.closeOwn(b)
		return false
	}
	return true
}

// forget2 drops b from l's table once another loop took it.
func (l *loop) forget2(b *backend) {
	if b.home.Load() != l && l.backends[b.id] == b {
		delete(l.backends, b.id)
	}
}

// cut takes the i-th connection out of lst; p.mu is held.
func (p *pool) cut(lst *idleList, i int) {
	idle := lst.conns
	p.leave(idle[i])
	copy(idle[i:], idle[i+1:])
	idle[len(idle)-1] = nil
	lst.conns = idle[:len(idle)-1]
}

// drain takes out of lst the connections keep says not to keep, in
// place, and returns out with them appended; p.mu is held.
func (p *pool) drain(lst *idleList, out []*backend, keep func(*backend) bool) []*backend {
	idle := lst.conns
	kept := idle[:0]
	for _, b := range idle {
		if keep(b) {
			kept = append(kept, b)
			continue
		}
		p.leave(b)
		out = append(out, b)
	}
	clear(idle[len(kept):])
	lst.conns = kept
	return out
}

// putIdle pools b, l's own, for the next request with its key, unless
// the key is retired or holds enough idle connections.
func (l *loop) putIdle(b *backend) {
	p := &l.set.pool
	b.owner.Store(nil)
	b.call.Store(nil)
	p.mu.Lock()
	lst := b.list
	if lst.retired || len(lst.conns) >= b.maxIdle {
		p.mu.Unlock()
		l.closeOwn(b)
		return
	}
	b.idleSince = l.clock
	lst.conns = append(lst.conns, b)
	p.enter(b)
	p.mu.Unlock()
	if !l.sweeping {
		l.sweeping = true
		l.after(l.clock+b.poolIdle, l.sweepPool)
	}
}

// sweepPool closes l's idle connections idle for longer than their
// PoolIdle, and comes back while l has any left.
func (l *loop) sweepPool() {
	p := &l.set.pool
	l.sweeping = false
	next := int64(-1)
	var expired []*backend
	p.mu.Lock()
	for _, lst := range p.lists {
		expired = p.drain(lst, expired, func(b *backend) bool {
			if b.home.Load() != l {
				return true
			}
			if l.clock-b.idleSince >= b.poolIdle {
				return false
			}
			if at := b.idleSince + b.poolIdle; next < 0 || at < next {
				next = at
			}
			return true
		})
	}
	p.mu.Unlock()
	for _, b := range expired {
		l.closeOwn(b)
	}
	if next >= 0 {
		l.sweeping = true
		l.after(next, l.sweepPool)
	}
}

// idleEvent handles an event of an idle connection of l's: a backend
// that speaks or closes unasked is not to be trusted with a request.
func (l *loop) idleEvent(b *backend, events uint32) {
	p := &l.set.pool
	p.mu.Lock()
	if b.home.Load() != l {
		p.mu.Unlock() // taken by another loop meanwhile
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		b.w = true
		p.mu.Unlock()
		return
	}
	found := p.remove(b)
	p.mu.Unlock()
	if found {
		l.closeOwn(b)
	}
}

// remove takes b out of its key's idle list; p.mu is held.
func (p *pool) remove(b *backend) bool {
	for i, o := range b.list.conns {
		if o == b {
			p.cut(b.list, i)
			return true
		}
	}
	return false
}

// evictIdle closes the connection idle the longest among those dialled
// for slots (Target.Slots; nil: any), whichever loop's and whatever its
// key: at the cap, it gives its slot to a request. false when none is
// idle.
func (l *loop) evictIdle(slots any) bool {
	p := &l.set.pool
	p.mu.Lock()
	oldest := p.oldestLocked(slots)
	if oldest == nil {
		p.mu.Unlock()
		return false
	}
	p.remove(oldest)
	from := oldest.home.Load()
	oldest.home.Store(l)
	p.mu.Unlock()
	if from != l {
		// Closing the socket takes it out of from's epoll set.
		from.post(func() { from.forget2(oldest) })
	}
	l.closeOwn(oldest)
	return true
}

// EvictIdle is evictIdle for a goroutine that needs a slot: one of the
// loops closes the connection idle the longest among those dialled for
// slots (Target.Slots; nil: any), and EvictIdle returns once the slot is
// given back. false when none is idle or the loops have stopped. A loop
// must not call it: it would wait for itself.
func (s *Set) EvictIdle(slots any) bool {
	if !s.pool.holdsIdle(slots) {
		return false // at the cap with nothing idle: no loop to bother
	}
	l := s.leastBusy()
	done := make(chan bool, 1)
	if !l.post(func() { done <- l.evictIdle(slots) }) {
		return false
	}
	return <-done
}

// holdsIdle reports whether an idle connection dialled for slots (nil:
// any) is pooled now.
func (p *pool) holdsIdle(slots any) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oldestLocked(slots) != nil
}

// oldestLocked is the connection idle the longest among those dialled for
// slots (nil: any), nil when none is idle. p.mu is held.
func (p *pool) oldestLocked(slots any) *backend {
	switch {
	case p.idle == 0:
		return nil
	case slots == nil:
		return p.all.first
	}
	if si := p.bySlots[slots]; si != nil {
		return si.first
	}
	return nil
}

// CloseIdle closes the idle backend connections of exchanges pooled
// under key (Target.Pool), and those that come back to it from the
// exchanges in flight for a minute: the key's pool is done with, as a
// replaced configuration's is.
func (s *Set) CloseIdle(key any) {
	p := &s.pool
	var closing []*backend
	p.mu.Lock()
	for k, lst := range p.lists {
		if k.pool == key {
			closing = p.drain(lst, closing, func(*backend) bool { return false })
			lst.retired = true
		}
	}
	if p.retired == nil {
		p.retired = map[any]struct{}{}
	}
	p.retired[key] = struct{}{}
	p.mu.Unlock()
	time.AfterFunc(time.Minute, func() {
		p.mu.Lock()
		delete(p.retired, key)
		p.mu.Unlock()
	})
	for _, b := range closing {
		home := b.home.Load()
		if !home.post(func() { home.closeOwn(b) }) {
			b.closeDetached() // its loop has stopped
		}
	}
}

// closePool closes l's idle connections (the loop stops).
func (l *loop) closePool() {
	p := &l.set.pool
	var mine []*backend
	p.mu.Lock()
	for _, lst := range p.lists {
		mine = p.drain(lst, mine, func(b *backend) bool { return b.home.Load() != l })
	}
	p.mu.Unlock()
	for _, b := range mine {
		l.closeOwn(b)
	}
}

// closeOwn closes b, one of l's out of the idle lists, and gives its
// slot back.
func (l *loop) closeOwn(b *backend) {
	if b == nil || b.fd < 0 {
		return
	}
	if l.backends[b.id] == b {
		delete(l.backends, b.id)
	}
	b.closeDetached()
}

// closeDetached closes b and gives its slot back, without a loop's table
// (closeOwn removes it from it).
func (b *backend) closeDetached() {
	if b.fd < 0 {
		return
	}
	p := &b.home.Load().set.pool
	p.held.Add(-1)
	if b.list != nil {
		p.mu.Lock()
		p.closed(b)
		p.mu.Unlock()
	}
	sysClose(b.fd)
	b.fd = -1
	b.owner.Store(nil)
	b.call.Store(nil)
	if b.release != nil {
		b.release()
		b.release = nil
	}
}
