package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// udpQueue is how many datagrams a UDP session holds while its tunnel is
// being opened or is slower than the local sender; beyond it they are
// dropped, as a full socket buffer would.
const udpQueue = 512

// udpSession is the tunnel of one local UDP peer (source address).
type udpSession struct {
	src   netip.AddrPort
	queue chan []byte
	// last is when a datagram was last queued (UnixNano).
	last atomic.Int64
	// held is a datagram taken from queue by a tunnel that ended before
	// it could send it (the idle close races the next datagram): the
	// session's next tunnel sends it first.
	held atomic.Pointer[[]byte]
}

// ServeUDP relays the datagrams that arrive on pc to target, one tunnel
// per local source address, and sends the replies back to that address,
// until ctx is done; then it closes pc and every tunnel and returns nil.
//
// A session's tunnel is opened on its first datagram; datagrams are queued
// (up to 512) while it opens. A tunnel that carried nothing for
// UDPIdleTimeout ends the session. A tunnel that breaks is opened again
// with backoff while its source keeps sending.
func (c *Client) ServeUDP(ctx context.Context, pc *net.UDPConn, target string) error {
	stop := afterFunc(ctx, func() { _ = pc.Close() })
	defer stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu       sync.Mutex
		sessions = map[netip.AddrPort]*udpSession{}
		wg       sync.WaitGroup
	)
	defer wg.Wait()
	// end removes s unless a datagram is waiting for it; the caller then
	// carries on.
	end := func(s *udpSession) bool {
		mu.Lock()
		defer mu.Unlock()
		if (len(s.queue) > 0 || s.held.Load() != nil) && sctx.Err() == nil {
			return false
		}
		delete(sessions, s.src)
		return true
	}

	buf := make([]byte, maxDatagram+1)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case ignorableUDPError(err):
				continue
			}
			return err
		}
		p := append([]byte(nil), buf[:n]...)
		mu.Lock()
		s := sessions[src]
		if s == nil {
			s = &udpSession{src: src, queue: make(chan []byte, udpQueue)}
			sessions[src] = s
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.runUDPSession(sctx, pc, target, s, end)
			}()
		}
		s.last.Store(time.Now().UnixNano())
		select {
		case s.queue <- p:
		default:
			c.Log.V(1).Info("UDP queue full; datagram dropped", "target", target, "client", src.String())
		}
		mu.Unlock()
	}
}

// runUDPSession opens the session's tunnel and reopens it with backoff
// when it breaks, until the session is idle or ctx is done.
func (c *Client) runUDPSession(ctx context.Context, pc *net.UDPConn, target string, s *udpSession, end func(*udpSession) bool) {
	log := c.Log.WithValues("target", target, "client", s.src.String())
	b := c.newBackoff()
	idle := c.udpIdle()
	for ctx.Err() == nil {
		// A held datagram keeps the session, as a queued one does.
		if idle > 0 && time.Since(time.Unix(0, s.last.Load())) >= idle && end(s) {
			return
		}
		ws, live, cw, err := c.handshake(ctx, target, true)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var re *RefusedError
			if errors.As(err, &re) && re.Permanent() {
				b.cur = b.max // asking again soon will not help
			}
			wait := b.next()
			log.Error(err, "cannot open UDP tunnel; retrying", "wait", wait.String())
			sleep(ctx, wait)
			continue
		}
		b.reset()
		start := time.Now()
		up, down, err := c.pumpUDP(ctx, ws, live, cw, pc, s)
		kv := []any{"up", up, "down", down, "duration", time.Since(start).Round(time.Millisecond).String()}
		switch {
		case ctx.Err() != nil:
			log.V(1).Info("UDP tunnel closed", kv...)
		case errors.Is(err, errIdle) || websocket.CloseStatus(err) == CloseIdle:
			log.V(1).Info("UDP tunnel idle; closed", kv...)
			if end(s) {
				return
			}
		default:
			wait := b.next()
			log.Error(err, "UDP tunnel broke; reopening", append(kv, "wait", wait.String())...)
			sleep(ctx, wait)
		}
	}
	end(s)
}

// pumpUDP carries the session's datagrams over ws until it ends, and
// returns the payload bytes each way and why it ended.
func (c *Client) pumpUDP(ctx context.Context, ws *websocket.Conn, live *liveness, cw *coalescer, pc *net.UDPConn, s *udpSession) (int64, int64, error) {
	dg := newDatagrams(ws, live)
	dg.cw = cw
	stopWD := c.watchdog(live, c.udpIdle()).start(ws)
	stopCtx := afterFunc(ctx, func() { goingAway(ws) })

	var up atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // local → tunnel
		defer wg.Done()
		send := func(p []byte) bool {
			if err := dg.Send(p); err != nil {
				s.held.Store(&p)
				if !errors.Is(err, errIdle) { // else the watchdog is closing ws
					_ = ws.CloseNow()
				}
				return false
			}
			up.Add(int64(len(p)))
			return true
		}
		if p := s.held.Swap(nil); p != nil && !send(*p) {
			return
		}
		for {
			select {
			case p := <-s.queue:
				if !send(p) {
					return
				}
			case <-done:
				return
			}
		}
	}()

	var down int64
	var err error
	buf := make([]byte, maxDatagram+1)
	for {
		var n int
		n, err = dg.Receive(buf)
		if err != nil {
			break
		}
		if _, werr := pc.WriteToUDPAddrPort(buf[:n], s.src); werr != nil && !ignorableUDPError(werr) {
			err = werr
			break
		}
		down += int64(n)
	}
	close(done)
	wg.Wait()
	stopCtx()
	if wdErr := stopWD(); wdErr != nil {
		err = wdErr
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	return up.Load(), down, err
}
