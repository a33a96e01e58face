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
//	minrelay -listen 127.0.0.1:17443 -target 127.0.0.1:17001
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:17443", "address to accept connections on")
	target := flag.String("target", "127.0.0.1:17001", "address every connection is relayed to")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "minrelay:", err)
		os.Exit(1)
	}
	serve(l, *target)
}

// serve relays every connection l accepts, until the process is killed.
func serve(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			time.Sleep(5 * time.Millisecond) // out of descriptors: do not spin
			continue
		}
		go relay(c.(*net.TCPConn), target)
	}
}

// relay carries c to a new connection to target and back until both
// directions have ended.
func relay(c *net.TCPConn, target string) {
	defer func() { _ = c.Close() }()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	b := u.(*net.TCPConn)
	defer func() { _ = b.Close() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(b, c)
		_ = b.CloseWrite()
	}()
	_, _ = io.Copy(c, b)
	_ = c.CloseWrite()
	<-done
}
