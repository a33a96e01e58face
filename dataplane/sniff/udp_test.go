package sniff

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/net/dns/dnsmessage"
)

// udpSniffers are the first-datagram sniffers by name.
func udpSniffers() map[string]Func {
	return map[string]Func{"wireguard": WireGuard, "openvpn-udp": OpenVPNUDP, "dns": DNS}
}

// udpCase is a real first datagram from testdata/udp (see its README) and
// the sniffer that must match it; every other must not.
type udpCase struct {
	file  string
	match string
	info  Info
}

func udpCases() []udpCase {
	return []udpCase{
		{"wireguard_initiation_wireguard-go.bin", "wireguard", Info{}},
		{"openvpn_udp_hard_reset_v2.bin", "openvpn-udp", Info{OpenVPNOpcode: 7}},
		{"openvpn_udp_hard_reset_v2_tls_auth.bin", "openvpn-udp", Info{OpenVPNOpcode: 7}},
		{"openvpn_udp_hard_reset_tls_crypt.bin", "openvpn-udp", Info{OpenVPNOpcode: 7}},
		{"openvpn_udp_hard_reset_v3_tls_crypt_v2.bin", "openvpn-udp", Info{OpenVPNOpcode: 10}},
		{"dns_query_dig.bin", "dns", Info{}},
		{"dns_query_go_resolver.bin", "dns", Info{}},
	}
}

const udpDir = "testdata/udp"

// quicDatagrams are dataplane/quic's captures, which no sniffer here may
// take.
func quicDatagrams(t testing.TB) map[string][]byte {
	t.Helper()
	dir := filepath.Join("..", "quic", "testdata", "corpus")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".bin") {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = b
		}
	}
	return out
}

