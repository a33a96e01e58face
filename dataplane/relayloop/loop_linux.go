package relayloop

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/panics"
)

const (
	defaultKeepAliveAfter = 100 * time.Millisecond
	defaultDialTimeout    = 5 * time.Second

	// eventsPerWait is how many readiness events one epoll_wait returns at
	// most; more wait for the next round.
	eventsPerWait = 256
	// acceptsPerWake bounds the connections one wake-up of a listener
	// accepts, so that a flood on one listener does not starve the
	// connections the loop already carries (another loop, or this one
	// after the round's other events, takes the rest: see accept).
	acceptsPerWake = 64
	// pipeSize is what a pipe is asked to hold, and spliceChunk the
	// most one splice moves.
	pipeSize    = 1 << 20
	spliceChunk = pipeSize
	// copyChunk is the most one read into the copy buffer takes.
	copyChunk = 16 << 10
	// moveBudget is how many bytes one direction of a forwarded
	// connection moves before the loop turns to its other connections:
	// a source and a destination that both keep up (a bulk transfer
	// between fast local peers) would otherwise keep the loop in one
	// connection until a socket blocks, and every connection beside it
	// waits. muxload's lat-bulk (new SSH-routed connections beside four
	// bulk streams, 3 runs): with no budget 23-37 conn/s at p99 62-85
	// ms; 1 MiB 35 at 66 ms; 256 KiB 82-102 at 32-35 ms, haproxy's
	// 66-85 at 22-32 ms, for 0.80-0.93 s of CPU per GB forwarded
	// against 0.51-0.60 (haproxy's 2.0). 128 KiB, two runs of 3 beside
	// 256 KiB: 1.24x and 1.32x the connections at p99 0.79x and 0.88x
	// (27.2 and 31.9 ms, haproxy's 27.8 and 34.6), the same throughput
	// for 1.06x and 1.19x the CPU per GB (1.04 and 1.23 s, haproxy's
	// 2.46 and 2.44).
	moveBudget = 128 << 10
	// exchangeBudget is moveBudget for an HTTP/1.1 exchange, its bytes
	// both ways together. Its reads are copyChunk copies whatever the
	// budget, so a small one costs no larger system calls, only turns:
	// in bench-http's h1-bulk, 64 KiB kept the downloads' speed where
	// 16 KiB (haproxy's buffer) lost an eighth of it.
	exchangeBudget = 64 << 10
	// spliceAfter is how many bytes a direction carries through the
	// copy buffer before it splices: a request and its answer cost two
	// system calls either way, and a pipe only pays off for bulk.
	spliceAfter = 128 << 10
	// spliceBody is how much of a response body must be left for an
	// HTTP/1.1 exchange to splice it to a cleartext client rather than
	// copy it: a splice in and out moves a turn's budget in two system
	// calls where copies take a read and a write per copyChunk.
	spliceBody = 64 << 10
	// Free lists: pipes and buffers a loop keeps for the next
	// connections; beyond these they are closed or left to the GC. A
	// connection mid-exchange holds four head buffers (the request's
	// and the response's, as read and as sent), so 64 pooled buffers, the
	// first bound, served only 16 connections: with wrk's 64 over two
	// loops, one buffer in eight was allocated anew, 18 MB/s of garbage
	// at 34k requests/s. The bound is in bytes: 256 head buffers of 4
	// KiB, or 64 copy chunks, per loop.
	freePipes       = 64
	freeBufferBytes = 1 << 20
)

// Token layout in epoll_event.data: listeners have the top bit set and
// their index below; connections carry their id, the dial attempt (so
// that a stale event of a failed attempt's socket is told apart) and the
// side (0 client, 1 backend).
const (
	listenerBit = 1 << 63
	attemptBits = 7
)

func connToken(id uint64, attempt int, side uint64) uint64 {
	return id<<(attemptBits+1) | uint64(attempt&(1<<attemptBits-1))<<1 | side
}

