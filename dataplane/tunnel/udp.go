package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/coder/websocket"

	"github.com/portmux/portmux/dataplane/panics"
)

// datagrams moves UDP datagrams as binary messages over one WebSocket
// connection. Receive is for one goroutine, Send for any number.
type datagrams struct {
	c    *websocket.Conn
	live *liveness
	cw   *coalescer // client end only
}

func newDatagrams(c *websocket.Conn, live *liveness) *datagrams {
	c.SetReadLimit(maxDatagram) // bigger messages close the connection with 1009
	return &datagrams{c: c, live: live}
}

// Receive reads one datagram into buf (at least maxDatagram bytes).
func (d *datagrams) Receive(buf []byte) (int, error) {
	d.live.startRead()
	typ, r, err := d.c.Reader(context.Background())
	if err != nil {
		return 0, err
	}
	d.live.markHeard()
	if typ != websocket.MessageBinary {
		_ = d.c.Close(websocket.StatusUnsupportedData, "binary messages only")
		return 0, errTextMessage
	}
	n := 0
	for {
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
	}
	d.live.markData()
	d.live.endRead() // until the next Receive
	return n, nil
}

// Send writes one datagram as one message.
func (d *datagrams) Send(p []byte) error {
	if err := d.live.sendData(); err != nil {
		return err
	}
	return writeBinary(d.c, d.live, d.cw, p)
}

// ignorableUDPError reports errors a connected UDP socket returns for an
// earlier datagram's ICMP error (port unreachable): the socket still
// works, and UDP never promised delivery.
func ignorableUDPError(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// serveUDP relays datagrams between the client and up until either ends,
// the client is found dead, or nothing is carried for the idle timeout.
func (h *Handler) serveUDP(c *websocket.Conn, live *liveness, up *net.UDPConn, rep *Report, shutdown context.Context) {
	dg := newDatagrams(c, live)
	stopWD := h.watchdog(live, h.opt.UDPIdleTimeout).start(c)
	defer afterFunc(shutdown, func() { goingAway(c) })()

	var down, downN atomic.Int64
	var downErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // target → client
		defer wg.Done()
		// A panic (a bug the datagrams reached) ends this tunnel as an
		// error.
		if err := panics.Run(func() error {
			buf := make([]byte, maxDatagram+1)
			for {
				n, err := up.Read(buf)
				if err != nil {
					if ignorableUDPError(err) {
						continue
					}
					return err
				}
				if err := dg.Send(buf[:n]); err != nil {
					_ = up.Close()
					return nil
				}
				down.Add(int64(n))
				downN.Add(1)
			}
		}); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				downErr = err
			}
			_ = c.CloseNow()
		}
	}()

	upErr := panics.Run(func() error {
		buf := make([]byte, maxDatagram+1)
		for { // client → target
			n, err := dg.Receive(buf)
			if err != nil {
				return err
			}
			if _, err := up.Write(buf[:n]); err != nil && !ignorableUDPError(err) {
				return err
			}
			rep.Up += int64(n)
			rep.UpDatagrams++
		}
	})
	_ = up.Close()
	wdErr := stopWD()
	wg.Wait()
	_ = c.Close(websocket.StatusNormalClosure, "")
	rep.Down, rep.DownDatagrams = down.Load(), downN.Load()

	switch {
	case errors.Is(wdErr, ErrDeadPeer):
		rep.Outcome, rep.Err = OutcomeDeadPeer, wdErr
	case errors.Is(wdErr, errIdle):
		rep.Outcome = OutcomeIdleTimeout
	case downErr != nil:
		rep.Outcome, rep.Err = OutcomeError, downErr
	case websocket.CloseStatus(upErr) == websocket.StatusNormalClosure,
		websocket.CloseStatus(upErr) == websocket.StatusGoingAway,
		websocket.CloseStatus(upErr) == CloseIdle:
		rep.Outcome = OutcomeClosed
	default:
		rep.Outcome, rep.Err = OutcomeError, upErr
	}
}
