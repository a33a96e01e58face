//go:build linux

package h2_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/h2"
	"github.com/portmux/portmux/dataplane/relayloop"
)

// loopSession serves a connection of the relay loops as an h2.Conn
// (relayloop.Verdict.Serve), as the dataplane does.
type loopSession struct {
	h2c     *h2.Conn
	serving relayloop.Serving
	ended   func(error)
}

func (s *loopSession) Decide([]byte, relayloop.End) relayloop.Verdict {
	return relayloop.Verdict{Serve: &s.serving}
}
func (s *loopSession) HandOff(int, []byte)    {}
func (s *loopSession) Input(b []byte) error   { return s.h2c.Input(b) }
func (s *loopSession) InputEnded(err error)   { s.h2c.InputEnded(err) }
func (s *loopSession) Output() ([]byte, bool) { return s.h2c.Output() }
func (s *loopSession) Done(r relayloop.Result) {
	s.h2c.Closed(r.Err)
	err := r.Err
	if err == nil {
		err = s.h2c.Err()
	}
	s.ended(err)
}

type loopHandler func(c *relayloop.Conn) relayloop.Session

func (h loopHandler) Accepted(c *relayloop.Conn) relayloop.Session { return h(c) }

// serveOnLoops is serve with the connections on relay loops: every test
// that serves through serve runs this way too with -relay-loops (make
// test). ended gets the connection's error as ServeConn would return
// it.
func serveOnLoops(t *testing.T, srv *h2.Server) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	set, err := relayloop.New(relayloop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &served{addr: ln.Addr().String(), ended: make(chan error, 100)}
	var conns sync.WaitGroup
	a, err := set.Accept(ln.(*net.TCPListener), loopHandler(func(c *relayloop.Conn) relayloop.Session {
		conns.Add(1)
		ls := &loopSession{serving: relayloop.Serving{WriteTimeout: srv.WriteTimeout}}
		ls.h2c = srv.NewConn(c.Peer().String(), c.Flush, c.Abort)
		ls.ended = func(err error) {
			select {
			case s.ended <- err:
			default:
			}
			conns.Done()
		}
		return ls
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		_ = ln.Close()
		done := make(chan struct{})
		go func() { conns.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(ioTimeout):
			t.Error("a connection did not end after its client left")
		}
		_ = set.Close()
	})
	return s
}
