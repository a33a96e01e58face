package quic

import "github.com/portmux/portmux/dataplane/sniff"

// Sniff is QUIC's first-datagram sniffer, with the shape of
// dataplane/sniff's: a pure function of the first datagram of a UDP flow.
//
//   - Match: the datagram holds a client's Initial of QUIC v1 or v2 that
//     decrypts and a complete, valid ClientHello; Info has its SNI, ALPN
//     and TLS versions.
//   - NeedMore: a valid start whose ClientHello continues in later
//     datagrams (post-quantum key shares), or a first datagram of 0-RTT
//     only; an Assembler fed this datagram and the next decides.
//   - NoMatch: anything else, a short Initial (ErrShortInitial) included.
//
// It lives here and not in dataplane/sniff because it needs this package,
// which needs sniff's ClientHello parser: sniff stays free of
// cryptography. A route table can hold it next to sniff.WireGuard,
// sniff.OpenVPNUDP and sniff.DNS.
func Sniff(datagram []byte) (sniff.Verdict, sniff.Info) {
	var a Assembler
	switch st, _ := a.Add(datagram); st {
	case Done:
		return sniff.Match, a.Info()
	case NeedMore:
		return sniff.NeedMore, sniff.Info{}
	}
	return sniff.NoMatch, sniff.Info{}
}
