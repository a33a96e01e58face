//go:build linux

package udp

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/ipv4"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// benchRelay is a relay with an any route to an echo backend.
func benchRelay(b *testing.B, batch int) *Relay {
	be := peers.UDPReply(b, echo)
	l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr))
	r, err := Listen(l.Address, Options{Batch: batch, Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	if err := r.SetListener(&l); err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkRelay measures datagrams relayed both ways through one echo
// backend: each session's client keeps a window of datagrams of 1200
// bytes in flight. An op is one datagram there and back.
func BenchmarkRelay(b *testing.B) {
	const size, window = 1200, 8
	for _, sessions := range []int{1, 64} {
		for _, batch := range []int{1, DefaultBatch, 32} {
			b.Run(fmt.Sprintf("sessions=%d/batch=%d", sessions, batch), func(b *testing.B) {
				r := benchRelay(b, batch)
				clients := make([]*net.UDPConn, sessions)
				for i := range clients {
					clients[i] = client(b, r.Addr().String())
					exchange(b, clients[i], []byte("hello"))
				}
				b.SetBytes(2 * size)
				b.ResetTimer()
				var wg sync.WaitGroup
				per := b.N/sessions + 1
				for _, c := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						d := make([]byte, size)
						buf := make([]byte, 2048)
						_ = c.SetReadDeadline(time.Now().Add(time.Minute))
						inflight := 0
						for sent, got := 0, 0; got < per; {
							for inflight < window && sent < per {
								if _, err := c.Write(d); err != nil {
									return
								}
								sent++
								inflight++
							}
							// A drop (full socket buffer) is retried by
							// sending one more; the count stays exact.
							_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
							if _, err := c.Read(buf); err != nil {
								inflight--
								sent--
								continue
							}
							got++
							inflight--
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}

// BenchmarkSessionSetup is a new client address to a first reply: a
// session made, its backend socket opened, one datagram each way.
func BenchmarkSessionSetup(b *testing.B) {
	r := benchRelay(b, DefaultBatch)
	dns := capture(b, "sniff", "udp/dns_query_dig.bin")
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("udp", r.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		exchange(b, c, dns)
		_ = c.Close()
	}
}

// BenchmarkIdleSession reports the Go heap one idle session holds, beyond
// its kernel socket: 2000 sessions are made, then the heap is measured.
// Each op makes 2000 client sockets: run it with -benchtime=2x.
func BenchmarkIdleSession(b *testing.B) {
	const n = 2000
	r := benchRelay(b, DefaultBatch)
	clients := make([]*net.UDPConn, n)
	for i := range clients {
		clients[i] = client(b, r.Addr().String())
	}
	var before, after runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, c := range clients {
			exchange(b, c, []byte("x"))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.StopTimer()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/session")
		_ = r.Close()
		if r.Sessions() != 0 {
			b.Fatal("sessions left")
		}
		r = benchRelay(b, DefaultBatch)
		for i := range clients {
			clients[i] = client(b, r.Addr().String())
		}
		b.StartTimer()
	}
}

// BenchmarkRelayDownload measures a bulk download through the relay: one
// session's backend answers each request with 64 datagrams of 1200 bytes,
// 16 per system call, written with UDP_SEGMENT (backend=gso, as quic-go
// sends) or with sendmmsg (backend=plain); the client keeps 4 requests
// outstanding and reads with recvmmsg. An op is one datagram received by
// the client. cpu-ns/dgram is the whole process's (relay, backend and
// client together), from getrusage; relay=direct is the client reading
// from the backend itself, what the peers cost without the relay.
// relay-gso=off reads and sends datagram by datagram, =on keeps the
// backend's segmented buffers whole, =join also joins runs of datagrams
// the backend sent one by one.
func BenchmarkRelayDownload(b *testing.B) {
	for _, gso := range []bool{false, true} {
		name := "backend=plain"
		if gso {
			name = "backend=gso"
		}
		b.Run(name+"/relay=direct", func(b *testing.B) {
			benchDownload(b, "127.0.0.1", gso, Options{}, true)
		})
		for _, relay := range []string{"off", "on", "join"} {
			b.Run(name+"/relay-gso="+relay, func(b *testing.B) {
				benchDownload(b, "127.0.0.1", gso, Options{noGSO: relay == "off", noJoin: relay != "join"}, false)
			})
		}
	}
}

func benchDownload(b *testing.B, host string, gso bool, opt Options, direct bool) {
	const chunk, window = 64, 4
	be := burstBackend(b, net.JoinHostPort(host, "0"), gso)
	to := be
	if !direct {
		to = benchDownloadRelay(b, host, be, opt)
	}
	c := client(b, to)
	_ = c.SetReadBuffer(4 << 20)
	req := burstRequest{count: chunk, size: 1200, last: 1200, seg: 16}.marshal()
	pc := ipv4.NewPacketConn(c)
	ms := make([]ipv4.Message, 64)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	windowLoop(b, c, window*chunk, func() int {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		return chunk
	}, func() (int, error) { return pc.ReadBatch(ms, 0) })
}

// benchDownloadRelay is a relay on host to the backend be.
func benchDownloadRelay(b *testing.B, host, be string, opt Options) string {
	l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be))
	l.Address = net.JoinHostPort(host, "0")
	opt.Log = logr.Discard()
	r, err := Listen(l.Address, opt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	if err := r.SetListener(&l); err != nil {
		b.Fatal(err)
	}
	return r.Addr().String()
}

// BenchmarkRelayUpload measures a bulk upload through the relay: one
// client sends datagrams of 1200 bytes, 16 per system call, as one buffer
// with UDP_SEGMENT (client=gso, as quic-go sends) or with sendmmsg
// (client=plain), keeping 4 runs of 64 unacknowledged; the backend
// acknowledges every 64. An op is one datagram the backend received.
// listen-gro=on reads a client's segmented buffer whole and cuts it in
// the relay; =off lets the kernel cut it; =join also sends runs of
// datagrams to the backend as segmented messages, =off-join without
// GRO on the listener. cpu-ns/dgram as in
// BenchmarkRelayDownload.
func BenchmarkRelayUpload(b *testing.B) {
	for _, gso := range []bool{false, true} {
		name := "client=plain"
		if gso {
			name = "client=gso"
		}
		b.Run(name+"/relay=direct", func(b *testing.B) { benchUpload(b, gso, Options{}, true) })
		for _, v := range []struct {
			name                string
			noListenGRO, noJoin bool
		}{{"off", true, true}, {"on", false, true}, {"off-join", true, false}, {"join", false, false}} {
			b.Run(name+"/listen-gro="+v.name, func(b *testing.B) {
				benchUpload(b, gso, Options{noListenGRO: v.noListenGRO, noJoin: v.noJoin}, false)
			})
		}
	}
}

func benchUpload(b *testing.B, gso bool, opt Options, direct bool) {
	const chunk, seg, window = 64, 16, 4
	be := ackSink(b, chunk)
	to := be
	if !direct {
		to = benchDownloadRelay(b, "127.0.0.1", be, opt)
	}
	c := client(b, to)
	_ = c.SetWriteBuffer(4 << 20)
	pc := ipv4.NewPacketConn(c)
	d := make([]byte, 1200)
	ds := make([][]byte, seg)
	ms := make([]ipv4.Message, seg)
	for i := range ds {
		ds[i] = d
		ms[i].Buffers = [][]byte{d}
	}
	ack := make([]byte, 16)
	windowLoop(b, c, window*chunk, func() int {
		for range chunk / seg {
			if gso {
				sendSegmented(b, c, ds)
			} else if _, err := pc.WriteBatch(ms, 0); err != nil {
				b.Fatal(err)
			}
		}
		return chunk
	}, func() (int, error) {
		_, err := c.Read(ack)
		return chunk, err
	})
}

// windowLoop runs b.N datagrams through c keeping window of them
// outstanding: send sends more and says how many, done waits for some to
// be through and says how many. A wait of 200 ms that ends with none
// (datagrams lost to a full buffer) is a stall: what was outstanding is
// forgotten. It reports as cpuMeter does.
func windowLoop(b *testing.B, c *net.UDPConn, window int, send func() int, done func() (int, error)) {
	meter := startCPUMeter()
	b.ResetTimer()
	got, sent, stalls := 0, 0, 0
	for got < b.N {
		for sent-got < window {
			sent += send()
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := done()
		if err != nil {
			sent = got
			stalls++
			continue
		}
		got += n
	}
	b.StopTimer()
	meter.report(b, got, stalls)
}

// cpuMeter measures datagrams per second and the process's CPU time per
// datagram (getrusage) from its start.
type cpuMeter struct {
	start  time.Time
	before syscall.Rusage
}

func startCPUMeter() *cpuMeter {
	m := &cpuMeter{start: time.Now()}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &m.before)
	return m
}

// report reports dgrams/s, cpu-ns/dgram and the stalls (a window lost to
// a full buffer, waited out).
func (m *cpuMeter) report(b *testing.B, dgrams, stalls int) {
	elapsed := time.Since(m.start)
	var after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := after.Utime.Nano() + after.Stime.Nano() - m.before.Utime.Nano() - m.before.Stime.Nano()
	b.ReportMetric(float64(dgrams)/elapsed.Seconds(), "dgrams/s")
	b.ReportMetric(float64(cpu)/float64(dgrams), "cpu-ns/dgram")
	b.ReportMetric(float64(stalls), "stalls")
}