// TestUDPCorpus runs every UDP sniffer over every real first datagram, the
// QUIC ones included: each matches its own, with its Info, and nothing
// else; and every datagram in testdata/udp has a row.
func TestUDPCorpus(t *testing.T) {
	listed := map[string]bool{}
	for _, tc := range udpCases() {
		listed[tc.file] = true
		b, err := os.ReadFile(filepath.Join(udpDir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		for name, f := range udpSniffers() {
			v, info := f(b)
			switch {
			case name == tc.match && (v != Match || !reflect.DeepEqual(info, tc.info)):
				t.Errorf("%s %s: %v %+v, want match %+v", tc.file, name, v, info, tc.info)
			case name != tc.match && (v != NoMatch || !reflect.DeepEqual(info, Info{})):
				t.Errorf("%s %s: %v %+v, want no-match", tc.file, name, v, info)
			}
		}
	}
	for file, b := range quicDatagrams(t) {
		for name, f := range udpSniffers() {
			if v, _ := f(b); v != NoMatch {
				t.Errorf("%s %s: %v", file, name, v)
			}
		}
	}
	entries, err := os.ReadDir(udpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".bin") && !listed[e.Name()] {
			t.Errorf("%s/%s has no row in udpCases", udpDir, e.Name())
		}
	}
}

// TestWireGuardCaptureIsGenuine checks the captured initiation's mac1 with
// the responder's public key the capture printed (WireGuard paper §5.4.4:
// mac1 = MAC(HASH("mac1----" || responder's public key), msg[0:116])), so
// the corpus holds what wireguard-go really sends.
func TestWireGuardCaptureIsGenuine(t *testing.T) {
	const responder = "296996428418147a2abb8362a07eb9a0a95f0ea53f203d39a9d54c0a1ebefd4d"
	b, err := os.ReadFile(filepath.Join(udpDir, "wireguard_initiation_wireguard-go.bin"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := hex.DecodeString(responder)
	key := blake2s.Sum256(append([]byte("mac1----"), pub...))
	mac, err := blake2s.New128(key[:])
	if err != nil {
		t.Fatal(err)
	}
	mac.Write(b[:wgMAC1Offset])
	if got := mac.Sum(nil); !bytes.Equal(got, b[wgMAC1Offset:wgMAC1Offset+wgMACLen]) {
		t.Fatalf("mac1 %x, computed %x", b[wgMAC1Offset:wgMAC1Offset+wgMACLen], got)
	}
}

func TestWireGuard(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(udpDir, "wireguard_initiation_wireguard-go.bin"))
	if err != nil {
		t.Fatal(err)
	}
	with := func(i int, c byte) []byte {
		b := bytes.Clone(good)
		b[i] = c
		return b
	}
	zeroed := func(from, to int) []byte {
		b := bytes.Clone(good)
		clear(b[from:to])
		return b
	}
	for name, tc := range map[string]struct {
		b    []byte
		want Verdict
	}{
		"capture":               {good, Match},
		"zero sender index":     {zeroed(4, 8), Match},
		"zero mac2 (no cookie)": {zeroed(132, 148), Match},
		"empty":                 {nil, NoMatch},
		"147 bytes":             {good[:147], NoMatch},
		"149 bytes":             {append(bytes.Clone(good), 0), NoMatch},
		"response (type 2)":     {with(0, 2), NoMatch},
		"cookie reply (type 3)": {with(0, 3), NoMatch},
		"data (type 4)":         {with(0, 4), NoMatch},
		"reserved byte set":     {with(2, 1), NoMatch},
		"zero ephemeral":        {zeroed(8, 40), NoMatch},
		"zero mac1":             {zeroed(116, 132), NoMatch},
		"all zeros after type":  {append([]byte{1}, make([]byte, 147)...), NoMatch},
	} {
		if v, info := WireGuard(tc.b); v != tc.want || !reflect.DeepEqual(info, Info{}) {
			t.Errorf("%s: %v %+v, want %v", name, v, info, tc.want)
		}
	}
}

func TestOpenVPNUDP(t *testing.T) {
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	pkt := func(op byte, n int) []byte {
		b := append([]byte{op}, sid...)
		return append(b, make([]byte, n-len(b))...)
	}
	with := func(b []byte, i int, c byte) []byte {
		b = bytes.Clone(b)
		b[i] = c
		return b
	}
	v2, v3 := byte(7<<3), byte(10<<3)
	for name, tc := range map[string]struct {
		b    []byte
		want Verdict
		op   uint8
	}{
		"plain v2":                 {pkt(v2, 14), Match, 7},
		"v2 at 255":                {pkt(v2, 255), Match, 7},
		"v3 at 336":                {pkt(v3, 336), Match, 10},
		"v3 at 1278":               {pkt(v3, 1278), Match, 10},
		"empty":                    {nil, NoMatch, 0},
		"v2 of 13":                 {pkt(v2, 13), NoMatch, 0},
		"v2 of 256":                {pkt(v2, 256), NoMatch, 0},
		"v3 of 335":                {pkt(v3, 335), NoMatch, 0},
		"v3 of 1279":               {pkt(v3, 1279), NoMatch, 0},
		"key id 1":                 {pkt(v2|1, 14), NoMatch, 0},
		"server reset (8)":         {pkt(8<<3, 14), NoMatch, 0},
		"v1 client reset (1)":      {pkt(1<<3, 14), NoMatch, 0},
		"data (9)":                 {pkt(9<<3, 100), NoMatch, 0},
		"zero session id":          {append([]byte{v2}, make([]byte, 13)...), NoMatch, 0},
		"zero session id v3":       {append([]byte{v3}, make([]byte, 400)...), NoMatch, 0},
		"plain v2 acking":          {with(pkt(v2, 14), 9, 1), NoMatch, 0},
		"plain v2 packet id not 0": {with(pkt(v2, 14), 13, 1), NoMatch, 0},
		"TCP framing":              {append([]byte{0, 14}, pkt(v2, 14)...), NoMatch, 0},
	} {
		v, info := OpenVPNUDP(tc.b)
		if v != tc.want || !reflect.DeepEqual(info, Info{OpenVPNOpcode: tc.op}) {
			t.Errorf("%s: %v %+v, want %v", name, v, info, tc.want)
		}
	}
}

// dnsMsg builds a DNS message with dnsmessage's builder.
func dnsMsg(t testing.TB, h dnsmessage.Header, qs []dnsmessage.Question, build func(b *dnsmessage.Builder)) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			t.Fatal(err)
		}
	}
	if build != nil {
		build(&b)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestDNS(t *testing.T) {
	name := dnsmessage.MustNewName("example.test.")
	q := []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}
	query := dnsMsg(t, dnsmessage.Header{ID: 7, RecursionDesired: true}, q, nil)
	opt := func(b *dnsmessage.Builder) {
		if err := b.StartAdditionals(); err != nil {
			t.Fatal(err)
		}
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(1232, dnsmessage.RCodeSuccess, false); err != nil {
			t.Fatal(err)
		}
		if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			t.Fatal(err)
		}
	}
	soa := func(sec string) func(b *dnsmessage.Builder) {
		return func(b *dnsmessage.Builder) {
			var err error
			if sec == "answer" {
				err = b.StartAnswers()
			} else {
				err = b.StartAuthorities()
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := b.SOAResource(dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET},
				dnsmessage.SOAResource{NS: name, MBox: name, Serial: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	with := func(b []byte, i int, c byte) []byte {
		b = bytes.Clone(b)
		b[i] = c
		return b
	}
	twoOPT := dnsMsg(t, dnsmessage.Header{ID: 9}, q, func(b *dnsmessage.Builder) { opt(b); opt2(t, b) })
	loop := append(bytes.Clone(query[:12]), 0xc0, 12, 0, 1, 0, 1) // a name that points at itself
	for name, tc := range map[string]struct {
		b    []byte
		want Verdict
	}{
		"query":                   {query, Match},
		"query with EDNS":         {dnsMsg(t, dnsmessage.Header{ID: 8}, q, opt), Match},
		"IXFR with SOA authority": {dnsMsg(t, dnsmessage.Header{ID: 8}, []dnsmessage.Question{{Name: name, Type: 251 /* IXFR, RFC 1995 */, Class: dnsmessage.ClassINET}}, soa("authority")), Match},
		"NOTIFY with SOA answer":  {dnsMsg(t, dnsmessage.Header{ID: 8, OpCode: 4}, []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET}}, soa("answer")), Match},
		"UPDATE":                  {dnsMsg(t, dnsmessage.Header{ID: 8, OpCode: 5}, []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET}}, soa("authority")), Match},
		"CHAOS class":             {dnsMsg(t, dnsmessage.Header{ID: 8}, []dnsmessage.Question{{Name: dnsmessage.MustNewName("version.bind."), Type: dnsmessage.TypeTXT, Class: dnsmessage.ClassCHAOS}}, nil), Match},
		"root name":               {dnsMsg(t, dnsmessage.Header{ID: 8}, []dnsmessage.Question{{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeNS, Class: dnsmessage.ClassINET}}, nil), Match},
		"empty":                   {nil, NoMatch},
		"header only":             {query[:12], NoMatch},
		"response":                {with(query, 2, query[2]|0x80), NoMatch},
		"IQUERY":                  {with(query, 2, query[2]|1<<3), NoMatch},
		"STATUS":                  {with(query, 2, query[2]|2<<3), NoMatch},
		"opcode 15":               {with(query, 2, query[2]|15<<3), NoMatch},
		"Z bit":                   {with(query, 3, 0x40), NoMatch},
		"RCODE set":               {with(query, 3, 0x02), NoMatch},
		"no question":             {with(query, 5, 0), NoMatch},
		"two questions":           {with(query, 5, 2), NoMatch},
		"query with an answer":    {dnsMsg(t, dnsmessage.Header{ID: 8}, q, soa("answer")), NoMatch},
		"answer count past end":   {with(query, 7, 1), NoMatch},
		"additional past end":     {with(query, 11, 3), NoMatch},
		"truncated question":      {query[:len(query)-1], NoMatch},
		"label past end":          {append(bytes.Clone(query[:12]), 40, 'a'), NoMatch},
		"pointer loop":            {loop, NoMatch},
		"class 2":                 {with(query, len(query)-1, 2), NoMatch},
		"type 0":                  {with(with(query, len(query)-4, 0), len(query)-3, 0), NoMatch},
		"two OPT records":         {twoOPT, NoMatch},
		// An A record declaring 12,336 bytes of data in a 32-byte
		// datagram (found by FuzzDNS; dnsmessage's Unpack takes it).
		"record past end":    {[]byte("00 0\x00\x01\x00\x00\x00\x00\x00\x01\x0000\x00\x01\x00\x00\x01000000000000"), NoMatch},
		"QUIC-looking bytes": {append([]byte{0xc0, 0, 0, 0, 1}, make([]byte, 40)...), NoMatch},
	} {
		if v, info := DNS(tc.b); v != tc.want || !reflect.DeepEqual(info, Info{}) {
			t.Errorf("%s: %v %+v, want %v", name, v, info, tc.want)
		}
	}
}

