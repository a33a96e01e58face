// Command minhttp is the least a Go HTTP/1.1 reverse proxy built on
// fasthttp does: accept, read each request with fasthttp's server, add
// X-Forwarded-For, send it on a kept-alive connection of fasthttp's
// HostClient to one backend and write the response back. It routes
// nothing, limits nothing, counts nothing and logs nothing, and it speaks
// no HTTP/2.
//
// It exists for the benchmarks only (hack/bench-http.sh, peer go-minimal):
// measured in the same run as portmux's http mode, which is built on the
// same library, it shows what a goroutine per connection and fasthttp
// cost by themselves, so that what portmux adds on top can be read off
// and what separates both from haproxy is seen to be the model's.
//
// Usage:
//
//	minhttp -listen 127.0.0.1:17443 -target 127.0.0.1:17180
//	minhttp -listen 127.0.0.1:17443 -tls-listen 127.0.0.1:17444 -tls-cert c.pem -tls-key k.pem -target 127.0.0.1:17180
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:17443", "address to accept plain connections on")
	tlsListen := flag.String("tls-listen", "", "address to accept TLS connections on (with -tls-cert and -tls-key)")
	target := flag.String("target", "127.0.0.1:17180", "the HTTP/1.1 backend every request goes to")
	certFile := flag.String("tls-cert", "", "PEM certificate of -tls-listen")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	srv := newServer(*target)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "minhttp:", err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(err)
	}
	if *tlsListen != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail(err)
		}
		tl, err := net.Listen("tcp", *tlsListen)
		if err != nil {
			fail(err)
		}
		tl = tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
		go func() { fail(srv.Serve(tl)) }()
	}
	fail(srv.Serve(l))
}

// newServer is the proxy's server: every request goes to target.
func newServer(target string) *fasthttp.Server {
	backend := &fasthttp.HostClient{Addr: target, MaxConns: 1024}
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			req.Header.Set("X-Forwarded-For", ctx.RemoteIP().String())
			// A request read after TLS has an https URI, which the
			// plain HostClient refuses.
			req.URI().SetScheme("http")
			if err := backend.Do(req, &ctx.Response); err != nil {
				ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			}
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
}