// Set is a group of loops sharing listeners: each loop accepts from every
// listener (the kernel wakes one of them per new connection) and keeps the
// connections it accepted until they end.
type Set struct {
	opt   Options
	loops []*loop

	mu        sync.RWMutex // guards listeners, nextLn and closed
	listeners map[uint64]*Acceptor
	nextLn    uint64
	closed    bool

	// pool holds the exchanges' idle backend connections for every loop.
	pool pool
	// epoch is the zero of every loop's clock, so that their times
	// compare (the pool's idle ages).
	epoch time.Time
}

// New starts opt.Loops loops.
func New(opt Options) (*Set, error) {
	if opt.Loops <= 0 {
		opt.Loops = runtime.GOMAXPROCS(0)
	}
	if opt.KeepAliveAfter == 0 {
		opt.KeepAliveAfter = defaultKeepAliveAfter
	}
	s := &Set{opt: opt, listeners: map[uint64]*Acceptor{}, epoch: time.Now()}
	for range opt.Loops {
		l, err := newLoop(s)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.loops = append(s.loops, l)
		go l.run()
	}
	return s, nil
}

// Close ends every loop: the connections they still hold fail with
// ErrClosed (their Done is called) and no listener is accepted from any
// more. It returns once every loop has stopped.
func (s *Set) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	for _, l := range s.loops {
		l.post(func() { l.stopping = true })
	}
	for _, l := range s.loops {
		<-l.done
	}
	return nil
}

// Stats are what the loops hold now.
type Stats struct {
	// Conns counts the connections the loops carry: deciding,
	// connecting or forwarding.
	Conns int64
	// Pipes counts the pipes held by directions whose bytes wait for a
	// slow reader, each up to a megabyte of the kernel's memory, and by
	// HTTP/1.1 exchanges splicing a large response body.
	Pipes int64
	// Backends counts the backend connections of exchanges, in use or
	// idle in the loops' pool; Idle those idle.
	Backends, Idle int64
	// Calls counts the calls (CallRequest) in flight.
	Calls int64
}

// Stats sums what every loop holds; any goroutine may call it.
func (s *Set) Stats() Stats {
	var st Stats
	for _, l := range s.loops {
		st.Conns += l.conned.Load()
		st.Pipes += l.pipesHeld.Load()
		st.Calls += l.calls.Load()
	}
	st.Backends = s.pool.held.Load()
	s.pool.mu.Lock()
	st.Idle = int64(s.pool.idle)
	s.pool.mu.Unlock()
	return st
}

// Acceptor is one listener the loops accept from.
//
// Accept and Stop change the loops' epoll sets from the caller's
// goroutine (epoll_ctl is safe beside epoll_wait) rather than asking the
// loops: a caller may hold a lock a Handler waits for.
type Acceptor struct {
	s   *Set
	tok uint64
	fd  int
	h   Handler

	// mu is held for reading while a loop accepts, so that Stop returns
	// only once no loop can call accept4 on the socket again.
	mu      sync.RWMutex
	stopped bool
}

// Accept makes the loops accept ln's connections and pass them to h. Stop
// the Acceptor before closing ln.
func (s *Set) Accept(ln *net.TCPListener, h Handler) (*Acceptor, error) {
	raw, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener's socket: %w", err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, fmt.Errorf("listener's socket: %w", err)
	}
	// Accepted sockets inherit TCP_NODELAY, as Go's net sets it on each
	// of its connections: forwarded bytes are never held back by Nagle.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if s.opt.KeepAliveAfter >= 0 {
		// And Go's keepalive timings (keepAliveTimes), for the sockets
		// that turn keepalive on: inherited, they cost no system call a
		// connection. Keepalive itself is not: a kernel timer for every
		// short connection cost 5-9 % more CPU a connection in muxload's
		// lat-ssh and conn-tls.
		keepAliveTimes(fd)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.nextLn++
	a := &Acceptor{s: s, tok: listenerBit | s.nextLn, fd: fd, h: h}
	s.listeners[a.tok] = a
	for i, l := range s.loops {
		if err := l.watch(fd, a.tok); err != nil {
			for _, done := range s.loops[:i] {
				done.unwatch(fd)
			}
			delete(s.listeners, a.tok)
			return nil, fmt.Errorf("epoll_ctl listener: %w", err)
		}
	}
	return a, nil
}

