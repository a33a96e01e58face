//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The kinds of scenario.
const (
	kindConn = "conn" // a worker pool opening short connections
	kindTput = "tput" // long connections streaming bytes through an echo
	kindIdle = "idle" // many connections held open doing nothing

	kindUDPRate  = "udp-rate"  // sessions keeping a window of datagrams in flight
	kindUDPSetup = "udp-setup" // new UDP sessions as fast as they come
	kindUDPIdle  = "udp-idle"  // many UDP sessions held doing nothing
)

// udp says whether the scenario is a UDP one.
func (sc scenario) udp() bool {
	return sc.kind == kindUDPRate || sc.kind == kindUDPSetup || sc.kind == kindUDPIdle
}

// smallDatagram is the datagram size of udp-small-N.
const smallDatagram = 64

// scenario is one named load.
type scenario struct {
	name    string
	kind    string
	route   string // the route all its connections take
	workers int    // kindConn, kindUDPSetup, kindReload: concurrent clients
	idle    int    // kindIdle, kindUDPIdle, kindReload: connections or sessions held
	// kindUDPRate: sessions and the size of their datagrams (0: the
	// -udp-size flag's).
	sessions, size int
	// bulk (kindConn): -tput-streams connections move bytes through the
	// mux as fast as it takes them all along, so the latency measured is
	// that of a connection sharing the mux with bulk transfers.
	bulk bool
}

// parseScenario reads a scenario name: conn-ssh and conn-tls (workers
// clients each), lat-ssh and lat-tls (the same with one client, so nothing
// queues and the latency is the mux's own), lat-bulk (lat-ssh beside
// bulk streams: what a transfer costs everyone else), tput, idle-N; and over UDP
// udp-rate-N (N sessions of -udp-size datagrams), udp-small-N (the same
// with 64-byte datagrams), reload-N (N held connections and workers
// clients while the mux's configuration changes), udp-setup (workers clients opening sessions)
// and udp-idle-N.
func parseScenario(name string, workers int) (scenario, error) {
	switch name {
	case "conn-ssh":
		return scenario{name: name, kind: kindConn, route: routeSSH, workers: workers}, nil
	case "conn-tls":
		return scenario{name: name, kind: kindConn, route: routeTLSA, workers: workers}, nil
	case "lat-ssh":
		return scenario{name: name, kind: kindConn, route: routeSSH, workers: 1}, nil
	case "lat-tls":
		return scenario{name: name, kind: kindConn, route: routeTLSA, workers: 1}, nil
	case "lat-bulk":
		return scenario{name: name, kind: kindConn, route: routeSSH, workers: 1, bulk: true}, nil
	case "tput":
		return scenario{name: name, kind: kindTput, route: routeSSH}, nil
	case "udp-setup":
		return scenario{name: name, kind: kindUDPSetup, route: routeUDPAny, workers: workers}, nil
	}
	for _, p := range []struct {
		prefix string
		make   func(n int) scenario
	}{
		{"idle-", func(n int) scenario { return scenario{kind: kindIdle, route: routeSSH, idle: n} }},
		{"reload-", func(n int) scenario {
			return scenario{kind: kindReload, route: routeSSH, idle: n, workers: workers}
		}},
		{"udp-idle-", func(n int) scenario { return scenario{kind: kindUDPIdle, route: routeUDPAny, idle: n} }},
		{"udp-rate-", func(n int) scenario { return scenario{kind: kindUDPRate, route: routeUDPAny, sessions: n} }},
		{"udp-small-", func(n int) scenario {
			return scenario{kind: kindUDPRate, route: routeUDPAny, sessions: n, size: smallDatagram}
		}},
	} {
		if n, ok := strings.CutPrefix(name, p.prefix); ok {
			count, err := strconv.Atoi(n)
			if err != nil || count <= 0 {
				return scenario{}, fmt.Errorf("scenario %q: %sN needs a positive N", name, p.prefix)
			}
			sc := p.make(count)
			sc.name = name
			return sc, nil
		}
	}
	return scenario{}, fmt.Errorf("unknown scenario %q (conn-ssh, conn-tls, lat-ssh, lat-tls, lat-bulk, tput, idle-N, reload-N, udp-rate-N, udp-small-N, udp-setup, udp-idle-N)", name)
}

