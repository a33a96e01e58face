package h2_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portmux/portmux/dataplane/h2"
)

// blockWriter encodes the header blocks of one client connection: its
// encoder's table carries over from block to block, as a client's does.
type blockWriter struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

func newBlockWriter() *blockWriter {
	w := &blockWriter{}
	w.enc = hpack.NewEncoder(&w.buf)
	return w
}

// block encodes the fields kv (name, value, name, value...).
func (w *blockWriter) block(kv ...string) []byte {
	w.buf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = w.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), w.buf.Bytes()...)
}

// byteConversation is a client's bytes, preface first: a GET with a
// header block of 40 KiB over HEADERS and two CONTINUATION frames, and
// a POST with a body and trailers; byteHandler answers it and
// checkByteResponses checks what came back.
func byteConversation() []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	block := newBlockWriter().block
	_ = fr.WriteSettings()
	big := block(":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/",
		"x-big", "abc"+strings.Repeat("x", 40<<10-3))
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, BlockFragment: big[:16<<10]})
	_ = fr.WriteContinuation(1, false, big[16<<10:32<<10])
	_ = fr.WriteContinuation(1, true, big[32<<10:])
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true,
		BlockFragment: block(":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/p")})
	_ = fr.WriteData(3, false, []byte("hello"))
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndStream: true, EndHeaders: true, BlockFragment: block("x-t", " world")})
	return append([]byte(http2.ClientPreface), buf.Bytes()...)
}

var byteHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if big := r.Header.Get("X-Big"); len(big) > 3 {
		w.Header().Set("X-Big", big[:3])
		w.Header().Set("X-Big-Length", strings.Repeat("+", len(big)/1024))
	}
	_, _ = w.Write(body)
	_, _ = io.WriteString(w, r.Trailer.Get("X-T"))
})

type byteResponse struct {
	fields map[string]string
	body   string
}

// readByteResponses reads the server's frames from r until both streams
// ended, sends what it read to got, then drains r.
func readByteResponses(r io.Reader, got chan<- map[uint32]*byteResponse) {
	rfr := http2.NewFramer(nil, r)
	rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	res := map[uint32]*byteResponse{}
	for done := 0; done < 2; {
		f, err := rfr.ReadFrame()
		if err != nil {
			break
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			res[id] = &byteResponse{fields: map[string]string{}}
			for _, hf := range f.Fields {
				res[id].fields[hf.Name] = hf.Value
			}
		case *http2.DataFrame:
			res[id].body += string(f.Data())
		}
		if _, reset := f.(*http2.RSTStreamFrame); reset || id != 0 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			done++
		}
	}
	got <- res
	_, _ = io.Copy(io.Discard, r)
}

func checkByteResponses(t *testing.T, got chan map[uint32]*byteResponse) {
	t.Helper()
	var res map[uint32]*byteResponse
	select {
	case res = <-got:
	case <-time.After(ioTimeout):
		t.Fatal("no responses")
	}
	if r := res[1]; r == nil || r.fields[":status"] != "200" || r.fields["x-big"] != "abc" || len(r.fields["x-big-length"]) != 40 {
		t.Errorf("GET with a 40 KiB field in three frames: %+v", r)
	}
	if r := res[3]; r == nil || r.fields[":status"] != "200" || r.body != "hello world" {
		t.Errorf("POST with a body and trailers: %+v", r)
	}
}

// TestFramesAByteAtATime: a client whose bytes arrive one at a time
// (byteConversation) is served as if they came at once.
func TestFramesAByteAtATime(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	ended := make(chan error, 1)
	go func() { ended <- (&h2.Server{Handler: byteHandler}).ServeConn(server) }()
	t.Cleanup(func() { _ = client.Close() })
	got := make(chan map[uint32]*byteResponse, 1)
	go readByteResponses(client, got)
	sent := byteConversation()
	_ = client.SetWriteDeadline(time.Now().Add(ioTimeout))
	for i := range sent {
		if _, err := client.Write(sent[i : i+1]); err != nil {
			t.Fatalf("byte %d of %d: %v", i, len(sent), err)
		}
	}
	checkByteResponses(t, got)
	_ = client.Close()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("ServeConn: %v, want nil once the client closed", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("ServeConn did not return")
	}
}