// Stop makes the loops stop accepting from the listener; it returns once
// none will, so the listener can then be closed. The connections they
// accepted from it stay.
func (a *Acceptor) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	a.stopped = true
	for _, l := range a.s.loops {
		l.unwatch(a.fd)
	}
	a.s.mu.Lock()
	delete(a.s.listeners, a.tok)
	a.s.mu.Unlock()
}

// leastBusy is the loop that carries the fewest connections and calls:
// where a connection adopted, or the calls of a connection no loop
// serves, go.
func (s *Set) leastBusy() *loop {
	l := s.loops[0]
	for _, o := range s.loops[1:] {
		if o.conned.Load()+o.calls.Load() < l.conned.Load()+l.calls.Load() {
			l = o
		}
	}
	return l
}

// watch adds a listening socket to the loop's epoll set, unless the loop
// has stopped: exclusive and edge-triggered, so that a new connection
// wakes one loop, which accepts what is queued or hands it on (accept).
func (l *loop) watch(fd int, tok uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shutdown {
		return ErrClosed
	}
	return l.ctl(unix.EPOLL_CTL_ADD, fd, tok, unix.EPOLLIN|unix.EPOLLEXCLUSIVE|unix.EPOLLET)
}

// unwatch removes a listening socket from the loop's epoll set. Under l.mu
// the set is still open: stop closes it under l.mu too.
func (l *loop) unwatch(fd int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.shutdown {
		_ = sysEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// loop is one epoll set and the connections it carries. Everything but
// post, and the fields post guards, belongs to the loop's goroutine.
type loop struct {
	set  *Set
	epfd int
	// file is epfd for Go's poller, which the loop waits in (run).
	file *os.File
	raw  syscall.RawConn
	evfd int // eventfd: post wakes the loop
	// looks counts the loop's looks at its epoll set (run's wait): what
	// an idle loop's are is a test's to see.
	looks int

	mu       sync.Mutex
	cmds     []command
	shutdown bool // the loop has stopped: post runs nothing
	// asleep: the loop may be waiting for events, so that a post must
	// write the eventfd; woken: one did since.
	asleep, woken bool
	// spareCmds is the queue runCommands ran last, kept for the next
	// round's posts (the loop's alone between its swaps under mu).
	spareCmds []command
	done      chan struct{}

	stopping bool
	conns    map[uint64]*Conn
	// conned and pipesHeld count conns and the pipes connections hold,
	// for Stats from any goroutine.
	conned, pipesHeld atomic.Int64
	// calls counts the calls started on the loop and not ended;
	// inFlight holds those that began on it (the loop's alone), each at
	// its Call.slot: a map cost a hash insert and delete per request.
	calls    atomic.Int64
	inFlight []*Call
	// callSweepAt is when the calls' timeouts are looked at next (0:
	// never); sweepCallsFn is sweepCalls, made once.
	callSweepAt  int64
	sweepCallsFn func()
	// backoff is how long each listener the loop failed to accept from
	// was left alone last.
	backoff     map[*Acceptor]time.Duration
	nextID      uint64
	timers      timerHeap
	epoch       time.Time
	clock       int64 // nanoseconds since epoch at the last wake-up
	events      []unix.EpollEvent
	pipes       []pipePair
	buffers     [][]byte
	bufferBytes int    // the capacity of buffers, at most freeBufferBytes
	copyBuf     []byte // a direction's bytes between its read and write

	// backends are the backend connections of exchanges whose home is
	// this loop, by id, in use or idle in the Set's pool; sweeping: a
	// sweep of its idle ones is due.
	backends map[uint64]*backend
	sweeping bool

	// deferring is set while a round's events are handled: the queued
	// heads of exchanges wait in deferred until all are handled, and are
	// then written one after the other (flushDeferred).
	deferring bool
	deferred  []*Conn
}

func newLoop(s *Set) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &loop{
		set: s, epfd: epfd, evfd: evfd, done: make(chan struct{}),
		conns: map[uint64]*Conn{}, backends: map[uint64]*backend{}, backoff: map[*Acceptor]time.Duration{},
		epoch: s.epoch, events: make([]unix.EpollEvent, eventsPerWait), copyBuf: make([]byte, copyChunk),
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, evfd, 0, unix.EPOLLIN); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(evfd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(evfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	l.file = os.NewFile(uintptr(epfd), "relayloop epoll")
	raw, err := l.file.SyscallConn()
	if err != nil {
		_ = l.file.Close()
		_ = unix.Close(evfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	l.raw = raw
	return l, nil
}

// ctl adds, modifies or removes fd in the loop's epoll set under token tok.
func (l *loop) ctl(op, fd int, tok uint64, events uint32) error {
	ev := unix.EpollEvent{Events: events}
	putToken(&ev, tok)
	return sysEpollCtl(l.epfd, op, fd, &ev)
}

// putToken and token store a 64-bit token in epoll_event's data, which
// x/sys/unix spells as two 32-bit fields.
func putToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd = int32(uint32(tok))
	ev.Pad = int32(uint32(tok >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// post runs f on the loop's goroutine, soon, and reports whether it will:
// nothing runs once the loop has stopped.
func (l *loop) post(f func()) bool { return postAll(l, []funcCommand{f}) }

// postAll is post for several commands, queued in one go.
func postAll[C command](l *loop, cmds []C) bool {
	l.mu.Lock()
	if l.shutdown {
		l.mu.Unlock()
		return false
	}
	// Only a loop that may be waiting is woken, and once: a busy loop
	// takes the whole queue at the end of its round (runCommands) and
	// looks at it again before it waits (run). A loop that posts to
	// itself, or whose connections' goroutines post while it works,
	// writes no eventfd and reads none.
	wake := l.asleep && !l.woken
	l.woken = l.woken || wake
	for _, c := range cmds {
		l.cmds = append(l.cmds, c)
	}
	l.mu.Unlock()
	if wake {
		one := [8]byte{1}
		_, _ = unix.Write(l.evfd, one[:])
	}
	return true
}

func (l *loop) now() int64 { return int64(time.Since(l.epoch)) }

// at converts a wall deadline to the loop's clock.
func (l *loop) at(t time.Time) int64 { return int64(t.Sub(l.epoch)) }

// run waits for events and timers and handles them until the loop stops.
//
// It waits in Go's own poller, which watches the loop's epoll set as a
// file (an epoll descriptor is readable while it has events), rather
// than in a blocking epoll_wait: a goroutine blocked in a system call
// keeps the runtime's monitor waking every 20 µs to take its processor
// back, about four wake-ups per connection at this load.
//
// Before it parks, a loop that found no events yields its core once and
// looks again. The peer it is waiting for (the client, the backend) is
// often queued on that very core, woken by the loop's own write: parked,
// the loop would be woken in turn a few microseconds later, on whichever
// thread polled, and the kernel, seeing two threads of the process and
// the peer take turns, kept them on one core while the other stood idle
// (perf sched, h2c: a stall of 1 ms or more, no response at all, 20 times
// a second, a core idle for a fifth of it). Yielding first, the loop
// finds the answer without parking: h2c's p99 fell from 4.00 to 2.74 ms
// (haproxy 2.81) and a TLS-SNI connection's CPU from 313 to 216 µs.
func (l *loop) run() {
	defer l.stop()
	var (
		deadline = int64(-1)
		n        int
		waitErr  error
		polls    int   // calls of wait in this round: more than one parked
		parked   int64 // the loop's clock when it last parked or yielded
	)
	wait := func(fd uintptr) bool {
		polls++
		l.looks++
		n, waitErr = sysEpollPoll(int(fd), l.events)
		if n == 0 && waitErr == nil && polls == 1 {
			sysYield() // see above; once a round, so that an idle loop parks
			l.looks++
			n, waitErr = sysEpollPoll(int(fd), l.events)
		}
		return n > 0 || (waitErr != nil && !errors.Is(waitErr, unix.EINTR))
	}
	for {
		next := int64(-1)
		if len(l.timers) > 0 {
			next = l.timers[0].at
		}
		if next != deadline {
			deadline = next
			t := time.Time{}
			if next >= 0 {
				t = l.epoch.Add(time.Duration(next))
			}
			_ = l.file.SetReadDeadline(t)
		}
		n, waitErr, polls = 0, nil, 0
		l.mu.Lock()
		queued := len(l.cmds) > 0
		l.asleep = !queued
		l.mu.Unlock()
		if queued {
			// Commands came after runCommands: the events ready now, no wait.
			n, waitErr = sysEpollPoll(l.epfd, l.events)
			polls = 1
		} else if err := l.raw.Read(wait); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			waitErr = err
		}
		l.mu.Lock()
		l.asleep, l.woken = false, false
		l.mu.Unlock()
		if waitErr != nil && !errors.Is(waitErr, unix.EINTR) {
			// Only a bug (a bad epfd) gets here: fail loudly in every
			// connection rather than spin.
			panic(fmt.Sprintf("relayloop: epoll_wait: %v", waitErr))
		}
		l.clock = l.now()
		if polls != 1 {
			parked = l.clock
		}
		l.deferring = true
		for i := range n {
			l.dispatch(&l.events[i])
		}
		l.deferring = false
		l.flushDeferred()
		l.fireTimers()
		l.runCommands()
		if l.stopping {
			return
		}
		// A loop that always finds events never parks, and the runtime's
		// monitor, seeing one goroutine run for 10 ms, preempts it and
		// then polls every 20 µs: yield between rounds instead, once it
		// has run for a millisecond without parking (a yield where
		// another processor is idle wakes a thread for nothing).
		if l.clock-parked > int64(time.Millisecond) {
			parked = l.clock
			runtime.Gosched()
		}
	}
}

// stop fails every connection the loop still holds and releases its
// descriptors.
func (l *loop) stop() {
	l.mu.Lock()
	l.shutdown = true
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	// Commands posted before shutdown still run (an Abort, a listener's
	// removal whose caller waits).
	for _, f := range cmds {
		f.run()
	}
	for _, c := range l.conns {
		l.guard(c, func() { c.fail(ErrClosed) })
	}
	for _, k := range slices.Clone(l.inFlight) {
		l.guardCall(k, func() { k.end(ErrClosed) })
	}
	l.closePool()
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = nil
	l.mu.Lock()
	_ = l.file.Close() // the epoll set
	_ = unix.Close(l.evfd)
	l.mu.Unlock()
	close(l.done)
}

// command is what post queues for the loop: a function, or a call to
// start, which needs no closure made (Caller.Start).
type command interface{ run() }

// funcCommand is a posted function.
type funcCommand func()

func (f funcCommand) run() { f() }

// runCommands runs the commands posted since the last round. The queue
// it takes is kept for the round after (two slices in turn), so that a
// busy loop's posts do not grow a new one every round.
func (l *loop) runCommands() {
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = l.spareCmds
	l.mu.Unlock()
	for i, f := range cmds {
		f.run()
		cmds[i] = nil
	}
	l.spareCmds = cmds[:0]
}

// dispatch handles one readiness event.
func (l *loop) dispatch(ev *unix.EpollEvent) {
	tok := token(ev)
	switch {
	case tok == 0:
		var b [8]byte
		_, _ = unix.Read(l.evfd, b[:])
	case tok&listenerBit != 0:
		l.set.mu.RLock()
		a := l.set.listeners[tok]
		l.set.mu.RUnlock()
		if a != nil {
			l.accept(a, 0)
		}
	case tok&backendBit != 0:
		// Another loop may take an idle backend from the pool at any
		// moment: it stores home, then owner. So home is read on both
		// sides of owner, and an owner is trusted only if home was this
		// loop after it was read (then it is a Conn of this loop's).
		b := l.backends[tok&^backendBit]
		if b == nil || b.home.Load() != l {
			return // closed, or taken by another loop (a stale event)
		}
		c, k := b.owner.Load(), b.call.Load()
		if b.home.Load() != l {
			return
		}
		if c == nil && k == nil {
			l.idleEvent(b, ev.Events)
			return
		}
		b.r = b.r || ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0
		b.w = b.w || ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0
		b.end = b.end || ev.Events&(unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0
		if k != nil {
			l.guardCall(k, func() { k.backendReady(b, ev.Events) })
			return
		}
		l.guard(c, func() { c.backendReady(b, ev.Events) })
	default:
		c := l.conns[tok>>(attemptBits+1)]
		if c == nil {
			return // ended earlier in this round
		}
		l.guard(c, func() { c.ready(tok, ev.Events) })
	}
}

// deferWrite has c's queued bytes written at the end of the round
// (flushDeferred), and reports whether they wait: written while the
// round's other events are still to be handled, each head would wake its
// peer by itself. Requests sent one after the other reach a backend that
// is still awake from the first; interleaved with the reading and parsing
// of the next requests, they found nginx asleep again more often
// (`make bench-http`, HTTP/1.1: 0.229 of nginx's context switches per
// request, 0.188 deferred; haproxy, which writes at the end of its own
// rounds, 0.195).
func (l *loop) deferWrite(c *Conn) bool {
	if !l.deferring {
		return false
	}
	if !c.flushPending {
		c.flushPending = true
		l.deferred = append(l.deferred, c)
	}
	return true
}

// flushDeferred writes what deferWrite held back, in the order it was
// held.
func (l *loop) flushDeferred() {
	for i, c := range l.deferred {
		l.deferred[i] = nil
		c.flushPending = false
		switch c.state {
		case stateExchange:
			l.guard(c, c.exchange)
		case stateServe:
			l.guard(c, c.serveOut)
		}
	}
	l.deferred = l.deferred[:0]
}

// guard runs f for c, turning a panic into c's failure.
func (l *loop) guard(c *Conn, f func()) {
	defer l.recoverFor(c)
	f()
}

// recoverFor is deferred by guard: a panic in a Handler, a Session or the
// loop's own code ends the connection it happened on, not the loop.
func (l *loop) recoverFor(c *Conn) {
	v := recover()
	if v == nil {
		return
	}
	p := &panics.Error{Value: v, Stack: debug.Stack()}
	if c.s != nil && !c.doneCalled && c.state != stateClosed {
		c.fail(p) // Done reports it
		return
	}
	// From Accepted, Done or HandOff: nobody else will hear of it.
	if l.set.opt.OnPanic != nil {
		l.set.opt.OnPanic(p)
	}
	if c.state != stateClosed {
		c.state = stateClosed
		c.release()
	}
}

// accept takes the connections waiting on a listener, then starts them:
// the Handler runs after the Acceptor's lock is released, so Stop never
// waits for one.
func (l *loop) accept(a *Acceptor, hops int) {
	if _, off := l.backoff[a]; off && hops > 0 {
		return // out of descriptors: the listener comes back when it ends
	}
	// A loop takes at most what brings it to its share of the
	// connections and hands the rest on to the loop holding the fewest:
	// eight kept-alive HTTP/2 clients, accepted in a burst, landed all
	// on one loop without this, which then served every request on one
	// core. A loop asked by as many loops as there are takes one at
	// least, so the queue always drains.
	limit := l.acceptLimit()
	if limit <= 0 {
		if hops < len(l.set.loops) && l.handOn(a, hops+1) {
			return
		}
		limit = 1
	}
	var (
		fds     [acceptsPerWake]int
		addrs   [acceptsPerWake]netip.AddrPort
		n       int
		drained bool
	)
	a.mu.RLock()
	var failed error
	for !a.stopped && n < limit {
		fd, peer, err := accept4(a.fd)
		if err != nil {
			// EAGAIN: another loop took it, or none is left. A client
			// gone while queued is no reason to stop.
			if errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
				continue
			}
			if !errors.Is(err, unix.EAGAIN) {
				failed = err
			}
			drained = true
			break
		}
		fds[n], addrs[n] = fd, peer
		n++
		l.conned.Add(1) // counted at once: other loops weigh it
	}
	stopped := a.stopped
	a.mu.RUnlock()
	switch {
	case failed != nil && !stopped:
		l.backOff(a, failed)
	case n > 0:
		delete(l.backoff, a)
	}
	for i := range n {
		l.nextID++
		c := &Conn{l: l, id: l.nextID, fd: fds[i], bfd: -1, peer: addrs[i]}
		l.conns[c.id] = c
		l.guard(c, func() { c.start(a.h) })
	}
	// The listener is edge-triggered: what is still queued is accepted
	// by another loop, or by this one after the round's other events.
	if !drained && !stopped && !l.handOn(a, 1) {
		l.post(func() { l.accept(a, 1) })
	}
}

// acceptLimit is how many connections l accepts now: until it holds an
// eighth (and one) more than the loop holding the fewest, at most
// acceptsPerWake; zero or less when l holds that many already. Measured
// against the average instead, a burst of eight clients landed five on
// one loop and three on the other, and that loop's requests waited
// 1.7 times as long (p99 3.6 ms beside 2.2 for haproxy, h2c).
func (l *loop) acceptLimit() int {
	loops := l.set.loops
	if len(loops) < 2 {
		return acceptsPerWake
	}
	least := int64(math.MaxInt64)
	for _, o := range loops {
		if o != l {
			least = min(least, o.conned.Load())
		}
	}
	return int(min(least+least/8+1-l.conned.Load(), acceptsPerWake))
}

// handOn asks the loop holding the fewest connections, if it holds
// fewer than l, to accept from a, the hops-th loop asked; it reports
// whether one was.
func (l *loop) handOn(a *Acceptor, hops int) bool {
	var to *loop
	least := l.conned.Load()
	for _, o := range l.set.loops {
		if n := o.conned.Load(); o != l && n < least {
			to, least = o, n
		}
	}
	return to != nil && to.post(func() { to.accept(a, hops) })
}

// backOff takes a listener the loop cannot accept from (out of
// descriptors) out of its epoll set for a while: every new connection
// would wake the loop to fail again. Added back, a listener with
// connections queued is reported at once.
func (l *loop) backOff(a *Acceptor, err error) {
	wait := min(max(2*l.backoff[a], 5*time.Millisecond), time.Second)
	l.backoff[a] = wait
	l.set.opt.Log.Error(err, "accept failed; retrying", "backoff", wait)
	l.unwatch(a.fd)
	l.after(l.now()+int64(wait), func() {
		a.mu.RLock()
		defer a.mu.RUnlock()
		if a.stopped {
			delete(l.backoff, a)
			return
		}
		_ = l.watch(a.fd, a.tok)
	})
}

// moveBudget is how many bytes a connection moves in one turn:
// Options' for the package's tests, else the constant.
func (l *loop) moveBudget() int { return cmp.Or(l.set.opt.moveBudget, moveBudget) }

// exchangeBudget is moveBudget for an HTTP/1.1 exchange.
func (l *loop) exchangeBudget() int { return cmp.Or(l.set.opt.moveBudget, exchangeBudget) }

// forget drops an ended or handed-off connection, and its timer.
func (l *loop) forget(c *Conn) {
	l.disarm(c)
	if _, ok := l.conns[c.id]; ok {
		delete(l.conns, c.id)
		l.conned.Add(-1)
	}
}

func (l *loop) getPipe() (pipePair, error) {
	l.pipesHeld.Add(1)
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		l.pipesHeld.Add(-1)
		return pipePair{}, fmt.Errorf("pipe2: %w", err)
	}
	// As Go's own splice does: a bulk transfer moves up to a megabyte a
	// call rather than 64 KiB. Where the system refuses (a user's pipe
	// budget spent), the pipe keeps its default size.
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	return pipePair{r: fds[0], w: fds[1]}, nil
}

// dropPipe lets go of p, which holds inPipe bytes: an empty pipe is
// kept (putPipe), one with bytes nobody will read is closed.
func (l *loop) dropPipe(p pipePair, inPipe int) {
	if inPipe > 0 {
		p.close()
		l.pipesHeld.Add(-1)
		return
	}
	l.putPipe(p)
}

// putPipe keeps an empty pipe for the next direction that needs one.
func (l *loop) putPipe(p pipePair) {
	l.pipesHeld.Add(-1)
	if len(l.pipes) < freePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	p.close()
}

func (l *loop) getBuffer(size int) []byte {
	for i := len(l.buffers) - 1; i >= 0; i-- {
		if b := l.buffers[i]; cap(b) >= size {
			l.buffers[i] = l.buffers[len(l.buffers)-1]
			l.buffers[len(l.buffers)-1] = nil
			l.buffers = l.buffers[:len(l.buffers)-1]
			l.bufferBytes -= cap(b)
			return b[:size]
		}
	}
	return make([]byte, size)
}

func (l *loop) putBuffer(b []byte) {
	if b != nil && l.bufferBytes+cap(b) <= freeBufferBytes {
		l.buffers = append(l.buffers, b[:0])
		l.bufferBytes += cap(b)
	}
}

type pipePair struct{ r, w int }

func (p pipePair) close() {
	sysClose(p.r)
	sysClose(p.w)
}

// timer is a connection's timer or one of the loop's own tasks.
type timer struct {
	at int64
	c  *Conn
	fn func() // a timer of the loop's own, without a connection
}

// timerHeap is a binary min-heap by at, typed so that a push allocates
// nothing (container/heap boxes every element in an interface). A
// connection has one timer at most, and knows where it sits
// (Conn.timerPos): re-arming moves it in place and an ended connection
// takes it out, so that the heap holds only what is still to come and
// nothing of a connection that ended.
type timerHeap []timer

// swap exchanges two timers, keeping their connections' positions.
func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	if c := h[i].c; c != nil {
		c.timerPos = i + 1
	}
	if c := h[j].c; c != nil {
		c.timerPos = j + 1
	}
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			return
		}
		h.swap(p, i)
		i = p
	}
}

// down sinks the timer at i, and reports whether it moved.
func (h timerHeap) down(i int) bool {
	start := i
	for {
		small, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].at < h[small].at {
			small = l
		}
		if r < len(h) && h[r].at < h[small].at {
			small = r
		}
		if small == i {
			return i != start
		}
		h.swap(i, small)
		i = small
	}
}

// fix restores the order after the timer at i changed its time.
func (h timerHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *timerHeap) push(t timer) {
	*h = append(*h, t)
	i := len(*h) - 1
	if t.c != nil {
		t.c.timerPos = i + 1
	}
	h.up(i)
}

// remove takes out the timer at i.
func (h *timerHeap) remove(i int) timer {
	q := *h
	last := len(q) - 1
	if i != last {
		q.swap(i, last)
	}
	t := q[last]
	q[last] = timer{} // no pointer kept to an ended connection
	q = q[:last]
	if i < last {
		q.fix(i)
	}
	if t.c != nil {
		t.c.timerPos = 0
	}
	*h = q
	return t
}

func (h *timerHeap) pop() timer { return h.remove(0) }

// after runs fn on the loop at its clock's time at.
func (l *loop) after(at int64, fn func()) {
	l.timers.push(timer{at: at, fn: fn})
}

// arm sets c's one timer to at, replacing the one it had.
func (l *loop) arm(c *Conn, at int64) {
	if c.timerPos > 0 {
		i := c.timerPos - 1
		l.timers[i].at = at
		l.timers.fix(i)
		return
	}
	l.timers.push(timer{at: at, c: c})
}

// disarm drops c's timer, if it has one.
func (l *loop) disarm(c *Conn) {
	if c.timerPos > 0 {
		l.timers.remove(c.timerPos - 1)
	}
}

// fireTimers runs the timers due. The clock moves to now first: a timer
// that fell due while the wake-up's events were handled must see itself
// due, or a connection's timer, which re-arms itself for its deadline
// when the clock is short of it, would be popped and re-armed forever.
func (l *loop) fireTimers() {
	l.clock = l.now()
	for len(l.timers) > 0 && l.timers[0].at <= l.clock {
		t := l.timers.pop()
		if t.c == nil {
			t.fn()
			continue
		}
		if t.c.state != stateClosed {
			l.guard(t.c, t.c.expired)
		}
	}
}

// accept4 is unix.Accept4 without the getsockopt(SO_PROTOCOL) its
// address conversion makes for every connection, and as a raw system
// call: the socket is non-blocking, so the call never waits.
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unix.SizeofSockaddrAny)
	fd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, netip.AddrPort{}, errno
	}
	var peer netip.AddrPort
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		peer = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		peer = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), ntohs(a.Port))
	}
	return int(fd), peer, nil
}

// ntohs reads a port as the kernel stores it, in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		// An IPv4 client of a dual-stack socket is logged and limited as
		// the IPv4 address it is, as Go's net shows it.
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
