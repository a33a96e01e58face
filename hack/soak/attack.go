package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// attack runs every attacker until its context ends and counts what they
// achieved.
type attack struct {
	wg     sync.WaitGroup
	counts sync.Map // kind → *attackCounts
	sizes  map[string]int
	next   atomic.Uint32
}

type attackCounts struct {
	connects, refused, closed atomic.Int64
	statuses                  sync.Map // status code → *atomic.Int64
}

// attackSummary is one kind of attacker's line in the report.
type attackSummary struct {
	Clients  int              `json:"clients"`
	Connects int64            `json:"connects"`
	Refused  int64            `json:"refused"` // could not connect or write at all
	Closed   int64            `json:"closed"`  // closed on them by portmux
	Statuses map[string]int64 `json:"statuses,omitempty"`
}

// addr hands out a source address of its own to each attacker, in
// 127.1.0.0/16.
func (a *attack) addr() *net.TCPAddr {
	n := a.next.Add(1)
	return &net.TCPAddr{IP: net.IPv4(127, 1, byte(n>>8), byte(n))}
}

func (a *attack) countsOf(kind string) *attackCounts {
	c, _ := a.counts.LoadOrStore(kind, &attackCounts{})
	return c.(*attackCounts)
}

func (c *attackCounts) status(code int) {
	v, _ := c.statuses.LoadOrStore(fmt.Sprint(code), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func startAttack(ctx context.Context, o options, target string) *attack {
	a := &attack{sizes: map[string]int{"slowloris": o.slowloris, "1MiB headers": o.bigHeaders, "keep-alive hogs": o.hogs,
		"one-byte regex probes": o.dribblers, "garbage": o.garbage}}
	hogAddr := &net.TCPAddr{IP: net.ParseIP("127.0.0.50")}
	spawn := func(kind string, n int, src func() *net.TCPAddr, f func(context.Context, net.Conn, *attackCounts) error) {
		counts := a.countsOf(kind)
		for i := range n {
			local := src()
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				// Spread the start over the first seconds, as clients
				// arriving would.
				select {
				case <-time.After(time.Duration(i%100) * 20 * time.Millisecond):
				case <-ctx.Done():
					return
				}
				a.loop(ctx, target, local, counts, i, f)
			}()
		}
	}
	spawn("slowloris", o.slowloris, a.addr, slowloris)
	spawn("1MiB headers", o.bigHeaders, a.addr, bigHeaders)
	spawn("keep-alive hogs", o.hogs, func() *net.TCPAddr { return hogAddr }, hog)
	spawn("one-byte regex probes", o.dribblers, a.addr, dribble)
	spawn("garbage", o.garbage, a.addr, garbage)
	return a
}

// loop connects from local and runs f, again and again, until ctx ends.
// Even-numbered attackers of a kind start with f's first variant, odd
// ones with the second (f reads which from the counts it is given).
func (a *attack) loop(ctx context.Context, target string, local *net.TCPAddr, counts *attackCounts, i int,
	f func(context.Context, net.Conn, *attackCounts) error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: local}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			counts.refused.Add(1)
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		counts.connects.Add(1)
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		if err := f(withVariant(ctx, i%2), c, counts); err != nil && ctx.Err() == nil {
			counts.closed.Add(1)
		}
		stop()
		_ = c.Close()
		sleep(ctx, 50*time.Millisecond)
	}
}

type variantKey struct{}

func withVariant(ctx context.Context, v int) context.Context {
	return context.WithValue(ctx, variantKey{}, v)
}

func variant(ctx context.Context) int { v, _ := ctx.Value(variantKey{}).(int); return v }

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

const firstRequest = "GET /echo?t=x HTTP/1.1\r\nHost: soak.test\r\n\r\n"

// bigRequest is a request with a 1 MiB header block, made once: the
// attackers share it, so that the load generator's own garbage collection
// does not slow the legitimate clients and backends in this process.
var bigRequest = []byte("GET / HTTP/1.1\r\nHost: soak.test\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n")

// request sends a complete request on c and reads its answer.
func request(c net.Conn, br *bufio.Reader, counts *attackCounts) error {
	if _, err := io.WriteString(c, firstRequest); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	counts.status(resp.StatusCode)
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// slowloris never finishes a header block: it sends a header byte every
// 2 s. Variant 1 does so after a complete first request, to reach http
// mode's server rather than the probe.
func slowloris(ctx context.Context, c net.Conn, counts *attackCounts) error {
	br := bufio.NewReader(c)
	if variant(ctx) == 1 {
		if err := request(c, br, counts); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: soak.test\r\n"); err != nil {
		return err
	}
	return trickle(ctx, c, "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 2*time.Second)
}

// bigHeaders sends a 1 MiB header block at once (variant 1: as its second
// request) and reads the answer.
func bigHeaders(ctx context.Context, c net.Conn, counts *attackCounts) error {
	br := bufio.NewReader(c)
	if variant(ctx) == 1 {
		if err := request(c, br, counts); err != nil {
			return err
		}
	}
	go func() { _, _ = c.Write(bigRequest) }()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	counts.status(resp.StatusCode)
	_ = resp.Body.Close()
	return fmt.Errorf("answered %d", resp.StatusCode)
}

// hog sends one request and then holds the connection without a word.
func hog(ctx context.Context, c net.Conn, counts *attackCounts) error {
	if err := request(c, bufio.NewReader(c), counts); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1)) // until portmux closes it
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// dribble sends text that keeps the regex route waiting, one byte per
// write.
func dribble(ctx context.Context, c net.Conn, _ *attackCounts) error {
	return trickle(ctx, c, "hello there, this never quite matches anything at all... ", 5*time.Millisecond)
}

// trickle writes text over and over, one byte every interval, until ctx
// ends or a write fails.
func trickle(ctx context.Context, c net.Conn, text string, every time.Duration) error {
	for i := 0; ctx.Err() == nil; i++ {
		if _, err := c.Write([]byte{text[i%len(text)]}); err != nil {
			return err
		}
		sleep(ctx, every)
	}
	return nil
}

// garbage sends random bytes until portmux closes the connection.
func garbage(ctx context.Context, c net.Conn, _ *attackCounts) error {
	buf := make([]byte, 4096)
	for ctx.Err() == nil {
		_, _ = rand.Read(buf)
		if _, err := c.Write(buf); err != nil {
			return err
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return nil
}

func (a *attack) wait() { a.wg.Wait() }

func (a *attack) summary() map[string]attackSummary {
	out := map[string]attackSummary{}
	a.counts.Range(func(k, v any) bool {
		c := v.(*attackCounts)
		s := attackSummary{Clients: a.sizes[k.(string)], Connects: c.connects.Load(), Refused: c.refused.Load(), Closed: c.closed.Load()}
		c.statuses.Range(func(code, n any) bool {
			if s.Statuses == nil {
				s.Statuses = map[string]int64{}
			}
			s.Statuses[code.(string)] = n.(*atomic.Int64).Load()
			return true
		})
		out[k.(string)] = s
		return true
	})
	return out
}
