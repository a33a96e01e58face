package tunnel_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"

	"github.com/portmux/portmux/test/peers"
)

func TestRefusalsHappenBeforeAnythingIsDialled(t *testing.T) {
	t.Parallel()
	b := peers.NewTCPServer(t, echo)
	m := startMux(t, &snapshot.Tunnel{Token: []byte(testToken), Allow: []snapshot.TunnelTarget{
		target(false, []string{b.Addr}, "echo:7", "echo:echo"),
		target(true, []string{"127.0.0.1:9"}, "dns:53"),
	}}, nil)

	for _, tc := range []struct {
		name   string
		url    string
		token  string
		target string
		status int // 0: no HTTP answer at all
	}{
		{name: "target outside allow", url: m.url, token: testToken, target: "other:22", status: 403},
		{name: "an allowed target's endpoint by address", url: m.url, token: testToken, target: b.Addr, status: 403},
		{name: "missing token", url: m.url, target: "echo:7", status: 401},
		{name: "wrong token", url: m.url, token: "correct horse battery stapler", target: "echo:7", status: 401},
		{name: "wrong token, same length", url: m.url, token: strings.Repeat("x", len(testToken)), target: "echo:7", status: 401},
		{name: "missing token, target outside allow", url: m.url, target: "other:22", status: 401},
		{name: "path the route does not match", url: strings.TrimSuffix(m.url, "/tunnel") + "/elsewhere", token: testToken, target: "echo:7"},
		{name: "path that only shares a prefix", url: m.url + "s", token: testToken, target: "echo:7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.url)
			c.Token = tc.token
			s, err := c.Dial(context.Background(), tc.target)
			if err == nil {
				_ = s.Close()
				t.Fatal("the tunnel was opened")
			}
			var re *tunnel.RefusedError
			switch {
			case tc.status == 0 && errors.As(err, &re):
				t.Fatalf("got an HTTP answer %v, want the connection closed (no route)", err)
			case tc.status != 0 && (!errors.As(err, &re) || re.Status != tc.status):
				t.Fatalf("error %v, want status %d", err, tc.status)
			}
		})
	}

	// UDP asked of a TCP target and TCP of a UDP one.
	for _, tc := range []struct{ target, protocol string }{{"echo:7", "udp"}, {"dns:53", "tcp"}} {
		resp, body := rawHandshake(t, m.addr, "/tunnel?target="+tc.target+"&protocol="+tc.protocol, http.Header{"Authorization": {"Bearer " + testToken}})
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not allowed over "+tc.protocol) {
			t.Errorf("%s over %s: %d %q, want 403 not allowed over %s", tc.target, tc.protocol, resp.StatusCode, body, tc.protocol)
		}
	}
	auth := http.Header{"Authorization": {"bearer " + testToken}} // the scheme is case-insensitive
	for _, tc := range []struct {
		name, path string
		header     http.Header
		status     int
		body       string
	}{
		{"missing target", "/tunnel", auth, 400, "missing target"},
		{"unknown protocol", "/tunnel?target=echo:7&protocol=sctp", auth, 400, "unknown protocol"},
		{"foreign origin", "/tunnel?target=echo:7", http.Header{"Authorization": auth["Authorization"], "Origin": {"https://evil.example"}}, 403, "cross-origin"},
		{"two tokens", "/tunnel?target=echo:7", http.Header{"Authorization": {"Bearer " + testToken, "Bearer " + testToken}}, 401, "bearer token"},
		{"basic auth", "/tunnel?target=echo:7", http.Header{"Authorization": {"Basic " + testToken}}, 401, "bearer token"},
	} {
		resp, body := rawHandshake(t, m.addr, tc.path, tc.header)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, want %d and %q", tc.name, resp.StatusCode, body, tc.status, tc.body)
		}
		if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
	}

	if n := b.Accepted(); n != 0 {
		t.Fatalf("the backend saw %d connections from refused requests", n)
	}
	// The same backend through an allowed request: its connection is the
	// first one, so the refused requests before it dialled nothing.
	s, err := newClient(t, m.url).Dial(context.Background(), "echo:echo")
	if err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	_, _ = io.ReadAll(s)
	_ = s.Close()
	if n := b.Accepted(); n != 1 {
		t.Fatalf("the backend saw %d connections, want the allowed one only", n)
	}
	m.waitTunnels(t, tunnel.OutcomeUnauthorized, 6)
	m.waitTunnels(t, tunnel.OutcomeForbidden, 5)
	m.waitTunnels(t, tunnel.OutcomeBadRequest, 2)
}

// rawHandshake sends one WebSocket handshake for path and returns the
// answer and its body. The server must close the connection after a
// refusal.
func rawHandshake(t *testing.T, addr, path string, h http.Header) (resp *http.Response, body string) {
	t.Helper()
	handshake(t, addr, "", path, h, func(r *http.Response, br *bufio.Reader) {
		resp = r
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		body = string(b)
		if !resp.Close {
			t.Errorf("%s: a refusal without Connection: close", path)
		}
		if n, err := br.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: %d more bytes after the refusal, want the connection closed", path, n)
		}
	})
	return resp, body
}

func TestMissingTokenSecretRefusesEverything(t *testing.T) {
	t.Parallel()
	b := peers.NewTCPServer(t, echo)
	// What compile produces when auth names a Secret that does not exist.
	m := startMux(t, &snapshot.Tunnel{Token: []byte{}, Allow: nil}, nil)
	for _, tok := range []string{"", testToken} {
		c := newClient(t, m.url)
		c.Token = tok
		_, err := c.Dial(context.Background(), b.Addr)
		var re *tunnel.RefusedError
		if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
			t.Fatalf("token %q: %v, want 503", tok, err)
		}
	}
	if n := b.Accepted(); n != 0 {
		t.Fatalf("the backend saw %d connections", n)
	}
	m.waitTunnels(t, tunnel.OutcomeUnavailable, 2)
}

func TestUnreachableTargetIsABadGateway(t *testing.T) {
	t.Parallel()
	// A port that was bound and released refuses at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	m := startMux(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{dead}, "gone:1")}}, nil)
	c := newClient(t, m.url)
	_, err = c.Dial(context.Background(), "gone:1")
	var re *tunnel.RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusBadGateway || !strings.Contains(re.Message, "gone:1") {
		t.Fatalf("%v, want 502 naming the target", err)
	}
	if strings.Contains(re.Message, dead) {
		t.Fatalf("the 502 tells the client the endpoint: %q", re.Message)
	}
	m.waitTunnels(t, tunnel.OutcomeDialError, 1)

	// A 502 may pass (an endpoint coming up): a local connection's
	// handshake is retried, then the connection is closed.
	c.Retries = 2
	conn, err := net.Dial("tcp", serveTCP(t, c, "gone:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection whose tunnel failed", n)
	}
	m.waitTunnels(t, tunnel.OutcomeDialError, 1+3)
}
