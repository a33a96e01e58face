package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// udpPortMux is a PortMux file as a user of `portmux serve` writes it: TCP
// and UDP listeners on 443, routes that leave out listeners and attach to
// those whose protocol carries theirs.
const udpPortMux = `apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: edge}
spec:
  listeners:
  - {name: https, port: 443}
  - {name: h3, port: 443, protocol: UDP}
  routes:
  - {name: web, match: {protocol: tls, sni: [example.com]}, backend: {address: "127.0.0.1:8443"}}
  - {name: web-h3, match: {protocol: quic, sni: [example.com], alpn: [h3]}, backend: {address: "127.0.0.1:8443"}}
  - {name: dns, match: {protocol: dns}, backend: {address: "127.0.0.1:53"}}
  - {name: vpn, match: {protocol: openvpn}, backend: {address: "127.0.0.1:1194"}}
`

// TestServeCompilesUDPListeners: `portmux serve -f` reads the same YAML as
// the API server: a UDP listener becomes a UDP snapshot listener beside
// the TCP one on the same port, with the routes whose protocol it
// carries.
func TestServeCompilesUDPListeners(t *testing.T) {
	out, err := compileFiles(logr.Discard(), serveOptions{}, []fileData{{path: "edge.yaml", data: []byte(udpPortMux)}}, nil)
	if err != nil {
		t.Fatalf("compileFiles: %v", err)
	}
	if err := out.Snapshot.Validate(); err != nil {
		t.Fatalf("the snapshot fails its invariants: %v", err)
	}
	got := map[string]string{}
	for _, l := range out.Snapshot.Listeners {
		var routes []string
		for _, r := range l.Routes {
			routes = append(routes, string(r.Match.Protocol))
		}
		got[l.Name+" "+l.Address+" "+string(l.Transport)] = strings.Join(routes, ",")
	}
	want := map[string]string{
		"edge/https :443 TCP": "tls,openvpn",
		"edge/h3 :443 UDP":    "quic,dns,openvpn",
	}
	if len(got) != len(want) {
		t.Fatalf("listeners = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("listener %q has routes %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	for _, l := range out.Snapshot.Listeners {
		if l.Transport == snapshot.UDP && (l.TLS != nil || l.ProxyProtocol != nil) {
			t.Errorf("UDP listener %s has TLS or a PROXY header", l.Name)
		}
	}
}

// TestServeRefusesWhatTheAPIServerRefusesOnUDP: the errors name the field
// as the API server would.
func TestServeRefusesWhatTheAPIServerRefusesOnUDP(t *testing.T) {
	for _, tc := range []struct {
		name, spec, want string
	}{
		{
			name: "quic on a TCP listener",
			spec: `
  listeners: [{name: https, port: 443}]
  routes: [{name: h3, listeners: [https], match: {protocol: quic}, backend: {address: "127.0.0.1:8443"}}]`,
			want: `PortMux edge: spec.routes[0].listeners[0]: Invalid value: "https": listener https is TCP, which does not carry match.protocol quic`,
		},
		{
			name: "two UDP listeners on one port",
			spec: `
  listeners: [{name: a, port: 443, protocol: UDP}, {name: b, port: 443, protocol: UDP}]`,
			want: `PortMux edge: spec.listeners[1].port: Duplicate value: 443: also the UDP port of listener a`,
		},
		{
			name: "tls on a UDP listener",
			spec: `
  listeners: [{name: h3, port: 443, protocol: UDP, tls: {certificateRefs: [{name: cert}]}}]`,
			want: `PortMux edge: spec.listeners[0].tls: Invalid value: tls applies only to TCP listeners`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := "apiVersion: portmux.dev/v1alpha1\nkind: PortMux\nmetadata: {name: edge}\nspec:" + tc.spec + "\n"
			_, err := compileFiles(logr.Discard(), serveOptions{}, []fileData{{path: "edge.yaml", data: []byte(doc)}}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("compileFiles = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestServeForwardsDatagramsBesideTCP: `portmux serve -f` with a TCP and a
// UDP listener on one port serves both: a DNS query on the UDP port
// reaches the UDP backend and its answer comes back, and a TCP client on
// the same port number reaches the TCP backend.
func TestServeForwardsDatagramsBesideTCP(t *testing.T) {
	udpBackend := peers.UDPEcho(t)
	tcpBackend := greeter(t, "tcp backend")
	port := peers.FreePort(t)
	doc := fmt.Sprintf(`apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: edge}
spec:
  listeners:
  - {name: tcp, port: %d}
  - {name: udp, port: %d, protocol: UDP}
  routes:
  - {name: dns, match: {protocol: dns}, backend: {address: %q}}
  - {name: rest, listeners: [tcp], match: {protocol: any}, backend: {address: %q}}
`, port, port, udpBackend.Addr, tcpBackend)
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	startServe(t, serveOptions{files: []string{path}})

	query := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1}
	peers.Eventually(t, 10*time.Second, "a DNS query through the UDP listener comes back from the backend", func() error {
		c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(query); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], query) {
			return fmt.Errorf("%x, %v", buf[:n], err)
		}
		return nil
	})
	if udpBackend.Received() == 0 {
		t.Fatal("the answer came back, but not from the backend")
	}
	if got := answer(net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); got != "tcp backend" {
		t.Errorf("TCP client on the same port read %q, want the TCP backend's greeting", got)
	}
}
