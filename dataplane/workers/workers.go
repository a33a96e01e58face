// Package workers runs short tasks on goroutines that outlive them.
//
// Why: a new goroutine starts on a small stack and grows it, by copying
// it, the first time its task calls deep enough; an HTTP/2 stream's
// handler did so on every stream (runtime.newstack and copystack: 5 % of
// http mode's CPU under h2load). A worker that ran one task keeps its
// grown stack, and is already running, for the next. Idle workers are
// bounded in number and end once idle for the pool's timeout, and Close
// ends them all: the pool holds nothing once traffic stops.
package workers

import (
	"sync"
	"time"
)

// Pool hands tasks to idle workers, or to new goroutines when none is
// idle. Its zero value is not usable: New.
type Pool struct {
	maxIdle     int
	idleTimeout time.Duration

	mu       sync.Mutex
	idle     []*worker // the longest idle first
	sweeping bool
	closed   bool
}

// worker is one goroutine of the pool; work takes its next task, or nil
// to end it.
type worker struct {
	work      chan func()
	idleSince time.Time
}

// New returns a pool that keeps at most maxIdle idle workers, each for at
// most idleTimeout.
func New(maxIdle int, idleTimeout time.Duration) *Pool {
	return &Pool{maxIdle: maxIdle, idleTimeout: idleTimeout}
}

// Go runs f on an idle worker, or on a new goroutine. It never waits for
// a worker: there is no bound on the tasks running at once, which is the
// caller's to keep (an HTTP/2 connection's stream limit).
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1] // the most recently idle: its stack is warmest
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.work <- f
		return
	}
	p.mu.Unlock()
	go p.run(&worker{work: make(chan func(), 1)}, f)
}

// Idle is the number of idle workers.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Close ends the idle workers, and every busy one once its task returns.
// Go still runs tasks after Close, each on a goroutine of its own.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, w := range idle {
		w.work <- nil
	}
}

func (p *Pool) run(w *worker, f func()) {
	for f != nil {
		f()
		if !p.park(w) {
			return
		}
		f = <-w.work
	}
}

// park makes w idle, unless the pool is closed or has maxIdle idle
// workers already: then w ends.
func (p *Pool) park(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.maxIdle {
		return false
	}
	w.idleSince = time.Now()
	p.idle = append(p.idle, w)
	if !p.sweeping {
		p.sweeping = true
		time.AfterFunc(p.idleTimeout, p.sweep)
	}
	return true
}

// sweep ends the workers idle for idleTimeout, and comes back while any
// are left.
func (p *Pool) sweep() {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && time.Since(p.idle[n].idleSince) >= p.idleTimeout {
		p.idle[n].work <- nil // buffered, and empty while the worker is idle
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	p.sweeping = len(p.idle) > 0
	if p.sweeping {
		time.AfterFunc(p.idleTimeout/4, p.sweep)
	}
	p.mu.Unlock()
}
