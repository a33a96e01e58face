// Command minhttp is the least a Go reverse proxy built on fasthttp and
// the standard library's HTTP/2 server does: accept, read each HTTP/1.1
// request with fasthttp's server and each HTTP/2 stream with net/http's
// (h2c with prior knowledge in clear, h2 by ALPN after TLS), add X-Forwarded-For, send
// it on a kept-alive connection of fasthttp's HostClient to one backend
// and write the response back. It routes nothing, limits nothing,
// counts nothing and logs nothing.
//
// It exists for the benchmarks only (hack/bench-http.sh, peer go-minimal):
// measured in the same run as portmux's http mode, which is built on the
// same libraries (its own HTTP/2 server on x/net's frames and HPACK), it
// shows what a goroutine per connection, and per HTTP/2 stream, costs by
// itself, so that what portmux adds on top can be read off and what
// separates both from haproxy is seen to be the model's.
//
// Usage:
//
//	minhttp -listen 127.0.0.1:17443 -target 127.0.0.1:17180
//	minhttp -listen 127.0.0.1:17443 -tls-listen 127.0.0.1:17444 -tls-cert c.pem -tls-key k.pem -target 127.0.0.1:17180
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane/prefixconn"
)

// conns is a listener of connections accepted elsewhere: the HTTP/2 ones,
// for net/http's server.
type conns struct {
	ch   chan net.Conn
	addr net.Addr
}

func (l *conns) Accept() (net.Conn, error) { return <-l.ch, nil }
func (l *conns) Close() error              { return nil }
func (l *conns) Addr() net.Addr            { return l.addr }

func main() {
	listen := flag.String("listen", "127.0.0.1:17443", "address to accept plain connections on")
	tlsListen := flag.String("tls-listen", "", "address to accept TLS connections on (with -tls-cert and -tls-key)")
	target := flag.String("target", "127.0.0.1:17180", "the HTTP/1.1 backend every request goes to")
	certFile := flag.String("tls-cert", "", "PEM certificate of -tls-listen")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	p := newProxy(*target)
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
		go func() { fail(p.serve(tls.NewListener(tl, tlsConfig(cert)))) }()
	}
	fail(p.serve(l))
}

// tlsConfig offers h2 and HTTP/1.1 by ALPN.
func tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
}

// proxy sends every request to one backend: HTTP/1.1 through fasthttp's
// server, HTTP/2 through net/http's.
type proxy struct {
	backend *fasthttp.HostClient
	h1      *fasthttp.Server
	h2      *conns
}

func newProxy(target string) *proxy {
	p := &proxy{backend: &fasthttp.HostClient{Addr: target, MaxConns: 1024}}
	p.h1 = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			req.Header.Set("X-Forwarded-For", ctx.RemoteIP().String())
			// A request read after TLS has an https URI, which the
			// plain HostClient refuses.
			req.URI().SetScheme("http")
			if err := p.backend.Do(req, &ctx.Response); err != nil {
				ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			}
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
	var protos http.Protocols
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	p.h2 = &conns{ch: make(chan net.Conn), addr: &net.TCPAddr{}}
	srv := &http.Server{Handler: http.HandlerFunc(p.stream), Protocols: &protos}
	go func() { _ = srv.Serve(p.h2) }()
	return p
}

// serve accepts until l fails; each connection is served on a goroutine.
func (p *proxy) serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go p.serveConn(c)
	}
}

// serveConn serves c as HTTP/2 when TLS chose h2 or the client opened
// with HTTP/2's preface, else as HTTP/1.1.
func (p *proxy) serveConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		if tc.Handshake() != nil {
			_ = tc.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
			p.h2.ch <- tc // net/http's server closes it
			return
		}
		_ = p.h1.ServeConn(tc)
		_ = tc.Close()
		return
	}
	read, h2 := peekPreface(bufio.NewReader(c))
	pc := prefixconn.New(c, read) // what the peek read comes first
	if h2 {
		p.h2.ch <- pc
		return
	}
	_ = p.h1.ServeConn(pc)
	_ = c.Close()
}

// peekPreface reads from br until its bytes are HTTP/2's preface or
// cannot be, and returns them: waiting for the preface's 24 bytes would
// hang on an HTTP/1.x request shorter than that (GET / HTTP/1.0 and no
// fields), whose first byte already tells.
func peekPreface(br *bufio.Reader) (read []byte, h2 bool) {
	for {
		read, _ = br.Peek(br.Buffered())
		switch {
		case !strings.HasPrefix(http2.ClientPreface, string(read[:min(len(read), len(http2.ClientPreface))])):
			return read, false
		case len(read) >= len(http2.ClientPreface):
			return read, true
		}
		if _, err := br.Peek(len(read) + 1); err != nil {
			read, _ = br.Peek(br.Buffered())
			return read, false
		}
	}
}

// hopFields are the response fields HTTP/2 has no place for.
var hopFields = map[string]bool{"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Upgrade": true, "Proxy-Connection": true}

// stream proxies one HTTP/2 stream: its request as an HTTP/1.1 request
// to the backend, the response back.
func (p *proxy) stream(w http.ResponseWriter, r *http.Request) {
	req := fasthttp.AcquireRequest()
	res := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(r.URL.RequestURI())
	req.Header.SetHost(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		req.Header.Set("X-Forwarded-For", host)
	}
	if r.ContentLength != 0 {
		req.SetBodyStream(r.Body, int(r.ContentLength))
	}
	if err := p.backend.Do(req, res); err != nil {
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return
	}
	hd := w.Header()
	for k, v := range res.Header.All() {
		if key := string(k); !hopFields[key] {
			hd[key] = append(hd[key], string(v))
		}
	}
	w.WriteHeader(res.StatusCode())
	_, _ = w.Write(res.Body())
}
