package sniff

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// sniffCase is one input and the answer a sniffer must give.
type sniffCase struct {
	name string
	in   string
	want Verdict
	info Info
}

// runSniffCases runs each case through f as a subtest, then the checks in
// also, if any.
func runSniffCases(t *testing.T, f Func, tests []sniffCase, also ...func(*testing.T, sniffCase)) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, info := f([]byte(tc.in))
			if v != tc.want || !reflect.DeepEqual(info, tc.info) {
				t.Fatalf("got %v %+v, want %v %+v", v, info, tc.want, tc.info)
			}
			if msg := prefixViolation(f, []byte(tc.in)); msg != "" {
				t.Fatal(msg)
			}
			for _, check := range also {
				check(t, tc)
			}
		})
	}
}

func TestSSH(t *testing.T) {
	long := "SSH-2.0-" + strings.Repeat("x", 300)
	runSniffCases(t, SSH, []sniffCase{
		{"empty", "", NeedMore, Info{}},
		{"SSH-", "SSH-", NeedMore, Info{}},
		{"SSH-1.9 could be 1.99", "SSH-1.9", NeedMore, Info{}},
		{"prefix only", "SSH-2.0-", Match, Info{SSHVersion: "SSH-2.0-"}},
		{"no line end yet", "SSH-2.0-OpenSSH_9.2", Match, Info{SSHVersion: "SSH-2.0-OpenSSH_9.2"}},
		{"CR LF", "SSH-2.0-PuTTY_Release_0.81\r\n\x00\x00", Match, Info{SSHVersion: "SSH-2.0-PuTTY_Release_0.81"}},
		{"LF only", "SSH-2.0-dropbear\nrest", Match, Info{SSHVersion: "SSH-2.0-dropbear"}},
		{"1.99", "SSH-1.99-OpenSSH_3.9\r\n", Match, Info{SSHVersion: "SSH-1.99-OpenSSH_3.9"}},
		{"line cut at 253", long, Match, Info{SSHVersion: long[:253]}},
		{"SSH-1.5", "SSH-1.5-", NoMatch, Info{}},
		{"SSH-2.1", "SSH-2.1", NoMatch, Info{}},
		{"lower case", "ssh-2.0-", NoMatch, Info{}},
		{"server's other lines", "hello\r\nSSH-2.0-x\r\n", NoMatch, Info{}},
		{"HTTP", "GET / HTTP/1.1\r\n", NoMatch, Info{}},
	})
}

func TestOpenVPN(t *testing.T) {
	plain := "\x00\x0e\x38" + "\x01\x02\x03\x04\x05\x06\x07\x08" + "\x00" + "\x00\x00\x00\x00"
	v3 := func(n int) string { return string([]byte{byte(n >> 8), byte(n), 0x50}) + strings.Repeat("\xaa", n-1) }
	v2 := func(n int) string { return string([]byte{byte(n >> 8), byte(n), 0x38}) + strings.Repeat("\xaa", n-1) }
	runSniffCases(t, OpenVPN, []sniffCase{
		{"empty", "", NeedMore, Info{}},
		{"length so far", "\x00", NeedMore, Info{}},
		{"length", "\x00\x0e", NeedMore, Info{}},
		{"plain, opcode", plain[:3], NeedMore, Info{}},
		{"plain, one byte short", plain[:15], NeedMore, Info{}},
		{"plain", plain, Match, Info{OpenVPNOpcode: 7}},
		{"plain, then the next packet", plain + "\x00\x2f\x20", Match, Info{OpenVPNOpcode: 7}},
		{"plain with an ACK", plain[:11] + "\x01" + plain[12:], NoMatch, Info{}},
		{"plain with packet id 1", plain[:15] + "\x01", NoMatch, Info{}},
		{"wrapped V2, shortest beyond plain", v2(15), Match, Info{OpenVPNOpcode: 7}},
		{"wrapped V2, longest", v2(255), Match, Info{OpenVPNOpcode: 7}},
		{"V2 of 256", v2(256)[:3], NoMatch, Info{}},
		{"V2 of 13", "\x00\x0d", NoMatch, Info{}},
		{"V3, shortest", v3(336), Match, Info{OpenVPNOpcode: 10}},
		{"V3, longest", v3(1278), Match, Info{OpenVPNOpcode: 10}},
		{"V3 of 335", v3(335)[:3], NoMatch, Info{}},
		{"V3 of 1279", v3(1279)[:2], NoMatch, Info{}},
		{"V3 at a V2 length", "\x00\x0e\x50", NoMatch, Info{}},
		{"V2 at a V3 length", "\x01\x61\x38", NoMatch, Info{}},
		{"key id 1", "\x00\x0e\x39", NoMatch, Info{}},
		{"P_CONTROL_HARD_RESET_CLIENT_V1", "\x00\x0e\x08", NoMatch, Info{}},
		{"P_CONTROL_V1", "\x00\x0e\x20", NoMatch, Info{}},
		{"first byte too big", "\x05", NoMatch, Info{}},
		{"TLS", "\x16\x03\x01", NoMatch, Info{}},
		{"HTTP", "GET", NoMatch, Info{}},
	})
}