// clientCount is what the client did over a whole run, warm-up included:
// the bounds the backends' counts must fall in.
type clientCount struct {
	attempts  int64 // connections tried
	succeeded int64 // connections that got their echo
}

// connStats is the result of a connection loop.
type connStats struct {
	client   clientCount
	ok       int64 // finished with their echo inside the measured window
	failed   int64 // failed inside the window
	lat      []time.Duration
	firstErr string
	window   time.Duration // from the start of counting to its end
	use      usage         // over the samples taken just outside the window
}

// connLoop runs workers clients, each doing op back to back, for warmup
// and then the measured window d. A connection is counted in the window
// when it finishes inside it; its latency is from dial to echo. The mux's
// CPU is sampled at the window's two ends while the load runs.
func connLoop(workers int, warmup, d time.Duration, op func() error, m meter) connStats {
	var measuring, stop atomic.Bool
	var attempts, succeeded, ok, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for !stop.Load() {
				t0 := time.Now()
				err := op()
				took := time.Since(t0)
				attempts.Add(1)
				if err == nil {
					succeeded.Add(1)
				}
				if !measuring.Load() {
					continue
				}
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				ok.Add(1)
				lat[w] = append(lat[w], took)
			}
		})
	}
	window, use := m.window(&measuring, warmup, d)
	stop.Store(true)
	wg.Wait()

	s := connStats{
		client: clientCount{attempts: attempts.Load(), succeeded: succeeded.Load()},
		ok:     ok.Load(), failed: failed.Load(), window: window, use: use,
	}
	for _, l := range lat {
		s.lat = append(s.lat, l...)
	}
	if p := firstErr.Load(); p != nil {
		s.firstErr = *p
	}
	return s
}

// tputStats is the result of a throughput run.
type tputStats struct {
	client  clientCount
	bytes   int64 // one way, all streams
	elapsed time.Duration
	use     usage
}

// chunk is the size of every throughput write.
const chunk = 64 << 10

// runTput opens streams SSH-routed connections, then has each write its
// share of total bytes in chunk writes while reading the echo back, all
// streams at once, bounded by timeout. Only the transfer is timed.
func runTput(addr string, streams int, total int64, timeout time.Duration, m meter) (tputStats, error) {
	s := tputStats{client: clientCount{attempts: int64(streams)}}
	each := total / int64(streams)
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range streams {
		c, err := sshConn(addr)
		if err != nil {
			return s, fmt.Errorf("open stream: %w", err)
		}
		conns = append(conns, c)
		s.client.succeeded++
	}
	deadline := time.Now().Add(timeout)
	errs := make(chan error, 2*streams)
	var wg sync.WaitGroup
	a := m.sample()
	for _, c := range conns {
		_ = c.SetDeadline(deadline)
		wg.Go(func() { errs <- writeN(c, each) })
		wg.Go(func() {
			n, err := io.CopyN(io.Discard, c, each)
			if err != nil {
				err = fmt.Errorf("read back %d of %d bytes: %w", n, each, err)
			}
			errs <- err
		})
	}
	wg.Wait()
	b := m.sample()
	close(errs)
	s.use = m.between(a, b)
	s.elapsed = b.at.Sub(a.at)
	s.bytes = each * int64(streams)
	for err := range errs {
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// startBulk opens streams SSH-routed connections that write chunks and
// read their echo back until stop, which closes them and returns what
// was opened, and the first error the streams met before it.
func startBulk(addr string, streams int) (stop func() (clientCount, error), err error) {
	var c clientCount
	var conns []net.Conn
	var stopped atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2*streams)
	stop = func() (clientCount, error) {
		stopped.Store(true)
		for _, conn := range conns {
			_ = conn.Close()
		}
		wg.Wait()
		close(errs)
		return c, <-errs // nil when none
	}
	fail := func(err error) {
		if !stopped.Load() {
			errs <- err
		}
	}
	for range streams {
		c.attempts++
		conn, err := sshConn(addr)
		if err != nil {
			_, _ = stop()
			return nil, fmt.Errorf("open bulk stream: %w", err)
		}
		c.succeeded++
		conns = append(conns, conn)
		wg.Go(func() {
			buf := make([]byte, chunk)
			for !stopped.Load() {
				if _, err := conn.Write(buf); err != nil {
					fail(fmt.Errorf("bulk write: %w", err))
					return
				}
			}
		})
		wg.Go(func() {
			if _, err := io.Copy(io.Discard, conn); err != nil {
				fail(fmt.Errorf("bulk read: %w", err))
			}
		})
	}
	return stop, nil
}

// writeN writes n zero bytes to c in chunk writes.
func writeN(c net.Conn, n int64) error {
	buf := make([]byte, chunk)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		n -= k
	}
	return nil
}

