package tunnel_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
)

// A tunnel endpoint allows one target, "echo:7", behind a bearer token; a
// client dials it through the tunnel and talks to it as to a TCP
// connection. In the dataplane the Handler is a route's; here a plain
// HTTP test server serves it.
func ExampleClient_Dial() {
	// The target: an echo server.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()

	// The tunnel endpoint.
	h := tunnel.NewHandler(&snapshot.Tunnel{
		Token: []byte("s3cret"),
		Allow: []snapshot.TunnelTarget{{
			Names:   []string{"echo:7"},
			Backend: snapshot.Backend{Name: "echo", Endpoints: []string{ln.Addr().String()}, DialTimeout: time.Second},
		}},
	}, tunnel.Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()

	// The client.
	u, _ := url.Parse(strings.Replace(srv.URL, "http://", "ws://", 1) + "/tunnel")
	c := &tunnel.Client{URL: u, Token: "s3cret"}
	s, err := c.Dial(context.Background(), "echo:7")
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer s.Close()
	_, _ = io.WriteString(s, "hello through the tunnel")
	_ = s.CloseWrite()
	got, _ := io.ReadAll(s)
	fmt.Println(string(got))

	// A target nobody allowed is refused before anything is dialled.
	_, err = c.Dial(context.Background(), "10.0.0.1:22")
	fmt.Println(err != nil)
	// Output:
	// hello through the tunnel
	// true
}
