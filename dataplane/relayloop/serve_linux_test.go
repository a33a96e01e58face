package relayloop_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/relayloop"
)

// lineServer is a Server of a line protocol: each line comes back in
// upper case (one past 64 KiB is dropped); "slow" makes every Input
// take a millisecond; "later" is answered from a goroutine (Flush); "big N"
// gets N bytes; "quit" gets BYE and the connection closes; "bad" is an
// error of Input (ERR is sent, then the connection closes); the client's
// end gets END and the connection closes.
type lineServer struct {
	c       *relayloop.Conn
	serving relayloop.Serving
	done    chan relayloop.Result
	ended   chan error
	line    []byte // a line not yet whole
	first   []byte // the bytes the first Input had
	slow    bool   // "slow": each Input takes a millisecond

	mu      sync.Mutex
	out     []byte
	closing bool
}

func (s *lineServer) Decide(b []byte, end relayloop.End) relayloop.Verdict {
	if len(b) == 0 && end == relayloop.Start {
		return relayloop.Verdict{Wait: true, Limit: 64, Deadline: time.Now().Add(5 * time.Second)}
	}
	return relayloop.Verdict{Serve: &s.serving}
}

func (s *lineServer) HandOff(int, []byte)     {}
func (s *lineServer) Done(r relayloop.Result) { s.done <- r }

func (s *lineServer) Input(b []byte) error {
	if s.first == nil {
		s.first = append([]byte(nil), b...)
	}
	if s.slow {
		time.Sleep(time.Millisecond) // a costly protocol
	}
	s.line = append(s.line, b...)
	for {
		i := bytes.IndexByte(s.line, '\n')
		if i < 0 {
			if len(s.line) > 64<<10 {
				s.line = s.line[:0] // a line past 64 KiB is dropped
			}
			return nil
		}
		cmd := string(s.line[:i])
		s.line = s.line[i+1:]
		switch {
		case cmd == "later":
			go func() {
				time.Sleep(20 * time.Millisecond)
				s.send("LATER\n", false)
				s.c.Flush()
			}()
		case strings.HasPrefix(cmd, "big "):
			n, _ := strconv.Atoi(cmd[4:])
			s.send(strings.Repeat("b", n), false)
		case cmd == "slow":
			s.slow = true
		case cmd == "quit":
			s.send("BYE\n", true)
		case cmd == "bad":
			s.send("ERR\n", false)
			return errors.New("a bad line")
		default:
			s.send(strings.ToUpper(cmd)+"\n", false)
		}
	}
}

func (s *lineServer) InputEnded(err error) {
	s.ended <- err
	s.send("END\n", true)
}

func (s *lineServer) send(text string, closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = append(s.out, text...)
	s.closing = s.closing || closing
}

func (s *lineServer) Output() ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.out
	s.out = nil // the loop holds out until it asks again
	return out, s.closing
}

// serveLines starts a Set whose connections a lineServer speaks, and
// returns its address and the servers as they are accepted.
func serveLines(t *testing.T, serving relayloop.Serving) (string, chan *lineServer) {
	t.Helper()
	servers := make(chan *lineServer, 10)
	addr, _ := serve(t, relayloop.Options{}, handler(func(c *relayloop.Conn) relayloop.Session {
		s := &lineServer{c: c, serving: serving, done: make(chan relayloop.Result, 1), ended: make(chan error, 1)}
		servers <- s
		return s
	}))
	return addr, servers
}

func readLine(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (got %q)", err, line)
	}
	return line
}

func (s *lineServer) result(t *testing.T) relayloop.Result {
	t.Helper()
	return waitResult(t, s.done)
}

// A Server speaks on the loop: the bytes read while deciding come first,
// answers go out as they are made, on the loop or from a goroutine
// (Flush), and the connection closes when the Server says so, with every
// byte counted.
func TestServeSpeaksOnTheLoop(t *testing.T) {
	t.Parallel()
	addr, servers := serveLines(t, relayloop.Serving{})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, br); got != "HELLO\n" {
		t.Fatalf("first line: %q", got)
	}
	s := <-servers
	_, _ = io.WriteString(c, "later\nsoon\n")
	if got := readLine(t, br) + readLine(t, br); got != "SOON\nLATER\n" {
		t.Errorf("a line answered on the loop, then one from a goroutine: %q", got)
	}
	_, _ = io.WriteString(c, "big 3000000\nquit\n")
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	if want := strings.Repeat("b", 3000000) + "BYE\n"; string(rest) != want {
		t.Errorf("3 MB and BYE: got %d bytes ending %q", len(rest), rest[max(0, len(rest)-8):])
	}
	r := s.result(t)
	if r.Err != nil || r.Up != int64(len("hello\nlater\nsoon\nbig 3000000\nquit\n")) || r.Down != int64(6+5+6+3000000+4) {
		t.Errorf("Done: %+v", r)
	}
	if string(s.first) != "hello\n" {
		t.Errorf("the first Input had %q, want the bytes read while deciding", s.first)
	}
}