// idleStats is the result of an idle run.
type idleStats struct {
	client        clientCount
	opened        int
	before, after memory
	probed        int
}

// probeCount is how many held connections are checked to still work
// before they are closed: a mux that dropped idle connections must not
// pass for a cheap one.
const probeCount = 5

// runIdle measures the mux's memory, opens n SSH-routed connections (the
// banner echoed, so the mux holds both legs), batch at a time, waits
// settle, measures again, checks a few still echo, and closes them all.
// The opening is bounded by openTimeout.
func runIdle(addr string, n, batch int, settle, openTimeout time.Duration, mem func() (memory, error)) (idleStats, error) {
	var s idleStats
	var err error
	if s.before, err = mem(); err != nil {
		return s, fmt.Errorf("memory before: %w", err)
	}
	conns, openErr := openMany(addr, n, batch, openTimeout)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	s.client = clientCount{attempts: int64(n), succeeded: int64(len(conns))}
	s.opened = len(conns)
	if openErr != nil {
		return s, openErr
	}
	time.Sleep(settle)
	if s.after, err = mem(); err != nil {
		return s, fmt.Errorf("memory after: %w", err)
	}
	for i := 0; i < len(conns) && s.probed < probeCount; i += max(len(conns)/probeCount, 1) {
		_ = conns[i].SetDeadline(time.Now().Add(opTimeout))
		if err := roundTrip(conns[i], sshBanner); err != nil {
			return s, fmt.Errorf("held connection %d of %d: %w", i, len(conns), err)
		}
		s.probed++
	}
	return s, nil
}

// openMany opens n SSH-routed connections, batch at a time, and clears
// their deadlines: they are held until the caller closes them.
func openMany(addr string, n, batch int, timeout time.Duration) ([]net.Conn, error) {
	return openBatched(n, batch, timeout, "connection", func() (net.Conn, error) {
		c, err := sshConn(addr)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Time{})
		return c, nil
	})
}

// openBatched calls open n times, batch calls at a time, and returns what
// the calls that succeeded opened, with the first error. It stops at that
// error or once timeout has passed: a mux that refuses would otherwise
// cost a timeout for every one left. what names one of the things opened,
// in the errors.
func openBatched[T any](n, batch int, timeout time.Duration, what string, open func() (T, error)) ([]T, error) {
	deadline := time.Now().Add(timeout)
	var (
		mu       sync.Mutex
		opened   = make([]T, 0, n)
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	stopped := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil && time.Now().After(deadline) {
			firstErr = fmt.Errorf("opened %d of %d %ss in %v", len(opened), n, what, timeout)
		}
		return firstErr != nil
	}
	for range min(batch, n) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && !stopped() {
				v, err := open()
				mu.Lock()
				switch {
				case err == nil:
					opened = append(opened, v)
				case firstErr == nil:
					firstErr = fmt.Errorf("%s %d: %w", what, len(opened), err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return opened, firstErr
}
