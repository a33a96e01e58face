package tunnel_test

import (
	"bufio"
	"net/http"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// handshakeStatus sends one WebSocket handshake for path with Host host
// and the headers h, and returns the status of the answer. An upgraded
// tunnel is closed at once.
func handshakeStatus(t *testing.T, addr, host, path string, h http.Header) int {
	t.Helper()
	var status int
	handshake(t, addr, host, path, h, func(resp *http.Response, _ *bufio.Reader) {
		status = resp.StatusCode
		_ = resp.Body.Close()
	})
	return status
}

// TestBrowserOriginsMustBeListed: a handshake with an Origin header comes
// from a browser, on behalf of whatever page it shows. The tunnel takes it
// only from the origins in its allowed list (scheme, host and port, without
// case, default ports implied); an Origin naming the Host the browser sent
// is no proof of anything (a page on a rebound DNS name sends both), and
// an empty list refuses every browser. Clients that send no Origin
// (portmux tunnel, wstunnel) are not concerned.
func TestBrowserOriginsMustBeListed(t *testing.T) {
	t.Parallel()
	allow := []snapshot.TunnelTarget{echoTarget(t, "echo:7")}
	listed := startMux(t, &snapshot.Tunnel{Allow: allow, AllowedOrigins: []string{"https://app.example.com", "http://LOCALHOST:8080"}}, nil)
	unlisted := startMux(t, &snapshot.Tunnel{Allow: allow, AllowedOrigins: []string{"https://app.example.com", "http://LOCALHOST:8080"}}, nil)
	const path = "/tunnel?target=echo:7"
	for _, tc := range []struct {
		name   string
		m      *mux
		host   string
		origin string // "": no Origin header
		want   int
	}{
		{"no Origin, empty list", unlisted, "vpn.example.com", "", http.StatusSwitchingProtocols},
		{"no Origin, listed origins", listed, "vpn.example.com", "", http.StatusSwitchingProtocols},
		{"Origin equal to Host, empty list (DNS rebinding)", unlisted, "evil.example", "http://evil.example", http.StatusForbidden},
		{"Origin equal to Host with port, empty list", unlisted, "vpn.example.com:8443", "https://vpn.example.com:8443", http.StatusForbidden},
		{"Origin equal to Host, not listed", listed, "evil.example", "http://evil.example", http.StatusForbidden},
		{"listed", listed, "vpn.example.com", "https://app.example.com", http.StatusSwitchingProtocols},
		{"listed, other case, default port written", listed, "vpn.example.com", "HTTPS://App.Example.COM:443", http.StatusSwitchingProtocols},
		{"listed with its port", listed, "vpn.example.com", "http://localhost:8080", http.StatusSwitchingProtocols},
		{"listed host, other port", listed, "vpn.example.com", "https://app.example.com:8443", http.StatusForbidden},
		{"listed host, other scheme", listed, "vpn.example.com", "http://app.example.com", http.StatusForbidden},
		{"listed host, port left out", listed, "vpn.example.com", "http://localhost", http.StatusForbidden},
		{"a subdomain of a listed host", listed, "vpn.example.com", "https://evil.app.example.com", http.StatusForbidden},
		{"opaque origin", listed, "vpn.example.com", "null", http.StatusForbidden},
		{"not an origin", listed, "vpn.example.com", "https://app.example.com/page", http.StatusForbidden},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		if got := handshakeStatus(t, tc.m.addr, tc.host, path, h); got != tc.want {
			t.Errorf("%s: Origin %q, Host %q: status %d, want %d", tc.name, tc.origin, tc.host, got, tc.want)
		}
	}
}