// opt2 adds a second OPT record in the additional section already
// started.
func opt2(t testing.TB, b *dnsmessage.Builder) {
	t.Helper()
	var rh dnsmessage.ResourceHeader
	if err := rh.SetEDNS0(512, dnsmessage.RCodeSuccess, false); err != nil {
		t.Fatal(err)
	}
	if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
		t.Fatal(err)
	}
}

// fuzzUDP seeds a UDP sniffer's fuzz target with every capture, QUIC's
// included, and checks what holds for every datagram: no panic, never
// NeedMore (a datagram is whole), the zero Info unless Match, and p's own
// invariants.
func fuzzUDP(f *testing.F, sniff Func, extra func(t *testing.T, b []byte, v Verdict, info Info)) {
	for _, tc := range udpCases() {
		b, err := os.ReadFile(filepath.Join(udpDir, tc.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range quicDatagrams(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, info := sniff(b)
		if v == NeedMore {
			t.Fatal("NeedMore on a datagram")
		}
		if v != Match && !reflect.DeepEqual(info, Info{}) {
			t.Fatalf("%v with Info %+v", v, info)
		}
		if extra != nil {
			extra(t, b, v, info)
		}
	})
}

func FuzzWireGuard(f *testing.F) {
	fuzzUDP(f, WireGuard, func(t *testing.T, b []byte, v Verdict, _ Info) {
		want := len(b) == 148 && bytes.HasPrefix(b, []byte{1, 0, 0, 0}) &&
			!allZero(b[8:40]) && !allZero(b[116:132])
		if (v == Match) != want {
			t.Fatalf("%v on %x", v, b)
		}
	})
}

// FuzzOpenVPNUDP holds the UDP sniffer to the TCP one: a datagram matches
// exactly when, framed with TCP's length prefix, it matches the TCP
// sniffer with the same opcode and has a session id.
func FuzzOpenVPNUDP(f *testing.F) {
	fuzzUDP(f, OpenVPNUDP, func(t *testing.T, b []byte, v Verdict, info Info) {
		if len(b) > 0xffff {
			return
		}
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
		tv, tinfo := OpenVPN(append(framed, b...))
		want := tv == Match && len(b) > 8 && !allZero(b[1:9])
		if (v == Match) != want || v == Match && !reflect.DeepEqual(info, tinfo) {
			t.Fatalf("UDP %v %+v, TCP %v %+v, on %x", v, info, tv, tinfo, b)
		}
	})
}

// FuzzDNS holds the sniffer to dnsmessage's whole-message parser: a
// message it unpacks that keeps the documented rules must match.
// Message.Unpack reads the fixed-size body of an A or AAAA record without
// holding it to the record's declared length, so that a record claiming
// more bytes than the datagram has (testdata/fuzz/FuzzDNS/c839fdf7ea080015:
// 12,336 of them, in 32 bytes) unpacks; the sniffer refuses it, as a DNS
// server does (FORMERR), and so does the oracle (recordsFit).
func FuzzDNS(f *testing.F) {
	fuzzUDP(f, DNS, func(t *testing.T, b []byte, v Verdict, _ Info) {
		var m dnsmessage.Message
		if err := m.Unpack(b); err != nil || !recordsFit(b) {
			return
		}
		h := m.Header
		opts := 0
		for _, r := range m.Additionals {
			if r.Header.Type == dnsmessage.TypeOPT {
				opts++
			}
		}
		keeps := !h.Response && (h.OpCode == 0 && len(m.Answers) == 0 || h.OpCode == 4 || h.OpCode == 5) &&
			b[3]&dnsFlagZ == 0 && h.RCode == 0 && len(m.Questions) == 1 && m.Questions[0].Type != 0 && opts <= 1
		if keeps {
			switch m.Questions[0].Class {
			case dnsmessage.ClassINET, dnsmessage.ClassCHAOS, dnsmessage.ClassHESIOD, dnsClassNone, dnsmessage.ClassANY:
			default:
				keeps = false
			}
		}
		if keeps && v != Match {
			t.Fatalf("dnsmessage unpacks %+v, the sniffer says %v", m, v)
		}
	})
}

// recordsFit reports whether every record of the DNS message b ends
// within it, as dnsmessage's Parser finds when it skips them by their
// declared lengths.
func recordsFit(b []byte) bool {
	var p dnsmessage.Parser
	if _, err := p.Start(b); err != nil {
		return false
	}
	return p.SkipAllQuestions() == nil && p.SkipAllAnswers() == nil &&
		p.SkipAllAuthorities() == nil && p.SkipAllAdditionals() == nil
}

// BenchmarkUDP runs each UDP sniffer on its own capture (Match) and on
// the others' (NoMatch, the common case when routes are tried in turn).
func BenchmarkUDP(b *testing.B) {
	in := map[string][]byte{}
	for _, tc := range udpCases() {
		d, err := os.ReadFile(filepath.Join(udpDir, tc.file))
		if err != nil {
			b.Fatal(err)
		}
		in[strings.TrimSuffix(tc.file, ".bin")] = d
	}
	in["quic-go_v1_pq"] = quicDatagrams(b)["quic-go_v1_pq.0.bin"]
	for name, f := range udpSniffers() {
		for input, d := range in {
			want := NoMatch
			if v, _ := f(d); v == Match {
				want = Match
			}
			if want == NoMatch && !strings.HasPrefix(input, "wireguard") && !strings.HasPrefix(input, "quic") && !strings.HasPrefix(input, "dns_query_dig") {
				continue // one NoMatch input per protocol is enough
			}
			b.Run(name+"/"+want.String()+"/"+input, func(b *testing.B) { benchSniff(b, f, d, want) })
		}
	}
}

// TestUDPAllocs keeps the UDP sniffers free of allocations on every real
// datagram, matched or not: they run on every new flow of a shared port,
// and their Info holds nothing to allocate.
func TestUDPAllocs(t *testing.T) {
	ds := quicDatagrams(t)
	for _, tc := range udpCases() {
		b, err := os.ReadFile(filepath.Join(udpDir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		ds[tc.file] = b
	}
	for file, d := range ds {
		for name, f := range udpSniffers() {
			if n := testing.AllocsPerRun(20, func() { f(d) }); n != 0 {
				t.Errorf("%s on %s: %v allocations", name, file, n)
			}
		}
	}
}
