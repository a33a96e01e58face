package quic_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/portmux/portmux/dataplane/quic"
	"github.com/portmux/portmux/dataplane/sniff"
)

// captureEnv names a directory to which TestQuicGoClient writes the
// datagrams it reads, to refresh testdata/corpus (see its README).
const captureEnv = "PORTMUX_QUIC_CAPTURE"

// quicGoClients are the clients TestQuicGoClient runs: both versions, with
// a classical key share (the ClientHello fits one datagram) and Go's
// default post-quantum X25519MLKEM768 (it spans two).
var quicGoClients = []struct {
	name      string
	version   quicgo.Version
	curves    []tls.CurveID
	datagrams int
}{
	{"quic-go_v1_x25519", quicgo.Version1, []tls.CurveID{tls.X25519}, 1},
	{"quic-go_v1_pq", quicgo.Version1, nil, 2},
	{"quic-go_v2_pq", quicgo.Version2, nil, 2},
}

// TestQuicGoClient dials a local UDP socket with quic-go's client and feeds
// what arrives to an Assembler: the ClientHello must come out with the SNI
// and ALPN the client was given, the version it was told to use, the DCID
// quic-go reports to its tracer and the SCID it was made to use, after as
// many datagrams as the key share needs. quic-go cuts the server_name in
// two and sends the halves out of order, so the assembler's reordering is
// exercised by a real client, live, and not only by recorded bytes.
func TestQuicGoClient(t *testing.T) {
	for _, c := range quicGoClients {
		t.Run(c.name, func(t *testing.T) {
			sni := "quic-go.example.test"
			alpn := []string{"h3", "portmux-test"}
			scid := []byte{0x5c, 0x1d, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05}
			got := dialAndAssemble(t, c.version, sni, alpn, c.curves, scid)
			a := got.assembler
			want := sniff.Info{SNI: sni, ALPN: alpn, TLSVersions: []uint16{0x0304}}
			if !reflect.DeepEqual(a.Info(), want) {
				t.Errorf("Info %+v, want %+v", a.Info(), want)
			}
			if a.Version() != quic.Version(c.version) {
				t.Errorf("version %v, want %v", a.Version(), c.version)
			}
			if a.DCID().String() != got.dcid {
				t.Errorf("DCID %v, quic-go's tracer says %s", a.DCID(), got.dcid)
			}
			if a.SCID().String() != hex.EncodeToString(scid) {
				t.Errorf("SCID %v, want %x", a.SCID(), scid)
			}
			if len(got.datagrams) != c.datagrams {
				t.Errorf("Done after %d datagrams, want %d", len(got.datagrams), c.datagrams)
			}
			if dir := os.Getenv(captureEnv); dir != "" {
				for i, d := range got.datagrams {
					name := filepath.Join(dir, fmt.Sprintf("%s.%d.bin", c.name, i))
					if err := os.WriteFile(name, d, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				t.Logf("%s: DCID %s SCID %s, %d datagrams", c.name, got.dcid, a.SCID(), len(got.datagrams))
			}
		})
	}
}

type captured struct {
	assembler *quic.Assembler
	datagrams [][]byte
	dcid      string
}

// dialAndAssemble runs a quic-go client against a UDP socket that answers
// nothing, and reads its datagrams into an Assembler until it is decided.
func dialAndAssemble(t *testing.T, v quicgo.Version, sni string, alpn []string, curves []tls.CurveID, scid []byte) captured {
	t.Helper()
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: cli, ConnectionIDGenerator: fixedCID(scid)}
	defer tr.Close()

	var (
		mu   sync.Mutex
		dcid string
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = tr.Dial(ctx, srv.LocalAddr(), &tls.Config{
			ServerName: sni, NextProtos: alpn, CurvePreferences: curves, MinVersion: tls.VersionTLS13,
		}, &quicgo.Config{
			Versions: []quicgo.Version{v},
			Tracer: func(_ context.Context, _ bool, id quicgo.ConnectionID) qlogwriter.Trace {
				mu.Lock()
				dcid = id.String()
				mu.Unlock()
				return nil
			},
		})
	}()
	defer func() { cancel(); <-done }()

	var got captured
	got.assembler = quic.NewAssembler(quic.Limits{})
	buf := make([]byte, 65536)
	for got.assembler.Status() == quic.NeedMore {
		if err := srv.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := srv.Read(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got.datagrams), err)
		}
		d := append([]byte(nil), buf[:n]...)
		got.datagrams = append(got.datagrams, d)
		if st, err := got.assembler.Add(d); st == quic.NotQUIC || err != nil {
			t.Fatalf("datagram %d (%d bytes): %v, %v", len(got.datagrams)-1, n, st, err)
		}
	}
	mu.Lock()
	got.dcid = dcid
	mu.Unlock()
	return got
}

// fixedCID makes quic-go use a chosen connection ID, so that the test
// knows the SCID of its Initial packets.
type fixedCID []byte

func (c fixedCID) GenerateConnectionID() (quicgo.ConnectionID, error) {
	return quicgo.ConnectionIDFromBytes(c), nil
}

func (c fixedCID) ConnectionIDLen() int { return len(c) }
