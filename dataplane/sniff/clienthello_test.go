package sniff

import (
	"reflect"
	"testing"
)

// TestClientHello checks the export for QUIC: a ClientHello handshake
// message gives the Info the TLS sniffer gives for the same message in
// records, and anything but exactly one ClientHello message is refused.
func TestClientHello(t *testing.T) {
	stream := goClientHello(t, "quic.example", "h3")
	msg := handshakeOf(t, stream)
	_, want := TLS(stream)
	if want.SNI != "quic.example" {
		t.Fatalf("TLS sniffer: %+v", want)
	}
	if info, ok := ClientHello(msg); !ok || !reflect.DeepEqual(info, want) {
		t.Errorf("ClientHello: %v %+v, want %+v", ok, info, want)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"record":         stream,
		"truncated":      msg[:len(msg)-1],
		"trailing byte":  append(msg[:len(msg):len(msg)], 0),
		"server hello":   append([]byte{2}, msg[1:]...),
		"header only":    msg[:4],
		"synthetic, dup": clientHelloMsg(helloSpec{exts: []helloExt{sniExt("a"), sniExt("a")}}),
	} {
		if info, ok := ClientHello(b); ok || !reflect.DeepEqual(info, Info{}) {
			t.Errorf("%s: %v %+v", name, ok, info)
		}
	}
}
