//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// lossWait is how long a session's client waits for an echo before it
// takes the datagrams in flight as lost and sends new ones: a window that
// lost a datagram must not stall its session for long.
const lossWait = 200 * time.Millisecond

// udpRateStats is the result of a datagram-rate run.
type udpRateStats struct {
	held     []*net.UDPConn // the sessions, for the caller to close
	client   clientCount    // sessions
	echoed   int64          // datagrams that came back inside the window
	sent     int64          // datagrams sent inside the window
	lost     int64          // given up on inside the window
	window   time.Duration
	use      usage
	firstErr string
}

// runUDPRate opens sessions sessions of route udp-any, then has each keep
// window datagrams of size bytes in flight through the echo, sending in
// batches and reading what comes back, for warmup and then d. A datagram
// is counted when its echo arrives inside the measured window, whose two
// ends sample the mux's CPU.
func runUDPRate(dialer *udpDialer, addr string, sessions, window, size int, warmup, d time.Duration, m meter) (udpRateStats, error) {
	var s udpRateStats
	conns, _, c, err := openUDPSessions(dialer, addr, routeUDPAny, sessions, min(sessions, 64), 30*time.Second)
	s.held, s.client = conns, c
	if err != nil {
		return s, err
	}
	var measuring, stop atomic.Bool
	var echoed, sent, lost atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	for _, conn := range conns {
		_ = conn.SetReadBuffer(udpSocketBuffer)
		_ = conn.SetWriteBuffer(udpSocketBuffer)
		wg.Go(func() {
			st := windowLoop(conn, window, size, &stop, &measuring)
			echoed.Add(st.echoed)
			sent.Add(st.sent)
			lost.Add(st.lost)
			if st.err != nil {
				msg := st.err.Error()
				firstErr.CompareAndSwap(nil, &msg)
			}
		})
	}
	s.window, s.use = m.window(&measuring, warmup, d)
	stop.Store(true)
	wg.Wait()
	s.echoed, s.sent, s.lost = echoed.Load(), sent.Load(), lost.Load()
	if p := firstErr.Load(); p != nil {
		s.firstErr = *p
	}
	if s.echoed == 0 {
		return s, fmt.Errorf("no datagram came back in %v: %s", d, s.firstErr)
	}
	return s, nil
}

// windowStats is what one session's client counted inside the window.
type windowStats struct {
	echoed, sent, lost int64
	err                error // the first unexpected one
}

// windowLoop keeps window datagrams of size bytes in flight on c until
// stop, counting while measuring. Echoes of the wrong size are errors.
func windowLoop(c *net.UDPConn, window, size int, stop, measuring *atomic.Bool) windowStats {
	var st windowStats
	pc := ipv4.NewPacketConn(c)
	payload := make([]byte, size)
	ws := make([]ipv4.Message, window)
	for i := range ws {
		ws[i].Buffers = [][]byte{payload}
	}
	rs := newMessages(min(window, udpBatch))
	inflight := 0
	for !stop.Load() {
		if k := window - inflight; k > 0 {
			n, err := pc.WriteBatch(ws[:k], 0)
			if err != nil && st.err == nil && !errors.Is(err, net.ErrClosed) {
				st.err = fmt.Errorf("send: %w", err)
			}
			inflight += n
			if measuring.Load() {
				st.sent += int64(n)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(lossWait))
		n, err := pc.ReadBatch(rs, 0)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if measuring.Load() {
				st.lost += int64(inflight)
			}
			inflight = 0
			continue
		}
		if err != nil {
			if st.err == nil {
				st.err = fmt.Errorf("receive: %w", err)
			}
			time.Sleep(lossWait) // refused: do not spin
			inflight = 0
			continue
		}
		inflight = max(inflight-n, 0) // late echoes of datagrams given up on
		for i := range n {
			if rs[i].N != size && st.err == nil {
				st.err = fmt.Errorf("echo of %d bytes, sent %d", rs[i].N, size)
			}
		}
		if measuring.Load() {
			st.echoed += int64(n)
		}
	}
	return st
}

// udpSetupStats is the result of a session set-up run.
type udpSetupStats struct {
	held    []*net.UDPConn // the sessions, for the caller to close
	client  clientCount
	ok      int
	lat     []time.Duration
	elapsed time.Duration
	use     usage
}

// runUDPSetup opens n sessions of route udp-any as fast as workers
// clients can, each a new socket, a hello and its echo, and holds them
// until all are open and the caller closes them, so that no client port
// is used twice (a backend could not tell two sessions apart) and the mux
// holds every session it made, as it would under a flood of new clients.
// n bounds the run: the box's ports and descriptors bound how many
// sessions can be held.
func runUDPSetup(dialer *udpDialer, addr string, n, workers int, timeout time.Duration, m meter) (udpSetupStats, error) {
	a := m.sample()
	conns, lat, c, err := openUDPSessions(dialer, addr, routeUDPAny, n, workers, timeout)
	b := m.sample()
	return udpSetupStats{held: conns, client: c, ok: len(conns), lat: lat, elapsed: b.at.Sub(a.at), use: m.between(a, b)}, err
}

// runUDPIdle measures the mux's memory, opens n sessions of route
// udp-any, batch at a time, waits settle, measures again and checks that
// a few still echo. The caller closes the sessions it returns.
func runUDPIdle(dialer *udpDialer, addr string, n, batch int, settle, openTimeout time.Duration, mem func() (memory, error)) (idleStats, []*net.UDPConn, error) {
	var s idleStats
	var err error
	if s.before, err = mem(); err != nil {
		return s, nil, fmt.Errorf("memory before: %w", err)
	}
	conns, _, c, openErr := openUDPSessions(dialer, addr, routeUDPAny, n, batch, openTimeout)
	s.client, s.opened = c, len(conns)
	if openErr != nil {
		return s, conns, openErr
	}
	time.Sleep(settle)
	if s.after, err = mem(); err != nil {
		return s, conns, fmt.Errorf("memory after: %w", err)
	}
	ping := []byte("ping")
	for i := 0; i < len(conns) && s.probed < probeCount; i += max(len(conns)/probeCount, 1) {
		if err := udpRoundTrip(conns[i], ping); err != nil {
			return s, conns, fmt.Errorf("held session %d of %d: %w", i, len(conns), err)
		}
		s.probed++
	}
	return s, conns, nil
}

// udpRoundTrip sends msg on c and waits for its echo, sending it again
// when it is lost.
func udpRoundTrip(c *net.UDPConn, msg []byte) error {
	buf := make([]byte, maxUDPSize)
	var err error
	for _, wait := range helloTimeouts {
		if _, err = c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		var n int
		if n, err = c.Read(buf); err == nil {
			if string(buf[:n]) != string(msg) {
				return fmt.Errorf("echo %q, sent %q", buf[:n], msg)
			}
			return nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
	return err
}
