package dataplane_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// The PROXY protocol (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt)
// in and out. Parsing is github.com/pires/go-proxyproto's; what is ours is
// that a listener requiring a header refuses every connection without a
// valid one before dialling anything, reads it under a deadline and a size
// cap, and passes the client it names on (to logs, X-Forwarded-For and
// PROXY headers to backends).

// proxyListener requires a PROXY header from 127.0.0.1 and gives up on it
// after probe.
func proxyListener(name string, probe time.Duration, routes ...snapshot.Route) snapshot.Listener {
	l := listenerOn(name, routes...)
	l.ProxyProtocol = trustingLocalhost()
	l.ProbeTimeout = probe
	return l
}

// trustingLocalhost believes PROXY headers from 127.0.0.1 only, where the
// tests' clients connect from; other loopback addresses (127.0.0.2) are
// untrusted peers.
func trustingLocalhost() *snapshot.ProxyProtocol {
	return &snapshot.ProxyProtocol{TrustedCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
}

// sigV2 is the 12-byte v2 signature.
const sigV2 = "\r\n\r\n\x00\r\nQUIT\n"

// v2Header builds a raw v2 header: version/command, family/transport, and
// a body whose declared length is length.
func v2Header(verCmd, fam byte, length uint16, body []byte) []byte {
	b := append([]byte(sigV2), verCmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], length)
	return append(b, body...)
}

// v2TCP4 is a valid v2 PROXY TCP4 header from src to dst, with extra
// bytes (TLVs) in its body.
func v2TCP4(src, dst string, sport, dport uint16, tlvs []byte) []byte {
	body := append(net.ParseIP(src).To4(), net.ParseIP(dst).To4()...)
	body = binary.BigEndian.AppendUint16(body, sport)
	body = binary.BigEndian.AppendUint16(body, dport)
	body = append(body, tlvs...)
	return v2Header(0x21, 0x11, uint16(len(body)), body)
}

func TestProxyProtocolInAcceptsV1AndV2(t *testing.T) {
	t.Parallel()
	r, _, headers := proxyRoute(t, "ssh", snapshot.SSH, 2)
	m := startMux(t, snapshotOf(proxyListener("pub", 2*time.Second, r)))
	pub := m.addr("pub")

	authority := []byte{0x02, 0x00, 0x08}
	authority = append(authority, "lb.test!"...) // PP2_TYPE_AUTHORITY
	for _, tc := range []struct {
		name   string
		header []byte
		// want is the client the backend must be told of and wantDst the
		// address the client connected to; "" for the real connection
		// (LOCAL, UNKNOWN).
		want, wantDst string
	}{
		{"v1 TCP4", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4444 443\r\n"), "203.0.113.7:4444", "192.0.2.1:443"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 4445 443\r\n"), "[2001:db8::7]:4445", "[2001:db8::1]:443"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", ""},
		{"v2 TCP4", v2TCP4("203.0.113.8", "192.0.2.2", 5555, 8443, nil), "203.0.113.8:5555", "192.0.2.2:8443"},
		{"v2 TCP4 with a TLV", v2TCP4("203.0.113.9", "192.0.2.1", 5556, 443, authority), "203.0.113.9:5556", "192.0.2.1:443"},
		{"v2 LOCAL (health check)", v2Header(0x20, 0x00, 0, nil), "", ""},
		// LOCAL with an address block: the addresses are informational,
		// the real peer is the client (spec §2.2).
		{"v2 LOCAL with addresses", v2Header(0x20, 0x11, 12, v2TCP4("203.0.113.66", "192.0.2.1", 1, 443, nil)[16:]), "", ""},
	} {
		for _, split := range []bool{false, true} {
			c := dial(t, pub)
			msg := "SSH-2.0-proxied\r\n"
			if split {
				// The header alone first, the client's bytes later.
				if _, err := c.Write(tc.header); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
				roundTrip(t, c, msg)
			} else {
				// Header and bytes in one segment, as balancers send them.
				_ = c.SetDeadline(time.Now().Add(ioTimeout))
				if _, err := c.Write(append(append([]byte(nil), tc.header...), msg...)); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
					t.Fatalf("%s: echo %q, %v", tc.name, got, err)
				}
			}
			h := <-headers
			want := tc.want
			if want == "" {
				want = c.LocalAddr().String()
			}
			if got := h.SourceAddr.String(); got != want {
				t.Errorf("%s (split %v): the backend was told the client is %s, want %s", tc.name, split, got, want)
			}
			wantDst := tc.wantDst
			if wantDst == "" {
				wantDst = pub
			}
			if got := h.DestinationAddr.String(); got != wantDst {
				t.Errorf("%s (split %v): the backend was told the client connected to %s, want %s", tc.name, split, got, wantDst)
			}
			_ = c.Close()
		}
	}
	m.waitIdle()
}

