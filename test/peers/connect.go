package peers

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HTTPProxy is an HTTP proxy on 127.0.0.1 that serves CONNECT only, as the
// proxy of a network that lets nothing else out does. It connects only to
// the host:port names in its table, each to the address given there, so a
// test can use a service's public name (vpn.example.com:443) without DNS.
// Any other request or name gets 403 and reaches nothing.
type HTTPProxy struct {
	// URL is http://127.0.0.1:Port, for --http-proxy, curl --proxy or
	// HTTPS_PROXY.
	URL string

	connects atomic.Int64
}

// ConnectProxy starts an HTTPProxy with the table routes (from a name
// "host:port" to the address to dial). It is closed, with every tunnel
// through it, by t.Cleanup.
func ConnectProxy(t testing.TB, routes map[string]string) *HTTPProxy {
	t.Helper()
	p := &HTTPProxy{}
	srv := NewTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(ReadyTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		addr, ok := routes[req.Host]
		if req.Method != http.MethodConnect || !ok {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		up, err := net.DialTimeout("tcp", addr, ReadyTimeout)
		if err != nil {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		defer func() { _ = up.Close() }()
		p.connects.Add(1)
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
		// Either side ending ends both: the peers here close whole
		// connections, and so the handler always returns.
		var once sync.Once
		closeBoth := func() { once.Do(func() { _ = c.Close(); _ = up.Close() }) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(up, br) // br first: the bytes read past the request
			closeBoth()
		}()
		_, _ = io.Copy(c, up)
		closeBoth()
		<-done
	})
	p.URL = "http://" + srv.Addr
	return p
}

// Connects is how many CONNECT requests it has carried.
func (p *HTTPProxy) Connects() int64 { return p.connects.Load() }
