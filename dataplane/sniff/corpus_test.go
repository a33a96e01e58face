package sniff

import (
	"bytes"
	"reflect"
	"slices"
	"testing"
)

// corpusCase is a real first flight and what it must give: Match with info
// for the protocols in match, NoMatch for every other sniffer.
type corpusCase struct {
	file  string
	match []string // names in sniffers()
	info  Info
}

func corpusCases() []corpusCase {
	const sshVersion = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10"
	tls13 := Info{SNI: "example.test", ALPN: []string{"h2", "http/1.1"}, TLSVersions: []uint16{0x0304, 0x0303, 0x0302, 0x0301}}
	return []corpusCase{
		{"ssh_client_first_flight.bin", []string{"ssh"}, Info{SSHVersion: sshVersion}},
		{"ssh_client_first2k_via_relay.bin", []string{"ssh"}, Info{SSHVersion: sshVersion}},
		{"tls13_clienthello_openssl_sni_alpn.bin", []string{"tls"}, tls13},
		{"tls13_clienthello_curl.bin", []string{"tls"}, tls13},
		{"tls12_clienthello_openssl_sni_alpn.bin", []string{"tls"},
			Info{SNI: "example.test", ALPN: []string{"http/1.1"}, TLSVersions: []uint16{0x0303}}},
		{"http11_get_curl.bin", []string{"http"},
			Info{Method: "GET", Host: "127.0.0.1", Path: "/index.html"}},
		{"http11_websocket_upgrade_curl.bin", []string{"http", "websocket"},
			Info{Method: "GET", Host: "127.0.0.1", Path: "/chat", WebSocket: true}},
		{"openvpn_tcp_client_hard_reset_v2.bin", []string{"openvpn"}, Info{OpenVPNOpcode: 7}},
		{"openvpn_tcp_client_hard_reset_v2_tls_auth.bin", []string{"openvpn"}, Info{OpenVPNOpcode: 7}},
		{"openvpn_tcp_client_hard_reset_tls_crypt.bin", []string{"openvpn"}, Info{OpenVPNOpcode: 7}},
		{"openvpn_tcp_client_hard_reset_v3_tls_crypt_v2.bin", []string{"openvpn"}, Info{OpenVPNOpcode: 10}},
		{"openvpn_tcp_client_v2_first2k_via_relay.bin", []string{"openvpn"}, Info{OpenVPNOpcode: 7}},
		{"openvpn_tcp_client_tls_crypt_v2_first2k_via_relay.bin", []string{"openvpn"}, Info{OpenVPNOpcode: 10}},
		{"socks5_greeting_curl.bin", []string{"socks5"}, Info{}},
		{"socks5_greeting_userpass_curl.bin", []string{"socks5"}, Info{}},
	}
}

// TestCorpus runs every sniffer over every real capture: its own protocols
// match with the expected Info, every other sniffer says NoMatch.
func TestCorpus(t *testing.T) {
	for _, tc := range corpusCases() {
		b := readCorpus(t, tc.file)
		for _, p := range sniffers() {
			t.Run(tc.file+"/"+p.name, func(t *testing.T) {
				v, info := p.f(b)
				if !slices.Contains(tc.match, p.name) {
					if v != NoMatch || !reflect.DeepEqual(info, Info{}) {
						t.Fatalf("got %v %+v, want %v", v, info, NoMatch)
					}
					return
				}
				if v != Match {
					t.Fatalf("got %v, want %v", v, Match)
				}
				if !reflect.DeepEqual(info, tc.info) {
					t.Fatalf("Info\n got %+v\nwant %+v", info, tc.info)
				}
			})
		}
	}
}

// TestCorpusComplete keeps the table in step with testdata/corpus, so a new
// capture cannot be dropped in without saying what it must match.
func TestCorpusComplete(t *testing.T) {
	var listed []string
	for _, tc := range corpusCases() {
		listed = append(listed, tc.file)
	}
	for _, f := range corpusFiles(t) {
		if !slices.Contains(listed, f) {
			t.Errorf("testdata/corpus/%s has no row in corpusCases", f)
		}
	}
}

// TestCorpusPrefixes feeds every prefix of every capture to every sniffer:
// NeedMore, then the whole capture's verdict from some length on, never a
// different decision and never a panic.
func TestCorpusPrefixes(t *testing.T) {
	for _, name := range corpusFiles(t) {
		b := readCorpus(t, name)
		for _, p := range append(sniffers(), namedSniffer{"any", Any}) {
			if msg := prefixViolation(p.f, b); msg != "" {
				t.Errorf("%s %s: %s", name, p.name, msg)
			}
		}
	}
}

// TestDecidesWithinMaxBytes checks the contract the peek wrapper relies on:
// given MaxBytes bytes no sniffer answers NeedMore, and what follows them
// changes nothing.
func TestDecidesWithinMaxBytes(t *testing.T) {
	fillers := map[string][]byte{
		"zeros": make([]byte, MaxBytes),
		"as":    bytes.Repeat([]byte("a"), MaxBytes),
		"crlf":  bytes.Repeat([]byte("\r\n"), MaxBytes/2),
	}
	starts := map[string][]byte{
		"empty":         nil,
		"http-headers":  []byte("GET / HTTP/1.1\r\nHost: a\r\nX: "),
		"tls-header":    {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfb},
		"ssh":           []byte("SSH-2.0-"),
		"openvpn-v3":    {0x04, 0xfe, 0x50},
		"socks5-maxlen": {0x05, 0xff},
	}
	for _, name := range corpusFiles(t) {
		starts[name] = readCorpus(t, name)
	}
	for sname, start := range starts {
		for fname, filler := range fillers {
			b := append(slices.Clip(start), filler...)
			for _, p := range sniffers() {
				v, info := p.f(b[:MaxBytes])
				if v == NeedMore {
					t.Errorf("%s+%s %s: NeedMore at MaxBytes", sname, fname, p.name)
				}
				v2, info2 := p.f(b)
				if v2 != v || !reflect.DeepEqual(info, info2) {
					t.Errorf("%s+%s %s: %v at MaxBytes, %v past it", sname, fname, p.name, v, v2)
				}
			}
		}
	}
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{NeedMore: "need-more", Match: "match", NoMatch: "no-match", 7: "verdict(7)"} {
		if got := v.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", v, got, want)
		}
	}
}
