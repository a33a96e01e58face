package sniff

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// fuzzSniffer seeds f with every capture and a few synthetic first flights,
// and checks on every input: no panic, the prefix contract (NeedMore, then one
// stable verdict and Info), a zero Info unless Match, and the Info invariants
// of the protocol.
func fuzzSniffer(f *testing.F, sniff Func, extra func(t *testing.T, b []byte, v Verdict, info Info)) {
	for _, name := range corpusFiles(f) {
		f.Add(readCorpus(f, name))
	}
	f.Add(goClientHello(f, "fuzz.example", "h2", "http/1.1"))
	f.Add(records(handshakeOf(f, goClientHello(f, "fuzz.example", "h2")), 50))
	f.Add([]byte("GET /tunnel HTTP/1.1\r\nHost: [::1]:80\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: x\r\n\r\n"))
	f.Add([]byte("CONNECT a:1 HTTP/1.1\r\n\r\n"))
	f.Add([]byte(HTTP2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	f.Add([]byte("\x05\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if msg := prefixViolation(sniff, b); msg != "" {
			t.Fatal(msg)
		}
		v, info := sniff(b)
		if len(b) >= MaxBytes && v == NeedMore {
			t.Fatalf("NeedMore with %d bytes", len(b))
		}
		if extra != nil {
			extra(t, b, v, info)
		}
	})
}

func FuzzSSH(f *testing.F) {
	fuzzSniffer(f, SSH, func(t *testing.T, b []byte, v Verdict, info Info) {
		if v != Match {
			return
		}
		if !strings.HasPrefix(info.SSHVersion, sshPrefix20) && !strings.HasPrefix(info.SSHVersion, sshPrefix199) ||
			len(info.SSHVersion) > sshMaxLine || strings.ContainsAny(info.SSHVersion, "\r\n") {
			t.Fatalf("SSHVersion %q", info.SSHVersion)
		}
	})
}

// FuzzTLS also holds the sniffer to crypto/tls, the standard parser: whenever
// a Go server gets as far as asking for a config for a ClientHello, the
// sniffer must have matched it and seen the same SNI and ALPN, unless one of
// the sniffer's documented stricter rules refused it.
func FuzzTLS(f *testing.F) {
	fuzzSniffer(f, TLS, func(t *testing.T, b []byte, v Verdict, info Info) {
		if v == Match {
			if info.SNI != strings.ToLower(info.SNI) || strings.HasSuffix(info.SNI, ".") {
				t.Fatalf("SNI %q", info.SNI)
			}
			if slices.Contains(info.ALPN, "") {
				t.Fatalf("ALPN %q", info.ALPN)
			}
		}
		chi, ok := goServerClientHello(clip(b))
		if !ok {
			return
		}
		if v != Match {
			if reason := stricterTLSRule(b, chi); reason != "" {
				return
			}
			t.Fatalf("crypto/tls accepts the ClientHello (SNI %q, ALPN %q), the sniffer says %v", chi.ServerName, chi.SupportedProtos, v)
		}
		if want := strings.ToLower(strings.TrimSuffix(chi.ServerName, ".")); info.SNI != want {
			t.Fatalf("SNI %q, crypto/tls: %q", info.SNI, chi.ServerName)
		}
		if !slices.Equal(info.ALPN, chi.SupportedProtos) {
			t.Fatalf("ALPN %q, crypto/tls: %q", info.ALPN, chi.SupportedProtos)
		}
	})
}

// stricterTLSRule names the documented rule by which the sniffer refuses a
// ClientHello that crypto/tls accepts, or "" if there is none. crypto/tls
// leaves some length limits of RFC 8446 §4.1.2 to later stages of its
// handshake; the sniffer applies them at once.
func stricterTLSRule(b []byte, chi *tls.ClientHelloInfo) string {
	if recordVersionOutside(b) {
		// Until it knows the version, crypto/tls takes any record
		// version below 16.0, in every record of the ClientHello.
		return "record version not 3.0 to 3.4"
	}
	hello, v := tlsClientHello(clip(b))
	if v != Match {
		return ""
	}
	s := cryptobyte.String(hello[tlsHandshakeHeaderLen:])
	var legacy uint16
	var sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&legacy) || !s.Skip(32) || !s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) || !s.ReadUint8LengthPrefixed(&compression) {
		return ""
	}
	switch {
	case legacy>>8 != 3:
		return "legacy_version not 3.x"
	case len(sessionID) > 32:
		return "legacy_session_id over 32 bytes"
	case len(suites) < 2 || len(suites)%2 != 0:
		return "cipher_suites empty or odd"
	case len(compression) < 1:
		return "legacy_compression_methods empty"
	}
	for _, c := range []byte(chi.ServerName) {
		if c <= ' ' || c >= 0x7f {
			return "SNI not printable ASCII"
		}
	}
	return ""
}