// TestProxyProtocolInRefusesMalformed: no header, a broken one, a slow or
// endless one: each connection is closed, outcome proxy_error, and no
// backend is dialled. The header is read under the probe deadline, so a
// client that trickles it in is cut on time.
func TestProxyProtocolInRefusesMalformed(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	const probe = 500 * time.Millisecond
	m := startMux(t, snapshotOf(proxyListener("pub", probe,
		routeTo("ssh", snapshot.SSH, backend.Addr),
		routeTo("timeout", snapshot.Timeout, backend.Addr),
		routeTo("any", snapshot.Any, backend.Addr),
	)))
	pub := m.addr("pub")

	validV2 := v2TCP4("203.0.113.8", "192.0.2.1", 5555, 443, nil)
	type step struct {
		data  []byte
		pause time.Duration
	}
	drip := func(b []byte, every time.Duration) []step {
		var s []step
		for i := range b {
			s = append(s, step{b[i : i+1], every})
		}
		return s
	}
	for _, tc := range []struct {
		name      string
		steps     []step
		closeSend bool
		// cut: closed only by the deadline, not at once.
		cut bool
	}{
		{name: "no header: SSH banner", steps: []step{{data: []byte("SSH-2.0-OpenSSH_9.2\r\n")}}},
		{name: "no header: HTTP", steps: []step{{data: []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")}}},
		{name: "no header: TLS", steps: []step{{data: halfClientHello(t)}}},
		{name: "garbage", steps: []step{{data: []byte("\x00\x01\x02\xff garbage\r\n")}}},
		{name: "v1 port out of range", steps: []step{{data: []byte("PROXY TCP4 192.0.2.9 192.0.2.1 99999 443\r\n")}}},
		{name: "v1 port not a number", steps: []step{{data: []byte("PROXY TCP4 192.0.2.9 192.0.2.1 http 443\r\n")}}},
		{name: "v1 bad address", steps: []step{{data: []byte("PROXY TCP4 999.0.2.9 192.0.2.1 1000 443\r\n")}}},
		{name: "v1 IPv6 address as TCP4", steps: []step{{data: []byte("PROXY TCP4 2001:db8::1 192.0.2.1 1000 443\r\n")}}},
		{name: "v1 unknown protocol", steps: []step{{data: []byte("PROXY UDP4 192.0.2.9 192.0.2.1 1000 443\r\n")}}},
		{name: "v1 extra token", steps: []step{{data: []byte("PROXY TCP4 192.0.2.9 192.0.2.1 1000 443 x\r\n")}}},
		{name: "v1 LF without CR", steps: []step{{data: []byte("PROXY TCP4 192.0.2.9 192.0.2.1 1000 443\n")}}},
		{name: "v1 over 107 bytes", steps: []step{{data: []byte("PROXY TCP4 " + strings.Repeat("1", 200))}}},
		{name: "v1 cut short", steps: []step{{data: []byte("PROXY TCP4 192.0.2.9 ")}}},
		{name: "v1 cut short, then closed", steps: []step{{data: []byte("PROXY TCP4 192.0.2.9 ")}}, closeSend: true},
		{name: "v2 truncated, then closed", steps: []step{{data: validV2[:20]}}, closeSend: true},
		{name: "v2 truncated, then silent", steps: []step{{data: validV2[:20]}}, cut: true},
		{name: "v2 signature only, then silent", steps: []step{{data: []byte(sigV2)}}, cut: true},
		{name: "v2 version 3", steps: []step{{data: v2Header(0x31, 0x11, 12, validV2[16:])}}},
		{name: "v2 command 2", steps: []step{{data: v2Header(0x22, 0x11, 12, validV2[16:])}}},
		{name: "v2 undefined family", steps: []step{{data: v2Header(0x21, 0x13, 12, validV2[16:])}}},
		{name: "v2 length short of the addresses", steps: []step{{data: v2Header(0x21, 0x11, 4, validV2[16:20])}}},
		{name: "v2 length over the 4 KiB cap", steps: []step{{data: v2Header(0x21, 0x11, 0xffff, validV2[16:])}}},
		{name: "v2 dripped a byte at a time", steps: drip(validV2, 100*time.Millisecond), cut: true},
		{name: "silent client", steps: nil, cut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, pub)
			start := time.Now()
			var writeErr error
			for _, s := range tc.steps {
				if _, writeErr = c.Write(s.data); writeErr != nil {
					break // already closed by the mux: fine
				}
				time.Sleep(s.pause)
			}
			if tc.closeSend {
				_ = c.CloseWrite()
			}
			if err := closedByPeer(c, probe+ioTimeout); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if !tc.cut && took > probe {
				t.Errorf("closed after %v; want at once, not at the %v deadline", took, probe)
			}
			if took > probe+2*time.Second {
				t.Errorf("closed after %v; the header deadline is %v", took, probe)
			}
		})
	}
	m.waitIdle()
	if n := backend.Accepted(); n != 0 {
		t.Errorf("the backend was dialled %d times; no connection without a valid header may reach it", n)
	}
	if n, want := m.outcomeCount("pub", dataplane.OutcomeProxyError), 24; n != want {
		t.Errorf("%d connections ended proxy_error, want %d", n, want)
	}
}

// TestProxyProtocolRefusesUntrustedPeers: a listener believes PROXY
// headers only from its trusted networks (here 127.0.0.1/32, the load
// balancer). A peer elsewhere (127.0.0.2, a pod that reaches the pod IP
// directly) is refused as soon as it is accepted: with a well-formed header
// claiming another client, and silent, long before the header deadline.
// Nothing reaches the backend, and the refusals are counted as
// proxy_untrusted. The load balancer itself is served as before.
func TestProxyProtocolRefusesUntrustedPeers(t *testing.T) {
	t.Parallel()
	r, backend, headers := proxyRoute(t, "ssh", snapshot.SSH, 2)
	const probe = 8 * time.Second
	m := startMux(t, snapshotOf(proxyListener("pub", probe, r)))
	pub := m.addr("pub")
	header := []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4444 443\r\n")

	forged := dialFrom(t, "127.0.0.2", pub)
	_ = forged.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := forged.Write(append(header, "SSH-2.0-forged\r\n"...)); err != nil {
		t.Fatal(err)
	}
	if err := closedByPeer(forged, ioTimeout); err != nil {
		t.Errorf("an untrusted peer sending a header: %v", err)
	}
	silent := dialFrom(t, "127.0.0.2", pub)
	start := time.Now()
	if err := closedByPeer(silent, probe); err != nil {
		t.Errorf("a silent untrusted peer: %v; want it closed at accept, not at the %v header deadline", err, probe)
	}
	t.Logf("silent untrusted peer closed after %v (the kernel holds it about a second: TCP_DEFER_ACCEPT)", time.Since(start).Round(time.Millisecond))

	lb := dial(t, pub)
	if _, err := lb.Write(header); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, lb, "SSH-2.0-balanced\r\n")
	if h := <-headers; h.SourceAddr.String() != "203.0.113.7:4444" {
		t.Errorf("the trusted balancer's client reached the backend as %s, want 203.0.113.7:4444", h.SourceAddr)
	}
	_ = lb.Close()
	m.waitIdle()
	if n := backend.Accepted(); n != 1 {
		t.Errorf("the backend was dialled %d times, want once: for the trusted balancer only", n)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeProxyUntrusted); n != 2 {
		t.Errorf("%d connections ended proxy_untrusted, want 2", n)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeProxyError); n != 0 {
		t.Errorf("%d connections ended proxy_error, want 0: untrusted peers are refused before any header is read", n)
	}
}

