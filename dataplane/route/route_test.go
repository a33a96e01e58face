package route

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

func corpus(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "sniff", "testdata", "corpus", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func routes(ms ...snapshot.Match) []snapshot.Route {
	out := make([]snapshot.Route, len(ms))
	for i, m := range ms {
		out[i] = snapshot.Route{Name: string(m.Protocol), Match: m}
	}
	return out
}

func TestDecide(t *testing.T) {
	sshHello := corpus(t, "ssh_client_first_flight.bin")
	tlsHello := corpus(t, "tls13_clienthello_curl.bin") // SNI example.test, ALPN h2,http/1.1
	httpGet := corpus(t, "http11_get_curl.bin")
	wsUpgrade := corpus(t, "http11_websocket_upgrade_curl.bin")
	ovpn := corpus(t, "openvpn_tcp_client_hard_reset_v2.bin")

	ssh := snapshot.Match{Protocol: snapshot.SSH}
	anyTLS := snapshot.Match{Protocol: snapshot.TLS}
	tlsOther := snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"other.test"}}
	tlsExample := snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"example.test"}}
	tlsWild := snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"*.test"}}
	tlsH2 := snapshot.Match{Protocol: snapshot.TLS, ALPN: []string{"h2"}}
	tlsACME := snapshot.Match{Protocol: snapshot.TLS, ALPN: []string{"acme-tls/1"}}
	httpM := snapshot.Match{Protocol: snapshot.HTTP}
	ws := snapshot.Match{Protocol: snapshot.WebSocket}
	openvpn := snapshot.Match{Protocol: snapshot.OpenVPN}
	anyM := snapshot.Match{Protocol: snapshot.Any}
	timeout := snapshot.Match{Protocol: snapshot.Timeout}
	prefix := snapshot.Match{Protocol: snapshot.Bytes, Prefix: []byte("HELLO")}
	regex := snapshot.Match{Protocol: snapshot.Bytes, Regex: regexp.MustCompile(`^[0-9]+\n`)}

	tests := []struct {
		name     string
		routes   []snapshot.Route
		data     []byte
		done     bool
		want     int
		needMore bool
	}{
		{"ssh first", routes(ssh, anyTLS, anyM), sshHello, false, 0, false},
		{"tls skips ssh", routes(ssh, anyTLS, anyM), tlsHello, false, 1, false},
		{"sni picks the named route", routes(tlsOther, tlsExample, anyM), tlsHello, false, 1, false},
		{"sni wildcard", routes(tlsOther, tlsWild), tlsHello, false, 1, false},
		{"no sni match falls through", routes(tlsOther, anyM), tlsHello, false, 1, false},
		{"alpn", routes(tlsACME, tlsH2), tlsHello, false, 1, false},
		{"http", routes(ssh, anyTLS, httpM), httpGet, false, 2, false},
		{"websocket before http", routes(ws, httpM), wsUpgrade, false, 0, false},
		{"plain GET is not websocket", routes(ws, httpM), httpGet, false, 1, false},
		{"openvpn", routes(ssh, anyTLS, openvpn), ovpn, false, 2, false},
		{"half a ClientHello waits", routes(anyTLS, anyM), tlsHello[:40], false, -1, true},
		{"half a ClientHello at probe end falls to any", routes(anyTLS, anyM), tlsHello[:40], true, 1, false},
		{"half a ClientHello at probe end without fallback", routes(anyTLS), tlsHello[:40], true, -1, false},
		{"nothing yet waits", routes(ssh, timeout), nil, false, -1, true},
		{"silence matches timeout", routes(ssh, timeout, anyM), nil, true, 1, false},
		{"bytes do not match timeout", routes(timeout, anyM), []byte("x"), false, 1, false},
		{"any first decides at once", routes(anyM, ssh), nil, false, 0, false},
		{"garbage matches nothing", routes(ssh, anyTLS, httpM, openvpn), []byte("\x00\x01garbage\xff"), false, -1, false},
		{"prefix", routes(ssh, prefix), []byte("HELLO world"), false, 1, false},
		{"prefix needs more", routes(prefix), []byte("HEL"), false, -1, true},
		{"regex waits for a match", routes(regex, anyM), []byte("123"), false, -1, true},
		{"regex matches", routes(regex, anyM), []byte("123\n"), false, 0, false},
		{"regex gives up at probe end", routes(regex, anyM), []byte("123"), true, 1, false},
		{"first match wins even if a later one is more specific", routes(anyTLS, tlsExample), tlsHello, false, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.routes, tt.data, tt.done)
			if d.Route != tt.want || d.NeedMore != tt.needMore {
				t.Fatalf("Decide = route %d needMore %v, want route %d needMore %v", d.Route, d.NeedMore, tt.want, tt.needMore)
			}
		})
	}
}

