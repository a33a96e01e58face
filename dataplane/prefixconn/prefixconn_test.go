package prefixconn_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/prefixconn"
	"github.com/portmux/portmux/test/peers"
)

// dial connects to s within peers.IOTimeout and closes the connection at
// cleanup.
func dial(t *testing.T, s *peers.TCPServer) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, peers.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(peers.IOTimeout))
	return c.(*net.TCPConn)
}

// TestReadsPrefixThenConnection: the reader sees the prefix, then what the
// peer sent, whatever its buffer's size, and the peer's end as EOF.
func TestReadsPrefixThenConnection(t *testing.T) {
	for _, tc := range []struct {
		name, pre, sent string
		buf             int
	}{
		{"no prefix", "", "rest", 3},
		{"prefix in one read", "SSH-2.0-", "x\r\n", 64},
		{"prefix over reads", "GET / HTTP/1.1\r\n", "\r\n", 4},
		{"nothing after the prefix", "\x16\x03\x01", "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := peers.NewTCPServer(t, func(c net.Conn) {
				_, _ = io.WriteString(c, tc.sent)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			})
			c := prefixconn.New(dial(t, s), []byte(tc.pre))
			var got []byte
			buf := make([]byte, tc.buf)
			for {
				if pc, ok := c.(*prefixconn.Conn); ok {
					// Buffered counts down what the prefix still holds.
					if want := len(tc.pre) - min(len(got), len(tc.pre)); pc.Buffered() != want {
						t.Fatalf("after reading %q: Buffered() = %d, want %d", got, pc.Buffered(), want)
					}
				}
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("read after %q: %v", got, err)
				}
			}
			if string(got) != tc.pre+tc.sent {
				t.Errorf("read %q, want %q", got, tc.pre+tc.sent)
			}
		})
	}
}

// TestUnwrapsAndHalfCloses: with no prefix the connection itself comes
// back; with one, NetConn gives the connection, and CloseWrite half-closes
// it: the peer reads EOF and can still answer.
func TestUnwrapsAndHalfCloses(t *testing.T) {
	s := peers.NewTCPServer(t, func(c net.Conn) {
		if _, err := io.Copy(io.Discard, c); err == nil {
			_, _ = io.WriteString(c, "still open")
		}
	})
	tc := dial(t, s)
	if c := prefixconn.New(tc, nil); c != net.Conn(tc) {
		t.Errorf("New with no prefix wrapped the connection: %T", c)
	}
	c := prefixconn.New(tc, []byte("x"))
	if nc := c.(interface{ NetConn() net.Conn }).NetConn(); nc != net.Conn(tc) {
		t.Errorf("NetConn is %v, want the wrapped connection", nc)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "xstill open" {
		t.Fatalf("read %q, %v after the half-close; want the prefix and the peer's answer", got, err)
	}
}
