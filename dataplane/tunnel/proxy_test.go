package tunnel_test

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

func TestClientGoesOutThroughAnHTTPConnectProxy(t *testing.T) {
	t.Parallel()
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			m, c := echoMuxOver(t, scheme)
			p := startConnectProxy(t)
			withAuth := *p.url
			withAuth.User = url.UserPassword("alice", "s3cret")
			c.Proxy = tunnel.FixedProxy(&withAuth)

			local := serveTCP(t, c, "echo:7")
			for i := range 3 {
				conn, err := net.Dial("tcp", local)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = conn.Write([]byte("through the proxy"))
				_ = conn.(*net.TCPConn).CloseWrite()
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(conn)
				conn.Close()
				if err != nil || string(got) != "through the proxy" {
					t.Fatalf("connection %d: %q, %v", i, got, err)
				}
			}
			if n := p.connects.Load(); n != 3 {
				t.Fatalf("the proxy saw %d CONNECTs, want one per tunnel (3)", n)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
			for i, target := range p.targets {
				if target != m.addr || p.auth[i] != wantAuth {
					t.Fatalf("CONNECT %d to %q with %q, want %q with %q", i, target, p.auth[i], m.addr, wantAuth)
				}
			}
		})
	}
}

func TestProxyFromEnvironment(t *testing.T) {
	// Not parallel: it sets the environment.
	t.Setenv("HTTP_PROXY", "http://proxy.corp:3128")
	t.Setenv("HTTPS_PROXY", "http://secure-proxy.corp:3128")
	t.Setenv("NO_PROXY", "internal.corp")
	for _, tc := range []struct{ url, want string }{
		{"ws://edge.example.com/tunnel", "http://proxy.corp:3128"},
		{"wss://edge.example.com/tunnel", "http://secure-proxy.corp:3128"},
		{"wss://edge.internal.corp/tunnel", ""},
		{"ws://127.0.0.1:8080/tunnel", ""}, // loopback is never proxied from the environment
	} {
		u, _ := url.Parse(tc.url)
		p, err := tunnel.ProxyFromEnvironment(u)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if p != nil {
			got = p.String()
		}
		if got != tc.want {
			t.Errorf("%s: proxy %q, want %q", tc.url, got, tc.want)
		}
	}
}

func TestProxyRefusingConnectFailsTheHandshake(t *testing.T) {
	t.Parallel()
	b := peers.NewTCPServer(t, echo)
	m := startMux(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "echo:7")}}, nil)
	// A "proxy" that is the backend's echo: it answers no CONNECT.
	silent := peers.NewTCPServer(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
	})
	c := newClient(t, m.url)
	c.Proxy = tunnel.FixedProxy(&url.URL{Scheme: "http", Host: silent.Addr})
	_, err := c.Dial(context.Background(), "echo:7")
	if err == nil {
		t.Fatal("dialled through a proxy that refused CONNECT")
	}
	if b.Accepted() != 0 {
		t.Fatal("the backend was reached")
	}
}
