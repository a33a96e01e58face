// Command minrelay is the least a Go TCP relay can do: accept, dial one
// target, copy both ways with io.Copy (splice between two TCP sockets) and
// half-close. It sniffs nothing, routes nothing, counts nothing and logs
// nothing.
//
// It exists for the benchmarks only (hack/bench.sh, hack/bench-tunnel.sh):
// measured in the same run as portmux and haproxy it shows the floor that
// Go's net package and goroutines set on connection rate and the ceiling
// that one (or, chained, two) zero-copy user-space hops set on throughput,
// so the cost of what portmux does on top can be read off directly.
//
// Two flags take away the zero copy the way a WebSocket tunnel must give
// it up, without any framing, so that two chained relays show the most a
// tunnel could carry under each constraint:
//
//   - -mask carries the accepted connection's bytes (the tunnel client's
//     upload) through a user-space buffer and XORs them, as RFC 6455 makes
//     every client mask and every server unmask what a client sends;
//   - -copy carries the other direction through a user-space buffer too,
//     as a WebSocket library that reads and writes frames through its own
//     buffers (coder/websocket, gorilla/websocket) must.
//
// Two more make it the ceiling of a tunnel over TLS (wss://), the way
// `openssl s_client` and `s_server` would forward, with no WebSocket at all:
// -tls-cert and -tls-key terminate TLS on the accepted connections, and
// -tls-target speaks TLS to the target (without verifying it: the two ends
// are the same benchmark's processes on loopback). Both use crypto/tls, the
// implementation portmux itself uses, so the difference is the tunnel's.
//
// With -udp it relays datagrams instead (hack/bench-udp.sh): a connected
// socket per client address and a goroutine per session, one datagram per
// system call, the floor of the obvious Go design on the net package.
//
// Usage:
//
//	minrelay -listen 127.0.0.1:17443 -target 127.0.0.1:17001
//	minrelay -mask -copy -listen 127.0.0.1:17443 -target 127.0.0.1:17001
//	minrelay -tls-cert c.pem -tls-key k.pem -listen 127.0.0.1:17480 -target 127.0.0.1:17001
//	minrelay -tls-target -listen 127.0.0.1:17443 -target 127.0.0.1:17480
//	minrelay -udp -listen 127.0.0.1:17443 -target 127.0.0.1:17012
package main

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// bufferSize is a user-space copy's buffer: the size of portmux's tunnel
// messages.
const bufferSize = 256 << 10

// maskKey XORs every byte with the same value, so that two chained relays
// restore the bytes whatever their read boundaries; it costs what a real
// 4-byte key costs.
const maskKey = 0x5a5a5a5a5a5a5a5a

// mode is how each direction is carried.
type mode struct {
	mask, copy bool
	// listenTLS, when set, terminates TLS on accepted connections.
	listenTLS *tls.Config
	// targetTLS, when set, wraps the connection to the target in TLS.
	targetTLS *tls.Config
}

// halfCloser is a connection that can end its writing direction alone:
// *net.TCPConn and *tls.Conn both can.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

func main() {
	listen := flag.String("listen", "127.0.0.1:17443", "address to accept connections on")
	target := flag.String("target", "127.0.0.1:17001", "address every connection is relayed to")
	var m mode
	flag.BoolVar(&m.mask, "mask", false, "carry the accepted connection's bytes through a user-space buffer and XOR them (WebSocket masking)")
	flag.BoolVar(&m.copy, "copy", false, "carry the target's bytes through a user-space buffer instead of splicing them")
	udp := flag.Bool("udp", false, "relay UDP datagrams instead of TCP connections")
	certFile := flag.String("tls-cert", "", "PEM certificate: terminate TLS on accepted connections (with -tls-key)")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	targetTLS := flag.Bool("tls-target", false, "speak TLS to the target, unverified (a benchmark's own process on loopback)")
	flag.Parse()
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "minrelay:", err)
			os.Exit(1)
		}
		m.listenTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if *targetTLS {
		m.targetTLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback benchmark peer, see the package comment
	}
	if *udp {
		if err := runUDP(*listen, *target); err != nil {
			fmt.Fprintln(os.Stderr, "minrelay:", err)
			os.Exit(1)
		}
		return
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "minrelay:", err)
		os.Exit(1)
	}
	serve(l, *target, m)
}

// runUDP binds listen and relays its datagrams to target.
func runUDP(listen, target string) error {
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return err
	}
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp", la)
	if err != nil {
		return err
	}
	serveUDP(pc, ta)
	return nil
}

// serve relays every connection l accepts, until l is closed.
func serve(l net.Listener, target string, m mode) {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(5 * time.Millisecond) // out of descriptors: do not spin
			continue
		}
		var hc halfCloser = c.(*net.TCPConn)
		if m.listenTLS != nil {
			hc = tls.Server(c, m.listenTLS)
		}
		go relay(hc, target, m)
	}
}

// relay carries c to a new connection to target and back until both
// directions have ended.
func relay(c halfCloser, target string, m mode) {
	defer func() { _ = c.Close() }()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	var b halfCloser = u.(*net.TCPConn)
	if m.targetTLS != nil {
		b = tls.Client(u, m.targetTLS)
	}
	defer func() { _ = b.Close() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if m.mask {
			copyThrough(b, c, true)
		} else {
			_, _ = io.Copy(b, c)
		}
		_ = b.CloseWrite()
	}()
	if m.copy {
		copyThrough(c, b, false)
	} else {
		_, _ = io.Copy(c, b)
	}
	_ = c.CloseWrite()
	<-done
}

// copyThrough copies src to dst through a buffer in user space (read,
// then write: never splice), XORing every byte when mask is set.
func copyThrough(dst, src net.Conn, mask bool) {
	buf := make([]byte, bufferSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if mask {
				xor(buf[:n])
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// xor masks p with maskKey, eight bytes at a time as WebSocket libraries do.
func xor(p []byte) {
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^maskKey)
	}
	for ; i < len(p); i++ {
		p[i] ^= maskKey & 0xff
	}
}
