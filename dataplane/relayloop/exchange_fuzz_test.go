//go:build linux

package relayloop_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/relayloop"
)

// FuzzExchange sends any bytes, as a client would, to a loop carrying
// exchanges to a real backend, then ends its stream. Whatever the bytes
// (heads cut anywhere, bodies framed or not, pipelined requests,
// garbage), the connection must end soon after the client's, without a
// panic, and the loop must hold nothing for it afterwards but pooled
// backend connections.
func FuzzExchange(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /answer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokGET /b HTTP/1.1\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"HEAD /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	be, _ := httpBackend(f, echoHandler)
	var panicked atomic.Int64
	opt := relayloop.Options{Loops: 2, OnPanic: func(*panics.Error) { panicked.Add(1) }}
	addr, set := serve(f, opt, handler(func(*relayloop.Conn) relayloop.Session {
		e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
		// Timeouts longer than the client waits: only the client's end
		// may end a connection here.
		e.opt = relayloop.Exchange{MaxHead: 4 << 10, HeadTimeout: time.Minute}
		e.handOff = func(fd int, _ []byte) { _ = unix.Close(fd) }
		e.onDone = func(r relayloop.Result) {
			if panics.Is(r.Err) != nil {
				panicked.Add(1)
			}
		}
		return e
	}))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(in); err != nil && !errors.Is(err, net.ErrClosed) {
			return // the loop closed first (a refused head): fine
		}
		_ = c.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
			t.Fatalf("connection not ended within 3 s of the client's end: %v", err)
		}
		if n := panicked.Load(); n > 0 {
			t.Fatalf("%d panics", n)
		}
		deadline := time.Now().Add(5 * time.Second)
		for set.Stats().Conns != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("loops still hold %+v after the client left", set.Stats())
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// isReset reports a connection the loop reset, closing it with bytes
// unread: an end too.
func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}