// TestProxyProtocolThroughTermination: a header in front of TLS names the
// client; the stream inside, terminated and sniffed, reaches a backend that
// wants a PROXY header of its own with that client.
func TestProxyProtocolThroughTermination(t *testing.T) {
	t.Parallel()
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("out v%d", version), func(t *testing.T) {
			t.Parallel()
			r, _, headers := proxyRoute(t, "ssh", snapshot.SSH, version)
			cert := peers.CertPair(t, "pp.test")
			l := terminating("pub", tlsOf(nil, cert), r)
			l.ProxyProtocol = trustingLocalhost()
			m := startMux(t, snapshotOf(l))
			raw := dial(t, m.addr("pub"))
			if _, err := raw.Write(v2TCP4("198.51.100.4", "192.0.2.1", 6000, 443, nil)); err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, &tls.Config{ServerName: "pp.test", InsecureSkipVerify: true})
			roundTrip(t, c, "SSH-2.0-inside\r\n")
			h := <-headers
			if int(h.Version) != version || h.SourceAddr.String() != "198.51.100.4:6000" {
				t.Errorf("backend got a v%d header from %s, want v%d from 198.51.100.4:6000", h.Version, h.SourceAddr, version)
			}
			_ = c.Close()
			m.waitIdle()
		})
	}
}