// recordVersionOutside says whether a record that carries part of the
// ClientHello in b has a version outside 3.0 to 3.4, which TLS's doc
// refuses in every such record.
func recordVersionOutside(b []byte) bool {
	var hs []byte // the handshake bytes of the records so far
	for len(b) >= tlsRecordHeaderLen && b[0] == tlsRecordTypeHandshake {
		if b[1] != 3 || b[2] > 4 {
			return true
		}
		n := int(b[3])<<8 | int(b[4])
		end := min(len(b), tlsRecordHeaderLen+n)
		hs = append(hs, b[tlsRecordHeaderLen:end]...)
		if len(hs) >= tlsHandshakeHeaderLen {
			bodyLen := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
			if len(hs) >= tlsHandshakeHeaderLen+bodyLen {
				return false // the ClientHello ends in this record
			}
		}
		if n == 0 || end < tlsRecordHeaderLen+n {
			return false
		}
		b = b[end:]
	}
	return false
}

// goServerClientHello runs a crypto/tls server on b and returns what it
// parsed of the ClientHello, if it got that far.
func goServerClientHello(b []byte) (*tls.ClientHelloInfo, bool) {
	conn := &scriptConn{}
	conn.script.Reset(b)
	var got *tls.ClientHelloInfo
	srv := tls.Server(conn, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			got = chi
			return nil, errors.New("stop after the ClientHello")
		},
	})
	_ = srv.Handshake()
	return got, got != nil
}

func FuzzHTTP(f *testing.F) {
	fuzzSniffer(f, HTTP, checkHTTPInfo)
}

func FuzzWebSocket(f *testing.F) {
	fuzzSniffer(f, WebSocket, func(t *testing.T, b []byte, v Verdict, info Info) {
		checkHTTPInfo(t, b, v, info)
		if v == Match && !info.WebSocket {
			t.Fatal("WebSocket Match without WebSocket")
		}
		if hv, hinfo := HTTP(b); v == Match && (hv != Match || !sameInfo(hinfo, info)) {
			t.Fatalf("WebSocket matches, HTTP says %v %+v", hv, hinfo)
		}
	})
}

// checkHTTPInfo holds HTTP's Info to its documentation, and a Match to
// net/http's parser.
func checkHTTPInfo(t *testing.T, b []byte, v Verdict, info Info) {
	if v != Match {
		return
	}
	if info.Host != strings.ToLower(info.Host) || strings.HasSuffix(info.Host, ".") || strings.ContainsAny(info.Host, "[]/ ") {
		t.Fatalf("Host %q", info.Host)
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(clip(b))))
	if err != nil {
		t.Fatalf("Match, but net/http: %v", err)
	}
	if req.Method != info.Method {
		t.Fatalf("Method %q, net/http %q", info.Method, req.Method)
	}
}

func FuzzOpenVPN(f *testing.F) {
	fuzzSniffer(f, OpenVPN, func(t *testing.T, b []byte, v Verdict, info Info) {
		if v == Match && info.OpenVPNOpcode != openvpnHardResetV2 && info.OpenVPNOpcode != openvpnHardResetV3 {
			t.Fatalf("opcode %d", info.OpenVPNOpcode)
		}
	})
}

func FuzzSOCKS5(f *testing.F) {
	fuzzSniffer(f, SOCKS5, func(t *testing.T, b []byte, v Verdict, info Info) {
		if v == Match && (b[0] != socks5Version || b[1] == 0 || len(b) < 2+int(b[1])) {
			t.Fatalf("Match on %x", b)
		}
	})
}