// TestConnByteAtATime: a Conn its owner drives (Input, Output) with one
// byte per Input serves byteConversation as ServeConn does; its handlers'
// output, made on their goroutines, is asked for through flush; and the
// client's end closes it once its GOAWAY is out.
func TestConnByteAtATime(t *testing.T) {
	t.Parallel()
	flushes := make(chan struct{}, 1)
	flush := func() {
		select {
		case flushes <- struct{}{}:
		default:
		}
	}
	c := (&h2.Server{Handler: byteHandler}).NewConn("192.0.2.1:1234", flush, func() { t.Error("aborted") })
	toClient, fromServer := io.Pipe()
	got := make(chan map[uint32]*byteResponse, 1)
	go readByteResponses(toClient, got)
	send := func() (closing bool) {
		out, closing := c.Output()
		if _, err := fromServer.Write(out); err != nil {
			t.Errorf("client gone: %v", err)
		}
		return closing
	}
	for _, b := range byteConversation() {
		if err := c.Input([]byte{b}); err != nil {
			t.Fatalf("Input: %v", err)
		}
		if send() {
			t.Fatal("Output says close while the client speaks")
		}
	}
	// The handlers answer from their goroutines.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-flushes:
				send()
			case <-time.After(200 * time.Millisecond):
				return // the checks below say whether it was all
			}
		}
	}()
	checkByteResponses(t, got)
	<-done
	c.InputEnded(nil)
	if !send() {
		t.Error("Output does not say close after the client's end")
	}
	c.Closed(nil)
	_ = fromServer.Close()
	if err := c.Err(); err != nil {
		t.Errorf("Err: %v, want nil for the client's end", err)
	}
}

// TestHeaderBlockBounded: a header block that never ends ends the
// connection (GOAWAY PROTOCOL_ERROR) once it passes twice the header
// list limit, even when it decodes to nothing: CONTINUATION frames full
// of HPACK table-size updates, which the decoder takes without end.
func TestHeaderBlockBounded(t *testing.T) {
	t.Parallel()
	s := serve(t, &h2.Server{Handler: http.NotFoundHandler(), MaxHeaderListSize: 8 << 10}, nil)
	r := dialRaw(t, s.addr)
	updates := bytes.Repeat([]byte{0x20}, 4<<10) // "table size 0", 4096 times
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, BlockFragment: updates})
		for n := 0; err == nil && n < 256; n++ { // 1 MiB at most
			err = r.fr.WriteContinuation(1, false, updates)
		}
	}()
	if code := r.goAway(); code != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", code)
	}
	r.closed()
	<-wrote
}

// TestNotAPreface: a connection that does not start with the preface
// ends on its first bytes, not at the preface timeout.
func TestNotAPreface(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	ended := make(chan error, 1)
	go func() { ended <- (&h2.Server{Handler: http.NotFoundHandler()}).ServeConn(server) }()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	t.Cleanup(func() { _ = client.Close() })
	_, _ = io.WriteString(client, "GET / HTTP/1.1\r\n")
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "preface") {
			t.Errorf("ServeConn: %v, want the preface refused", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("ServeConn still waits after 16 bytes that are not a preface")
	}
}

// TestPrefaceCutShort: a client that leaves within its preface is an
// error naming the preface, not an orderly end.
func TestPrefaceCutShort(t *testing.T) {
	t.Parallel()
	s := serve(t, &h2.Server{Handler: http.NotFoundHandler()}, nil)
	c, err := net.DialTimeout("tcp", s.addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_, _ = io.WriteString(c, http2.ClientPreface[:10])
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case err := <-s.ended:
		if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "preface") {
			t.Errorf("ServeConn: %v, want the preface cut short", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("ServeConn did not return")
	}
}