// haproxyAcceptProxy runs haproxy as a backend that parses PROXY headers
// (bind accept-proxy) and forwards HTTP to web adding X-Forwarded-For
// from the header's source. It returns haproxy's address.
func haproxyAcceptProxy(t testing.TB, web string) string {
	t.Helper()
	bin := peers.LookPath(t, "haproxy")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // haproxy binds it itself; a clash fails the wait below
	cfg := fmt.Sprintf(`global
    log stderr format raw local0 info
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend in
    bind %s accept-proxy
    option forwardfor
    default_backend web
backend web
    server web %s
`, addr, web)
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	peers.Start(t, "haproxy", bin, "-db", "-f", file)
	peers.Until(t, ioTimeout, "haproxy to listen", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return addr
}

// TestProxyProtocolOutToHAProxy checks the headers the mux sends with a
// parser that is not Go's: haproxy with accept-proxy reads each, then
// tells the web backend the client in X-Forwarded-For.
func TestProxyProtocolOutToHAProxy(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	hap := haproxyAcceptProxy(t, web.Addr)
	v1 := routeTo("v1", snapshot.HTTP, hap)
	v1.Match.Host = []string{"v1.test"}
	v1.Backend.ProxyProtocol = 1
	v2 := routeTo("v2", snapshot.HTTP, hap)
	v2.Backend.ProxyProtocol = 2
	m := startMux(t, snapshotOf(proxyListener("pub", 2*time.Second, v1, v2)))
	pub := m.addr("pub")

	for i, tc := range []struct{ host, client, header string }{
		{"v1.test", "203.0.113.21", "PROXY TCP4 203.0.113.21 192.0.2.1 7001 80\r\n"},
		{"v2.test", "2001:db8::22", "PROXY TCP6 2001:db8::22 2001:db8::1 7002 80\r\n"},
	} {
		c := dial(t, pub)
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		path := fmt.Sprintf("/%d", i)
		if _, err := fmt.Fprintf(c, "%sGET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tc.header, path, tc.host); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		_ = res.Body.Close()
		_ = c.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: haproxy answered %s", tc.host, res.Status)
		}
		reqs := web.Requests()
		if got := reqs[len(reqs)-1].Header.Get("X-Forwarded-For"); got != tc.client {
			t.Errorf("%s: haproxy read client %q from the mux's PROXY header, want %q", tc.host, got, tc.client)
		}
	}
	// curl's own PROXY v1 header in, our v2 out, haproxy's parse.
	r, err := peers.Curl(t, "--haproxy-protocol", "--resolve", resolve("v2.test", pub), "http://v2.test:"+portOf(pub)+"/curl")
	if err != nil || r.Code != 200 {
		t.Fatalf("curl --haproxy-protocol: %+v, %v", r, err)
	}
	reqs := web.Requests()
	if got := reqs[len(reqs)-1].Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("curl --haproxy-protocol: client %q, want 127.0.0.1", got)
	}
	m.waitIdle()
}
