package sniff

import (
	"testing"
)

// benchSniff runs f over one input, reporting allocations: the sniffers run
// per connection, so the Match and NoMatch paths are both hot.
func benchSniff(b *testing.B, f Func, in []byte, want Verdict) {
	b.Helper()
	if v, _ := f(in); v != want {
		b.Fatalf("got %v, want %v", v, want)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f(in)
	}
}

// benchInputs is the first flight of each protocol, plus a Go ClientHello
// with a post-quantum key share, whole and cut into 100-byte records.
func benchInputs(b *testing.B) map[string][]byte {
	goHello := goClientHello(b, "bench.example", "h2", "http/1.1")
	return map[string][]byte{
		"ssh":           readCorpus(b, "ssh_client_first_flight.bin"),
		"tls-openssl":   readCorpus(b, "tls13_clienthello_openssl_sni_alpn.bin"),
		"tls-curl":      readCorpus(b, "tls13_clienthello_curl.bin"),
		"tls-go-pq":     goHello,
		"tls-go-pq-100": records(handshakeOf(b, goHello), 100),
		"http":          readCorpus(b, "http11_get_curl.bin"),
		"websocket":     readCorpus(b, "http11_websocket_upgrade_curl.bin"),
		"openvpn":       readCorpus(b, "openvpn_tcp_client_hard_reset_v2.bin"),
		"openvpn-v3":    readCorpus(b, "openvpn_tcp_client_hard_reset_v3_tls_crypt_v2.bin"),
		"socks5":        readCorpus(b, "socks5_greeting_curl.bin"),
	}
}

// benchProtocol benchmarks f on its own inputs (Match) and on the first
// flight of every other protocol (NoMatch, the common case when routes are
// tried in order).
func benchProtocol(b *testing.B, f Func, own ...string) {
	in := benchInputs(b)
	for _, name := range own {
		b.Run("match/"+name, func(b *testing.B) { benchSniff(b, f, in[name], Match) })
	}
	for _, name := range []string{"ssh", "tls-curl", "http", "openvpn", "socks5"} {
		if v, _ := f(in[name]); v == NoMatch {
			b.Run("nomatch/"+name, func(b *testing.B) { benchSniff(b, f, in[name], NoMatch) })
		}
	}
}

func BenchmarkSSH(b *testing.B) { benchProtocol(b, SSH, "ssh") }

func BenchmarkTLS(b *testing.B) {
	benchProtocol(b, TLS, "tls-openssl", "tls-curl", "tls-go-pq", "tls-go-pq-100")
}

func BenchmarkHTTP(b *testing.B) { benchProtocol(b, HTTP, "http", "websocket") }

func BenchmarkWebSocket(b *testing.B) { benchProtocol(b, WebSocket, "websocket") }

func BenchmarkOpenVPN(b *testing.B) { benchProtocol(b, OpenVPN, "openvpn", "openvpn-v3") }

func BenchmarkSOCKS5(b *testing.B) { benchProtocol(b, SOCKS5, "socks5") }
