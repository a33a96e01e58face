package h2_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane/h2"
)

// seedFrames is a well-formed client conversation after the preface:
// SETTINGS, a GET, a POST with a body and trailers, a PING, a reset, a
// WINDOW_UPDATE and GOAWAY.
func seedFrames() []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	block := newBlockWriter().block
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true,
		BlockFragment: block(":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true,
		BlockFragment: block(":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/p", "content-length", "5")})
	_ = fr.WriteData(3, false, []byte("hello"))
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndStream: true, EndHeaders: true, BlockFragment: block("x-t", "1")})
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteWindowUpdate(0, 1000)
	_ = fr.WriteWindowUpdate(1, 1000)
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = fr.WriteGoAway(3, http2.ErrCodeNo, nil)
	return buf.Bytes()
}

// FuzzServeConn feeds ServeConn a client's bytes after the preface, a
// few at a time: any input ends in ServeConn returning once the client
// has gone, without a panic, (TestMain) without a goroutine left behind,
// and with every stream Admit took given back once (Admit refuses every
// third, which answers it 503).
func FuzzServeConn(f *testing.F) {
	seed := seedFrames()
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00garbage"))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-N")
		_, _ = w.Write(bytes.Repeat([]byte("x"), 100))
		_, _ = w.Write(body)
		w.Header().Set("X-N", "1")
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		var asked, admitted, released atomic.Int64
		srv := &h2.Server{Handler: h, PrefaceTimeout: time.Second, WriteTimeout: time.Second,
			Admit: func() bool {
				if asked.Add(1)%3 == 0 {
					return false
				}
				admitted.Add(1)
				return true
			},
			Release: func() { released.Add(1) },
		}
		client, server := net.Pipe()
		ended := make(chan error, 1)
		go func() { ended <- srv.ServeConn(server) }()
		drained := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, client); close(drained) }()
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		// In writes of 7 bytes, which the server reads as they come: every
		// frame arrives in pieces.
		b := append([]byte(http2.ClientPreface), in...)
		for len(b) > 0 {
			n, err := client.Write(b[:min(len(b), 7)])
			if err != nil {
				break
			}
			b = b[n:]
		}
		_ = client.Close()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the client closed")
		}
		<-drained
		if a, r := admitted.Load(), released.Load(); a != r {
			t.Fatalf("%d streams admitted, %d released", a, r)
		}
	})
}
