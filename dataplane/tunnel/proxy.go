package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/portmux/portmux/dataplane/prefixconn"
)

// ProxyFromEnvironment chooses a proxy for a tunnel URL from HTTPS_PROXY
// (wss://), HTTP_PROXY (ws://) and NO_PROXY, upper or lower case, read at
// each call. As with every Go client, loopback addresses and "localhost"
// are never proxied.
func ProxyFromEnvironment(u *url.URL) (*url.URL, error) {
	return httpproxy.FromEnvironment().ProxyFunc()(httpURL(u))
}

// FixedProxy returns a proxy function that sends every tunnel through
// proxy, loopback included.
func FixedProxy(proxy *url.URL) func(*url.URL) (*url.URL, error) {
	return func(*url.URL) (*url.URL, error) { return proxy, nil }
}

// httpURL is u with the ws schemes turned into their HTTP ones.
func httpURL(u *url.URL) *url.URL {
	v := *u
	switch v.Scheme {
	case "ws":
		v.Scheme = "http"
	case "wss":
		v.Scheme = "https"
	}
	return &v
}

// dialConnect opens a TCP tunnel to addr (host:port) through an HTTP proxy
// with the CONNECT method (RFC 9110 §9.3.6), for ws:// as for wss://: a
// proxy that forwards plain requests rarely forwards an Upgrade, and CONNECT
// is what corporate proxies let out. An https:// proxy is reached over TLS
// first. Credentials in the proxy URL are sent as Basic
// Proxy-Authorization.
func dialConnect(ctx context.Context, d *net.Dialer, proxy *url.URL, addr string, proxyTLS *tls.Config) (net.Conn, error) {
	host := proxy.Host
	if proxy.Port() == "" {
		port := "80"
		if proxy.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(proxy.Hostname(), port)
	}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("dial proxy %s: %w", host, err)
	}
	// The exchange below is bounded by ctx: cancelling it closes the
	// connection, which ends a blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	switch proxy.Scheme {
	case "http", "":
	case "https":
		cfg := proxyTLS.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		cfg.ServerName = proxy.Hostname()
		cfg.NextProtos = nil
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("TLS to proxy %s: %w", host, err)
		}
		c = tc
	default:
		_ = c.Close()
		return nil, fmt.Errorf("proxy %s: scheme %q not supported (want http or https)", proxy.Redacted(), proxy.Scheme)
	}

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{},
	}
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pw))
		req.Header.Set("Proxy-Authorization", "Basic "+cred)
	}
	if err := req.Write(c); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("CONNECT through proxy %s: %w", host, ctxErr(ctx, err))
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("CONNECT through proxy %s: %w", host, ctxErr(ctx, err))
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_ = c.Close()
		return nil, fmt.Errorf("proxy %s refused CONNECT %s: %s", host, addr, resp.Status)
	}
	if !stop() {
		_ = c.Close()
		return nil, ctx.Err()
	}
	if n := br.Buffered(); n > 0 {
		// The server spoke before us (it should not, over HTTP): keep its
		// bytes.
		b, _ := br.Peek(n)
		return prefixconn.New(c, append([]byte(nil), b...)), nil
	}
	return c, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