func TestDecideReportsWhatTheSnifferFound(t *testing.T) {
	d := Decide(routes(snapshot.Match{Protocol: snapshot.TLS}), corpus(t, "tls13_clienthello_openssl_sni_alpn.bin"), false)
	if d.Route != 0 || d.Info.SNI != "example.test" {
		t.Fatalf("Decide = %+v, want route 0 with SNI example.test", d)
	}
	d = Decide(routes(snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"127.0.0.1"}, PathPrefix: "/index.html"}),
		corpus(t, "http11_get_curl.bin"), false)
	if d.Route != 0 {
		t.Fatalf("host and path: %+v", d)
	}
}

func TestPathPrefixSeesTheNormalisedPath(t *testing.T) {
	rs := routes(snapshot.Match{Protocol: snapshot.HTTP, PathPrefix: "/public"})
	for path, want := range map[string]int{
		"/public/x":          0,
		"/public/../admin":   -1,
		"//public/./x":       0,
		"/public/%2e%2e/adm": -1,
	} {
		req := []byte("GET " + path + " HTTP/1.1\r\nHost: a.test\r\n\r\n")
		if d := Decide(rs, req, false); d.Route != want {
			t.Errorf("%s: route %d, want %d", path, d.Route, want)
		}
	}
}

func TestHostMatches(t *testing.T) {
	tests := []struct {
		patterns []string
		name     string
		want     bool
	}{
		{[]string{"example.com"}, "example.com", true},
		{[]string{"example.com"}, "www.example.com", false},
		{[]string{"*.example.com"}, "www.example.com", true},
		{[]string{"*.example.com"}, "a.b.example.com", false},
		{[]string{"*.example.com"}, "example.com", false},
		{[]string{"*.example.com"}, ".example.com", false},
		{[]string{"**.example.com"}, "www.example.com", true},
		{[]string{"**.example.com"}, "a.b.example.com", true},
		{[]string{"**.example.com"}, "example.com", false},
		{[]string{"**.example.com"}, ".example.com", false},
		{[]string{"**.example.com"}, "wwwexample.com", false},
		{[]string{"**.com"}, "other.example.com", true},
		{[]string{"a.test", "b.test"}, "b.test", true},
		{[]string{"a.test"}, "", false},
	}
	for _, tt := range tests {
		if got := HostMatches(tt.patterns, tt.name); got != tt.want {
			t.Errorf("HostMatches(%v, %q) = %v, want %v", tt.patterns, tt.name, got, tt.want)
		}
	}
}

func TestPathHasPrefix(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"/tunnel", "/tunnel", true},
		{"/tunnel/x", "/tunnel", true},
		{"/tunnels", "/tunnel", false},
		{"/", "/", true},
		{"/anything", "/", true},
		{"/api/v1", "/api/", true},
		{"/ap", "/api", false},
	}
	for _, tt := range tests {
		if got := PathHasPrefix(tt.path, tt.prefix); got != tt.want {
			t.Errorf("PathHasPrefix(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}

func BenchmarkDecideSNI(b *testing.B) {
	hello, err := os.ReadFile(filepath.Join("..", "sniff", "testdata", "corpus", "tls13_clienthello_curl.bin"))
	if err != nil {
		b.Fatal(err)
	}
	rs := routes(
		snapshot.Match{Protocol: snapshot.SSH},
		snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"b.bench.test"}},
		snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"example.test"}},
		snapshot.Match{Protocol: snapshot.Any},
	)
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(rs, hello, false); d.Route != 2 {
			b.Fatal(d)
		}
	}
}
