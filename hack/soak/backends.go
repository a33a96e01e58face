package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/portmux/portmux/hack/internal/harness"
)

// backends are the real servers behind the routes: an SSH server whose
// exec requests echo their input, a TLS echo server for soak.test, an
// HTTP server that echoes a query value, and a TCP echo for the regex
// route.
type backends struct {
	ssh, tls, http, echo string
	// roots verifies the TLS server's certificate.
	roots *x509.CertPool

	closers []io.Closer
	wg      sync.WaitGroup
}

func startBackends() (*backends, error) {
	b := &backends{}
	var err error
	if b.ssh, err = b.serveSSH(); err != nil {
		return nil, err
	}
	if b.tls, err = b.serveTLS(); err != nil {
		return nil, err
	}
	if b.http, err = b.serveHTTP(); err != nil {
		return nil, err
	}
	if b.echo, err = b.serveTCP(nil, func(c net.Conn) { echo(c, c) }); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *backends) close() {
	for _, c := range b.closers {
		_ = c.Close()
	}
	b.wg.Wait()
}

// serveTCP accepts on a new loopback listener (wrapped by wrap, if set)
// and serves each connection on its own goroutine.
func (b *backends) serveTCP(wrap func(net.Listener) net.Listener, serve func(net.Conn)) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	b.closers = append(b.closers, ln)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			go func() {
				defer func() { _ = c.Close() }()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String(), nil
}

// echo copies what r delivers back to c, then half-closes c.
func echo(c net.Conn, r io.Reader) {
	if _, err := io.Copy(c, r); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

func (b *backends) serveSSH() (string, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return "", err
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(signer)
	return b.serveTCP(nil, func(c net.Conn) {
		_, chans, reqs, err := ssh.NewServerConn(c, cfg)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		for nc := range chans {
			if nc.ChannelType() != "session" {
				_ = nc.Reject(ssh.UnknownChannelType, "sessions only")
				continue
			}
			ch, creqs, err := nc.Accept()
			if err != nil {
				return
			}
			go serveSession(ch, creqs)
		}
	})
}

// serveSession answers an exec request by echoing the session's input,
// then exits 0.
func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer func() { _ = ch.Close() }()
	for r := range reqs {
		if r.Type != "exec" {
			_ = r.Reply(false, nil)
			continue
		}
		_ = r.Reply(true, nil)
		_, _ = io.Copy(ch, ch)
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
		return
	}
}

func (b *backends) serveTLS() (string, error) {
	cert, roots, err := harness.SelfSigned("soak.test")
	if err != nil {
		return "", err
	}
	b.roots = roots
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return b.serveTCP(func(ln net.Listener) net.Listener { return tls.NewListener(ln, cfg) }, func(c net.Conn) {
		echo(c, c)
	})
}

func (b *backends) serveHTTP() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.URL.Query().Get("t"))
		}),
	}
	b.closers = append(b.closers, srv)
	b.wg.Add(1)
	go func() { defer b.wg.Done(); _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// config is the PortMux the soak serves: one listener with the routes the
// legitimate clients and the attackers use. Limits and timeouts are the
// defaults: they are what is under test.
func config(port int, b *backends) string {
	return fmt.Sprintf(`apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: soak}
spec:
  listeners:
  - {name: public, port: %d}
  routes:
  - {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {address: %q}}
  - {name: tls, listeners: [public], match: {protocol: tls, sni: [soak.test]}, backend: {address: %q}}
  - {name: web, listeners: [public], match: {protocol: http}, backend: {address: %q, mode: http}}
  - {name: magic, listeners: [public], match: {protocol: bytes, regex: 'ne(v|w)er[a-z]+match'}, backend: {address: %q}}
`, port, b.ssh, b.tls, b.http, b.echo)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
