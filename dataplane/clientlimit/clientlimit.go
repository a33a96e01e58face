// Package clientlimit bounds what one client may hold of a listener: how
// many connections it has open at once and how fast it opens new ones.
//
// A listener's maxConnections protects the process; these limits protect
// the other clients from one host that opens connections until the
// listener is full (slot hogging) or makes the dataplane do handshakes and
// dials without end. A client is its address: an IPv4 address, or the /64
// an IPv6 address belongs to (one subscriber usually holds a whole /64, so
// counting single IPv6 addresses would limit nothing). IPv4-mapped IPv6
// addresses count as IPv4.
//
// It decides and counts; it does not read the clock (the caller passes the
// time), nor close anything.
package clientlimit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limits are one listener's per-client caps. A zero field does not limit.
type Limits struct {
	// MaxConnections caps a client's open connections.
	MaxConnections int
	// Rate caps a client's new connections per second, with bursts of
	// twice that.
	Rate int
	// MaxRequests caps the requests a client has in flight over
	// multiplexed connections (HTTP/2 streams), each of which may hold a
	// backend connection: without it, a client within MaxConnections
	// could still hold a hundred backend connections through each.
	MaxRequests int
}

// Refusal says which limit refused a connection; "" admits it.
type Refusal string

// The refusals.
const (
	Admitted    Refusal = ""
	Connections Refusal = "connections" // MaxConnections open already
	TooFast     Refusal = "rate"        // new connections over Rate
)

// Table counts the clients of one listener. It is safe for concurrent use.
// Its memory is bounded by the clients that have a connection open or
// opened one recently: a client with nothing open is forgotten once its
// rate budget has refilled, at the next sweep (when the table has doubled,
// or a minute after the last).
type Table struct {
	mu      sync.Mutex
	clients map[netip.Prefix]*client
	// size is len(clients), readable without the lock.
	size atomic.Int64
	// sweepAt is the table size that triggers the next sweep of
	// forgotten clients, so that sweeping costs O(1) per admission.
	sweepAt int
	// swept is when the last sweep ran: a table past minSweep is swept
	// at least every sweepEvery too, so that the clients of an attack
	// that has ended are not kept until the table grows again.
	swept time.Time
}

type client struct {
	open     int
	requests int           // in flight, held with Hold
	limiter  *rate.Limiter // nil without a rate limit
}

// idle: the client has nothing open or in flight.
func (c *client) idle() bool { return c.open == 0 && c.requests == 0 }

// minSweep is the table size below which forgotten clients are kept.
const minSweep = 1024

// sweepEvery is how often a table past minSweep is swept whatever its
// growth: a minute of admissions pays for one pass over it.
const sweepEvery = time.Minute

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{clients: map[netip.Prefix]*client{}, sweepAt: minSweep}
}

// Key is the client an address belongs to.
func Key(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// Admit counts a new connection of the client at addr at time now, or
// refuses it. An admitted connection must be released with Release(key)
// once it ends; a refused one must not.
func (t *Table) Admit(addr netip.Addr, now time.Time, l Limits) (netip.Prefix, Refusal) {
	key := Key(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.clients); n >= t.sweepAt || (n > minSweep && now.Sub(t.swept) >= sweepEvery) {
		t.sweep(now)
	}
	c := t.entryLocked(key)
	if l.MaxConnections > 0 && c.open >= l.MaxConnections {
		return key, Connections
	}
	if l.Rate > 0 {
		if c.limiter == nil || c.limiter.Limit() != rate.Limit(l.Rate) {
			// New, or the listener's limit changed: start full.
			c.limiter = rate.NewLimiter(rate.Limit(l.Rate), 2*l.Rate)
		}
		if !c.limiter.AllowN(now, 1) {
			return key, TooFast
		}
	} else {
		c.limiter = nil
	}
	c.open++
	return key, Admitted
}

// Release ends a connection that Admit admitted.
func (t *Table) Release(key netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.clients[key]; c != nil && c.open > 0 {
		c.open--
		t.forgetLocked(key, c)
	}
}

// Hold counts a request of the client key in flight, or refuses it when
// the client has l.MaxRequests in flight already. The client's
// connection is open (Admit counted it), so its entry is normally there
// already. A held request must be given back with Unhold once it ends.
func (t *Table) Hold(key netip.Prefix, l Limits) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.entryLocked(key)
	if l.MaxRequests > 0 && c.requests >= l.MaxRequests {
		return false
	}
	c.requests++
	return true
}

// Unhold ends a request that Hold counted.
func (t *Table) Unhold(key netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.clients[key]; c != nil && c.requests > 0 {
		c.requests--
		t.forgetLocked(key, c)
	}
}

// entryLocked is key's entry, made if the table has none. t.mu is held.
func (t *Table) entryLocked(key netip.Prefix) *client {
	c := t.clients[key]
	if c == nil {
		c = &client{}
		t.clients[key] = c
		t.size.Store(int64(len(t.clients)))
	}
	return c
}

// forgetLocked drops c, key's entry, once it holds nothing and has no
// rate budget to remember. t.mu is held.
func (t *Table) forgetLocked(key netip.Prefix, c *client) {
	if c.idle() && c.limiter == nil {
		delete(t.clients, key)
		t.size.Store(int64(len(t.clients)))
	}
}

// Len is how many clients the table holds now, for a gauge. It does not
// wait for the table's lock.
func (t *Table) Len() int { return int(t.size.Load()) }

// sweep forgets the clients with nothing open whose rate budget has
// refilled: for them a new entry would decide the same. t.mu is held.
func (t *Table) sweep(now time.Time) {
	for k, c := range t.clients {
		if c.idle() && (c.limiter == nil || c.limiter.TokensAt(now) >= float64(c.limiter.Burst())) {
			delete(t.clients, k)
		}
	}
	t.sweepAt = max(minSweep, 2*len(t.clients))
	t.swept = now
	t.size.Store(int64(len(t.clients)))
}
