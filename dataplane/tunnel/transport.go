package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// upgradeTransport is the http.RoundTripper of a Client's handshakes. It
// makes one connection per request (TCP, through a CONNECT proxy when one
// applies, then TLS for wss://), writes the request and reads the answer
// with net/http's own functions, and hands the connection over on 101. It
// exists so that the tunnel owns the connection under the WebSocket
// library: the keepalive looks at its socket, and writes go through a
// coalescer.
type upgradeTransport struct {
	c   *Client
	tls *tls.Config
}

// handshakeKey carries a *handshakeConns in a request's context:
// RoundTrip fills it in when the request is upgraded.
type handshakeKey struct{}

type handshakeConns struct {
	raw net.Conn   // what was dialled (TCP, or the proxy's tunnel)
	cw  *coalescer // what the WebSocket library writes to
}

func (t *upgradeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	port := req.URL.Port()
	if port == "" {
		port = "80"
		if req.URL.Scheme == "https" {
			port = "443"
		}
	}
	raw, err := t.c.dialContext(ctx, "tcp", net.JoinHostPort(req.URL.Hostname(), port))
	if err != nil {
		return nil, err
	}
	conn := raw
	if req.URL.Scheme == "https" {
		cfg := t.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname()
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		conn = tc
	}
	// The exchange is bounded by ctx: cancelling it fails the blocked read
	// or write, and the connection is dropped.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	if !stop() {
		return fail(ctx.Err())
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body = &closeConnBody{ReadCloser: resp.Body, c: conn}
		return resp, nil
	}
	cw := &coalescer{Conn: conn}
	if h, ok := ctx.Value(handshakeKey{}).(*handshakeConns); ok {
		h.raw, h.cw = raw, cw
	}
	// The WebSocket library reads through a buffer of its own: keep what
	// net/http's reader holds beyond the answer, and let it go.
	var r io.Reader = conn
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		r = io.MultiReader(bytes.NewReader(append([]byte(nil), b...)), conn)
	}
	resp.Body = &upgradedBody{r: r, cw: cw}
	return resp, nil
}

// closeConnBody is a refusal's body; closing it drops the connection.
type closeConnBody struct {
	io.ReadCloser
	c net.Conn
}

func (b *closeConnBody) Close() error {
	_ = b.ReadCloser.Close()
	return b.c.Close()
}

// upgradedBody is the connection after a 101, as the WebSocket library
// wants it: reads start with what net/http had read ahead, writes go
// through the coalescer.
type upgradedBody struct {
	r  io.Reader
	cw *coalescer
}

func (b *upgradedBody) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b *upgradedBody) Write(p []byte) (int, error) { return b.cw.Write(p) }
func (b *upgradedBody) Close() error                { return b.cw.Close() }

// coalesceLimit is how much a coalescer gathers before it writes anyway.
const coalesceLimit = 512 << 10

// coalesceBuffers hold a message's frames: small messages (keystrokes,
// datagrams) take a small buffer, bulk chunks a large one.
var (
	coalesceSmall = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
	coalesceLarge = sync.Pool{New: func() any { b := make([]byte, 0, coalesceLimit+8<<10); return &b }}
)

// coalescer gathers the writes the WebSocket library makes of one message
// and sends them as one. A client masks its frames (RFC 6455 §5.3), which
// the library does through a 4 KiB buffer, writing each piece: a 256 KiB
// message would cost 64 system calls (and 64 TLS records). Between begin
// and end the pieces are gathered (up to coalesceLimit); outside, writes
// (pings and pongs) go straight through. A buffer is held only between
// begin and end.
type coalescer struct {
	net.Conn
	gather atomic.Bool
	mu     sync.Mutex
	bp     *[]byte
	pool   *sync.Pool // where bp comes from
	large  bool       // the message being gathered is big
}

// begin starts gathering a message of size bytes.
func (w *coalescer) begin(size int) {
	w.mu.Lock()
	w.large = size > 12<<10
	w.mu.Unlock()
	w.gather.Store(true)
}

// end sends what was gathered.
func (w *coalescer) end() error {
	w.gather.Store(false)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *coalescer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.gather.Load() {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
		return w.Conn.Write(p)
	}
	if w.bp == nil {
		w.pool = &coalesceSmall
		if w.large {
			w.pool = &coalesceLarge
		}
		w.bp = w.pool.Get().(*[]byte)
	}
	*w.bp = append(*w.bp, p...)
	if len(*w.bp) >= coalesceLimit {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (w *coalescer) flushLocked() error {
	if w.bp == nil {
		return nil
	}
	bp := w.bp
	w.bp = nil
	_, err := w.Conn.Write(*bp)
	*bp = (*bp)[:0]
	w.pool.Put(bp)
	return err
}

// NetConn returns the connection written to.
func (w *coalescer) NetConn() net.Conn { return w.Conn }
