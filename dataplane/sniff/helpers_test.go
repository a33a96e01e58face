package sniff

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// namedSniffer is a protocol sniffer and the match.protocol it decides.
type namedSniffer struct {
	name string
	f    Func
}

// sniffers are the protocol sniffers, decided by bytes alone, for tests
// that run every sniffer over every input. The table the router uses, from
// each protocol a route can match to its sniffer, is dataplane/route's.
func sniffers() []namedSniffer {
	return []namedSniffer{{"ssh", SSH}, {"tls", TLS}, {"http", HTTP}, {"websocket", WebSocket}, {"openvpn", OpenVPN}, {"socks5", SOCKS5}}
}

// readCorpus returns one capture from testdata/corpus.
func readCorpus(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "corpus", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corpusFiles lists testdata/corpus, so fuzz targets seed from every capture.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("testdata", "corpus"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".bin") {
			names = append(names, e.Name())
		}
	}
	return names
}

// sameInfo compares the Info of a prefix with that of the whole input. Only
// SSHVersion may differ, and only by the whole input's being longer.
func sameInfo(prefix, whole Info) bool {
	if strings.HasPrefix(whole.SSHVersion, prefix.SSHVersion) {
		prefix.SSHVersion = whole.SSHVersion
	}
	return reflect.DeepEqual(prefix, whole)
}

// prefixViolation checks the "bytes seen so far" contract of f on every
// prefix of b: NeedMore until some length, then from there on the verdict of
// the whole of b, with the same Info. It returns "" or what went wrong.
func prefixViolation(f Func, b []byte) string {
	final, finalInfo := f(b)
	decided := -1
	for k := 0; k <= len(b); k++ {
		v, info := f(b[:k])
		if v == NeedMore {
			if decided >= 0 {
				return fmt.Sprintf("prefix %d: %v after %v at prefix %d", k, v, final, decided)
			}
			if !reflect.DeepEqual(info, Info{}) {
				return fmt.Sprintf("prefix %d: NeedMore with Info %+v", k, info)
			}
			continue
		}
		if decided < 0 {
			decided = k
		}
		if v != final {
			return fmt.Sprintf("prefix %d: %v, whole input (%d bytes): %v", k, v, len(b), final)
		}
		if v == NoMatch && !reflect.DeepEqual(info, Info{}) {
			return fmt.Sprintf("prefix %d: NoMatch with Info %+v", k, info)
		}
		if v == Match && !sameInfo(info, finalInfo) {
			return fmt.Sprintf("prefix %d: Info %+v, whole input: %+v", k, info, finalInfo)
		}
	}
	return ""
}

// goClientHello captures the first flight of Go's own TLS client: one
// handshake record holding a ClientHello with the default key shares, the
// post-quantum X25519MLKEM768 among them, which makes it over 1 KiB.
func goClientHello(t testing.TB, serverName string, alpn ...string) []byte {
	t.Helper()
	conn := &scriptConn{}
	c := tls.Client(conn, &tls.Config{
		ServerName: serverName, NextProtos: alpn, MinVersion: tls.VersionTLS12,
		// Only the ClientHello is sent: nothing is verified, and
		// crypto/tls refuses to start without a name otherwise.
		InsecureSkipVerify: serverName == "", //nolint:gosec // test client, never completes a handshake
	})
	if err := c.Handshake(); err == nil {
		t.Fatal("handshake with no server succeeded")
	}
	if len(conn.written) < tlsRecordHeaderLen {
		t.Fatalf("client wrote %d bytes", len(conn.written))
	}
	return conn.written
}

// scriptConn is a net.Conn that reads a fixed script, then EOF, and keeps
// what is written to it: a TLS peer for one flight, with no goroutine and
// no chance of both sides blocking on a write.
type scriptConn struct {
	script  bytes.Reader
	written []byte
}

func (c *scriptConn) Read(p []byte) (int, error) { return c.script.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) {
	c.written = append(c.written, p...)
	return len(p), nil
}
func (c *scriptConn) Close() error        { return nil }
func (c *scriptConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *scriptConn) SetDeadline(time.Time) error { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error {
	return nil
}
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*scriptConn)(nil)

// handshakeOf returns the handshake messages carried by a stream of
// handshake records, the inverse of records.
func handshakeOf(t testing.TB, stream []byte) []byte {
	t.Helper()
	var msg []byte
	s := cryptobyte.String(stream)
	for !s.Empty() {
		var frag cryptobyte.String
		if !s.Skip(3) || !s.ReadUint16LengthPrefixed(&frag) {
			t.Fatalf("not a record stream")
		}
		msg = append(msg, frag...)
	}
	return msg
}

// records cuts a handshake message into handshake records of at most size
// bytes each, with record version 0x0301 as clients send.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, tlsRecordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// helloSpec describes a synthetic ClientHello. Extensions are written in the
// order given, so tests can duplicate or break one.
type helloSpec struct {
	legacy uint16
	exts   []helloExt
	noExts bool // omit the extensions block (TLS 1.2 and older allow it)
}

type helloExt struct {
	typ  uint16
	data []byte
}

// clientHelloMsg builds a ClientHello handshake message (with its 4-byte
// header) from a spec, by the layout of RFC 8446 §4.1.2.
func clientHelloMsg(spec helloSpec) []byte {
	legacy := spec.legacy
	if legacy == 0 {
		legacy = 0x0303
	}
	var b cryptobyte.Builder
	b.AddUint8(tlsHandshakeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(legacy)
		b.AddBytes(make([]byte, 32)) // random
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301); b.AddUint16(0xc02f) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if spec.noExts {
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range spec.exts {
				b.AddUint16(e.typ)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
			}
		})
	})
	return b.BytesOrPanic()
}

// sniExt is a server_name extension with host_name entries.
func sniExt(names ...string) helloExt {
	return nameListExt(tlsExtServerName, names, func(b *cryptobyte.Builder, n string) {
		b.AddUint8(tlsServerNameTypeHost)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
	})
}

// alpnExt is an ALPN extension offering names in order.
func alpnExt(names ...string) helloExt {
	return nameListExt(tlsExtALPN, names, func(b *cryptobyte.Builder, n string) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
	})
}

// nameListExt is an extension of type typ whose body is a list (16-bit
// length) of names, each written by entry.
func nameListExt(typ uint16, names []string, entry func(*cryptobyte.Builder, string)) helloExt {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, n := range names {
			entry(b, n)
		}
	})
	return helloExt{typ, b.BytesOrPanic()}
}

// versionsExt is a supported_versions extension as a client sends it.
func versionsExt(vs ...uint16) helloExt {
	var b cryptobyte.Builder
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, v := range vs {
			b.AddUint16(v)
		}
	})
	return helloExt{tlsExtSupportedVersions, b.BytesOrPanic()}
}

// paddingExt is a padding extension (RFC 7685) of n zero bytes, to make
// hellos of a chosen size.
func paddingExt(n int) helloExt {
	return helloExt{21, make([]byte, n)}
}
