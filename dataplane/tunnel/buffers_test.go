package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

// TestBufferMemoryBounded: clients that let a target's bytes pile up
// (they read nothing) make each tunnel direction hold its copy buffer.
// Past Buffers.Max big buffers the others get small ones: the memory held
// stops at the bound, and every byte still arrives once the clients read.
func TestBufferMemoryBounded(t *testing.T) {
	t.Parallel()
	payload := make([]byte, stallingPayload(t))
	_, _ = rand.Read(payload)
	b := peers.NewTCPServer(t, func(c net.Conn) {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	bufs := &tunnel.Buffers{Max: 2}
	hs := startHandler(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "flood:1")}},
		func(o *tunnel.Options) { o.Buffers = bufs; o.KeepAlive = -1 })
	c := newClient(t, "ws://"+hs.addr+"/tunnel")

	var streams []*tunnel.Stream
	for range 4 {
		s, err := c.Dial(context.Background(), "flood:1")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		streams = append(streams, s)
	}
	const bound = 2 * 256 << 10
	reached := within(10*time.Second, func() bool {
		if held := bufs.HeldBytes(); held > bound {
			t.Fatalf("big buffers hold %d bytes, over the bound %d", held, bound)
		}
		return bufs.HeldBytes() == bound
	})
	if !reached {
		t.Fatalf("the stalled tunnels hold %d bytes of big buffers, want them to reach the bound %d", bufs.HeldBytes(), bound)
	}
	for i, s := range streams {
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("tunnel %d: %d bytes (%v), want the %d sent", i, len(got), err, len(payload))
		}
	}
	if !within(10*time.Second, func() bool { return bufs.HeldBytes() == 0 }) {
		t.Errorf("after the transfers, big buffers still hold %d bytes", bufs.HeldBytes())
	}
}

// stallingPayload is how much each flood stream sends so that the relay's
// writes to the tunnel block: more than the tunnel's one TCP connection
// can take in flight. Loopback autotunes its buffers up to tcp_rmem's and
// tcp_wmem's maxima (32 MiB and 4 MiB on recent kernels), which a fast
// relay reaches; 4 MiB per stream used to be enough, and then was not.
func stallingPayload(t *testing.T) int {
	t.Helper()
	size := 4 << 20
	inflight := 0
	for _, f := range []string{"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/ipv4/tcp_wmem"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return size
		}
		fields := strings.Fields(string(b))
		if len(fields) != 3 {
			return size
		}
		n, err := strconv.Atoi(fields[2])
		if err != nil {
			return size
		}
		inflight += n
	}
	return max(size, inflight/2+size)
}
