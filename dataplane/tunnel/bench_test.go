package tunnel_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"

	"github.com/portmux/portmux/test/peers"
)

// benchTunnel is the whole path of a tunnel in one process: a local TCP
// port served by Client.ServeTCP, the dataplane with a ws:// tunnel route,
// and a target that counts what it receives (sink) or echoes (echo).
type benchTunnel struct {
	local    string
	received atomic.Int64
}

func startBenchTunnel(b *testing.B, handle func(bt *benchTunnel, c net.Conn)) *benchTunnel {
	b.Helper()
	bt := &benchTunnel{}
	backend := peers.NewTCPServer(b, func(c net.Conn) { handle(bt, c) })
	m := startMux(b, &snapshot.Tunnel{Token: []byte(testToken), Allow: []snapshot.TunnelTarget{target(false, []string{backend.Addr}, "bench:1")}}, nil)
	c := newClient(b, m.url)
	c.Log = c.Log.V(1) // quiet: one line per tunnel at V(1) would drown the output
	bt.local = serveTCP(b, c, "bench:1")
	return bt
}

func sink(bt *benchTunnel, c net.Conn) {
	buf := make([]byte, 256<<10)
	for {
		n, err := c.Read(buf)
		bt.received.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// BenchmarkTunnelThroughput sends 64 KiB chunks from a local TCP client
// through `portmux tunnel`'s client, a WebSocket over loopback and the
// dataplane's tunnel route to a TCP target, over one tunnel and over 16 at
// once. Bytes/s is the payload delivered to the target.
func BenchmarkTunnelThroughput(b *testing.B) {
	for _, tunnels := range []int{1, 16} {
		b.Run(fmt.Sprintf("tunnels=%d", tunnels), func(b *testing.B) {
			bt := startBenchTunnel(b, sink)
			conns := make([]net.Conn, tunnels)
			for i := range conns {
				c, err := net.Dial("tcp", bt.local)
				if err != nil {
					b.Fatal(err)
				}
				conns[i] = c
			}
			const chunk = 64 << 10
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := c.Write(buf); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			// Done when the target has everything, not when the local
			// socket took it.
			want := int64(b.N) * chunk
			deadline := time.Now().Add(time.Minute)
			for bt.received.Load() < want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			b.StopTimer()
			if got := bt.received.Load(); got != want {
				b.Fatalf("target received %d bytes, want %d", got, want)
			}
			for _, c := range conns {
				_ = c.Close()
			}
		})
	}
}

// BenchmarkTunnelSetup opens a tunnel per operation: a local TCP
// connection, the WebSocket handshake through the dataplane, the dial to
// the target, one byte echoed, and the close.
func BenchmarkTunnelSetup(b *testing.B) {
	bt := startBenchTunnel(b, func(_ *benchTunnel, c net.Conn) { _, _ = io.Copy(c, c) })
	one := []byte{'x'}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 1)
		for pb.Next() {
			c, err := net.Dial("tcp", bt.local)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Write(one); err != nil {
				b.Error(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Error(err)
			}
			_ = c.Close()
		}
	})
}