func TestSOCKS5(t *testing.T) {
	runSniffCases(t, SOCKS5, []sniffCase{
		{"empty", "", NeedMore, Info{}},
		{"version", "\x05", NeedMore, Info{}},
		{"methods so far", "\x05\x02\x00", NeedMore, Info{}},
		{"greeting", "\x05\x02\x00\x02", Match, Info{}},
		{"255 methods", "\x05\xff" + strings.Repeat("\x00", 255), Match, Info{}},
		{"greeting then more", "\x05\x01\x00\x05\x01\x00\x03", Match, Info{}},
		{"no methods", "\x05\x00", NoMatch, Info{}},
		{"SOCKS4", "\x04\x01\x00\x50", NoMatch, Info{}},
		{"HTTP", "GET", NoMatch, Info{}},
	})
}

func TestAny(t *testing.T) {
	runSniffCases(t, Any, []sniffCase{
		{"nothing yet", "", Match, Info{}},
		{"one byte", "\x00", Match, Info{}},
	})
}

func TestPrefix(t *testing.T) {
	tests := []struct {
		b, prefix string
		want      Verdict
	}{
		{"", "", Match},
		{"abc", "", Match},
		{"", "abc", NeedMore},
		{"ab", "abc", NeedMore},
		{"abc", "abc", Match},
		{"abcd", "abc", Match},
		{"abd", "abc", NoMatch},
		{"x", "abc", NoMatch},
		{"\x00\x01", "\x00\x01\x02", NeedMore},
		{"", strings.Repeat("a", MaxBytes+1), NoMatch},
		{strings.Repeat("a", MaxBytes), strings.Repeat("a", MaxBytes), Match},
	}
	for _, tc := range tests {
		if got := Prefix([]byte(tc.b), []byte(tc.prefix)); got != tc.want {
			t.Errorf("Prefix(%.20q, %.20q) = %v, want %v", tc.b, tc.prefix, got, tc.want)
		}
	}
}

func TestRegex(t *testing.T) {
	tests := []struct {
		b, re string
		want  Verdict
	}{
		{"", `^SSH-`, NeedMore},
		{"SSH", `^SSH-`, NeedMore},
		{"SSH-2.0-", `^SSH-`, Match},
		{"xx SSH-", `SSH-`, Match},
		{"xx SSH-", `^SSH-`, NeedMore}, // never NoMatch: the caller decides at the end of the probe
		{"\x16\x03\x01", `^\x16\x03[\x00-\x04]`, Match},
		{strings.Repeat("a", MaxBytes) + "needle", `needle`, NeedMore}, // past MaxBytes is not looked at
	}
	for _, tc := range tests {
		if got := Regex([]byte(tc.b), regexp.MustCompile(tc.re)); got != tc.want {
			t.Errorf("Regex(%.20q, %q) = %v, want %v", tc.b, tc.re, got, tc.want)
		}
	}
}