// The client's end is the Server's to answer: it hears of it
// (InputEnded) and what it sends then still goes out before the close.
func TestServeClientEnd(t *testing.T) {
	t.Parallel()
	addr, servers := serveLines(t, relayloop.Serving{})
	c := dial(t, addr)
	_, _ = io.WriteString(c, "a\n")
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "A\nEND\n" {
		t.Errorf("after the client's end: %q, %v", got, err)
	}
	s := <-servers
	if err := <-s.ended; err != nil {
		t.Errorf("InputEnded(%v), want nil for the client's end", err)
	}
	if r := s.result(t); r.Err != nil {
		t.Errorf("Done: %+v", r)
	}
}

// An error of Input stops the reading; what the Server had to send goes
// out, then the connection closes and Done reports the error.
func TestServeInputError(t *testing.T) {
	t.Parallel()
	addr, servers := serveLines(t, relayloop.Serving{})
	c := dial(t, addr)
	_, _ = io.WriteString(c, "a\nbad\nnever\n")
	got, _ := io.ReadAll(c)
	if string(got) != "A\nERR\n" {
		t.Errorf("before the close: %q, want A and ERR only", got)
	}
	s := <-servers
	if r := s.result(t); r.Err == nil || r.Err.Error() != "a bad line" {
		t.Errorf("Done: %+v, want Input's error", r)
	}
}

// A client that takes none of the output for WriteTimeout is closed; one
// that takes it slowly, within the timeout each time, gets all of it.
func TestServeWriteTimeout(t *testing.T) {
	t.Parallel()
	addr, servers := serveLines(t, relayloop.Serving{WriteTimeout: time.Second})

	stuck := dial(t, addr)
	_ = stuck.SetReadBuffer(4096)
	_, _ = io.WriteString(stuck, "big 50000000\n") // far past the sockets' buffers
	s := <-servers
	if r := s.result(t); r.Err == nil || !strings.Contains(r.Err.Error(), "write timeout") {
		t.Errorf("a client that reads nothing: Done %+v, want the write timeout", r)
	}

	slow := dial(t, addr)
	_, _ = io.WriteString(slow, "big 8000000\nquit\n")
	s = <-servers
	var got int
	buf := make([]byte, 256<<10)
	for {
		time.Sleep(10 * time.Millisecond) // the output waits, within the timeout
		n, err := slow.Read(buf)
		got += n
		if err != nil {
			break
		}
	}
	if got != 8000000+4 {
		t.Errorf("a slow reader got %d bytes, want %d", got, 8000000+4)
	}
	if r := s.result(t); r.Err != nil {
		t.Errorf("slow reader: Done %+v", r)
	}
}

// Verdict.Serve for a Session that is not a Server closes the
// connection with an error rather than serving nothing.
func TestServeNeedsAServer(t *testing.T) {
	t.Parallel()
	s := &session{
		done: make(chan relayloop.Result, 1),
		decide: func([]byte, relayloop.End) relayloop.Verdict {
			return relayloop.Verdict{Serve: &relayloop.Serving{}}
		},
	}
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("read: %v, want the connection closed", err)
	}
	if r := waitDone(t, s); r.Err == nil || !strings.Contains(r.Err.Error(), "not a Server") {
		t.Errorf("Done: %+v", r)
	}
}

// A client that sends faster than its Server takes its bytes cannot
// keep the loop to itself: the loop reads a served connection a bounded
// amount in one go, so another connection of the same loop is still
// answered while the flood goes on. The flood comes over a socket pair,
// which, unlike loopback TCP's windows, lets the writer refill the socket
// as soon as the loop reads (before, the second connection waited for
// the flood to end).
func TestServeFloodDoesNotStarveTheLoop(t *testing.T) {
	t.Parallel()
	h := handler(func(c *relayloop.Conn) relayloop.Session {
		return &lineServer{c: c, done: make(chan relayloop.Result, 1), ended: make(chan error, 1)}
	})
	addr, set := serve(t, relayloop.Options{Loops: 1}, h)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	flood := os.NewFile(uintptr(fds[1]), "flood")
	// Each read of it costs the loop a millisecond from its first bytes on.
	if _, err := set.Adopt(fds[0], netip.AddrPort{}, h, nil, []byte("slow\n")); err != nil {
		t.Fatal(err)
	}
	stop, flooded := make(chan struct{}), make(chan struct{})
	go func() { // one endless line: bytes to read, nothing to answer
		defer close(flooded)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := flood.Write(chunk); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); _ = flood.Close(); <-flooded })
	time.Sleep(50 * time.Millisecond) // the flood is under way

	c := dial(t, addr)
	br := bufio.NewReader(c)
	for i := range 20 {
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, br); got != "PING\n" {
			t.Fatalf("ping %d during the flood: %q", i, got)
		}
	}
}
