// Command wireguard writes the first datagram wireguard-go sends to a peer:
// a handshake initiation. It runs wireguard-go's own device code
// (golang.zx2c4.com/wireguard/device) on an in-memory TUN, so no interface
// or privilege is needed, with the peer's endpoint on a local UDP socket that
// records what arrives. One ping into the TUN makes the device start the
// handshake. It prints the responder's public key, with which mac1 can be
// checked.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

func main() {
	out := flag.String("o", "wireguard_initiation.bin", "file to write the first datagram to")
	flag.Parse()

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()

	priv, peerPriv := key(), key()
	peerPub, err := curve25519.X25519(peerPriv, curve25519.Basepoint)
	if err != nil {
		log.Fatal(err)
	}
	ch := tuntest.NewChannelTUN()
	dev := device.NewDevice(ch.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wireguard: "))
	defer dev.Close()
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nendpoint=%s\nallowed_ip=10.9.0.2/32\n",
		hex.EncodeToString(priv), hex.EncodeToString(peerPub), pc.LocalAddr())
	if err := dev.IpcSet(cfg); err != nil {
		log.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		log.Fatal(err)
	}
	go func() { ch.Outbound <- tuntest.Ping(netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.0.1")) }()

	buf := make([]byte, 65535)
	if err := pc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		log.Fatal(err)
	}
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, buf[:n], 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d bytes; responder public key %s\n", *out, n, hex.EncodeToString(peerPub))
}

// key is a random Curve25519 private key, clamped (RFC 7748 §5).
func key() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		log.Fatal(err)
	}
	k[0] &= 248
	k[31] = k[31]&127 | 64
	return k
}
