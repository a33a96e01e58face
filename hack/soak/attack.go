package main

import (
	"bufio"
	"bytes"
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

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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

func (c *attackCounts) status(code int) { c.mark(fmt.Sprint(code)) }

// mark counts one answer of kind: an HTTP status, or an HTTP/2 reset's or
// GOAWAY's code.
func (c *attackCounts) mark(kind string) {
	v, _ := c.statuses.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func startAttack(ctx context.Context, o options, target string) *attack {
	a := &attack{sizes: map[string]int{"slowloris": o.slowloris, "1MiB headers": o.bigHeaders, "keep-alive hogs": o.hogs,
		"one-byte regex probes": o.dribblers, "garbage": o.garbage, "HTTP/2 floods": o.h2Floods,
		"HTTP/2 stream hogs": o.h2Hogs}}
	hogAddr := &net.TCPAddr{IP: net.ParseIP("127.0.0.50")}
	h2HogAddr := &net.TCPAddr{IP: net.ParseIP("127.0.0.51")}
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
	spawn("HTTP/2 floods", o.h2Floods, a.addr, h2Flood)
	spawn("HTTP/2 stream hogs", o.h2Hogs, func() *net.TCPAddr { return h2HogAddr }, h2StallAlways)
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

// h2Block is the header block of every stream h2Flood opens: a GET of
// the echo route. Its literals are indexed each time it is sent, which
// is valid HPACK however often it is repeated.
var h2Block = func() []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "soak.test"}, {":path", "/echo?t=h2"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return b.Bytes()
}()

// h2Flood speaks HTTP/2 with prior knowledge, as two known attacks do.
// Variant 0 is "rapid reset" (CVE-2023-44487): streams opened and reset
// at once, 100 to a write every 10 ms, so that the server starts work
// the client never waits for. Variant 1 stalls: its windows are 0, it
// opens twice the streams the server allows and never reads a byte of
// their answers, so that the server holds what it has fetched for them.
// Either runs until portmux ends the connection (GOAWAY or close) or
// the attack ends.
func h2Flood(ctx context.Context, c net.Conn, counts *attackCounts) error {
	bw := bufio.NewWriterSize(c, 64<<10)
	fr := http2.NewFramer(bw, c)
	stall := variant(ctx) == 1
	var settings []http2.Setting
	if stall {
		settings = append(settings, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	}
	_, _ = bw.WriteString(http2.ClientPreface)
	if err := fr.WriteSettings(settings...); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	ended := make(chan error, 1)
	maxStreams := make(chan uint32, 1)
	go func() { ended <- h2Read(fr, counts, maxStreams) }()
	id := uint32(1)
	// open opens n streams, resetting each at once if reset, in one write.
	open := func(n uint32, reset bool) error {
		for range n {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h2Block, EndStream: true, EndHeaders: true})
			if reset {
				_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
			id += 2
		}
		return bw.Flush()
	}
	if stall {
		var limit uint32 = 100
		select {
		case limit = <-maxStreams:
		case err := <-ended:
			return err
		case <-time.After(5 * time.Second):
		}
		if err := open(2*limit, false); err != nil {
			return err
		}
		select {
		case err := <-ended:
			return err
		case <-ctx.Done():
			return nil
		}
	}
	for ctx.Err() == nil {
		if err := open(100, true); err != nil {
			return err
		}
		select {
		case err := <-ended:
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// h2StallAlways is h2Flood's stalling variant on every connection: from
// one address, each connection within its 100 streams, together past
// what one client may have in flight.
func h2StallAlways(ctx context.Context, c net.Conn, counts *attackCounts) error {
	return h2Flood(withVariant(ctx, 1), c, counts)
}

// h2Read reads the server's frames until the connection ends, counting
// the answers by kind (a status, a reset's or a GOAWAY's code) and
// passing on the server's SETTINGS_MAX_CONCURRENT_STREAMS. The
// connection ending is an error: GOAWAY's, or the read's.
func h2Read(fr *http2.Framer, counts *attackCounts, maxStreams chan<- uint32) error {
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				select {
				case maxStreams <- v:
				default:
				}
			}
		case *http2.MetaHeadersFrame:
			counts.mark(f.PseudoValue("status"))
		case *http2.RSTStreamFrame:
			counts.mark("RST_STREAM " + f.ErrCode.String())
		case *http2.GoAwayFrame:
			counts.mark("GOAWAY " + f.ErrCode.String())
			return fmt.Errorf("GOAWAY %v", f.ErrCode)
		}
	}
}
