package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
)

// Defaults of Client fields left zero.
const (
	DefaultDialTimeout = 30 * time.Second
	DefaultRetries     = 4
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 15 * time.Second
)

// Client opens tunnels through one tunnel route. Its exported fields must
// not change once it has been used; it is safe for concurrent use.
type Client struct {
	// URL is the route's address: ws:// or wss:// (http:// and https://
	// are taken as such), with a path the route's pathPrefix matches.
	// Query parameters it has are kept.
	URL *url.URL

	// Token is sent as "Authorization: Bearer"; empty sends none.
	Token string

	// TLS configures wss:// connections: RootCAs (nil: the system's),
	// ServerName, InsecureSkipVerify (never verify the server: anyone on
	// the path can read the tunnel and the token). Nil uses the defaults.
	TLS *tls.Config

	// Proxy chooses the HTTP proxy a connection goes through, reached
	// with CONNECT; nil or a nil URL: direct. See ProxyFromEnvironment
	// and FixedProxy.
	Proxy func(*url.URL) (*url.URL, error)

	// KeepAlive is the interval between pings to the server, PongTimeout
	// how long a pong may take (defaults 20s and 10s; a negative KeepAlive
	// disables pings). UDPIdleTimeout ends a UDP session that carried
	// nothing for that long (default 60s).
	KeepAlive, PongTimeout, UDPIdleTimeout time.Duration

	// DialTimeout bounds one handshake: TCP, proxy, TLS and upgrade.
	// Zero means 30s.
	DialTimeout time.Duration

	// Retries is how many times a failed handshake is tried again before
	// a local TCP connection is given up or a stdio stream fails (UDP
	// sessions retry while datagrams keep coming). Refusals with a 4xx
	// status are never retried. Zero means DefaultRetries; negative: no
	// retry.
	Retries int

	// MinBackoff and MaxBackoff bound the exponential, jittered wait
	// between attempts. Zero means 200ms and 15s.
	MinBackoff, MaxBackoff time.Duration

	// Log receives one line per tunnel at V(1), and failures.
	Log logr.Logger

	initOnce sync.Once
	hc       *http.Client
}

func (c *Client) init() {
	c.initOnce.Do(func() {
		var cfg *tls.Config
		if c.TLS != nil {
			cfg = c.TLS.Clone()
		} else {
			cfg = &tls.Config{}
		}
		// WebSocket needs HTTP/1.1 (RFC 6455; RFC 8441 over HTTP/2 is
		// not what the dataplane serves).
		cfg.NextProtos = []string{"http/1.1"}
		c.hc = &http.Client{
			Transport: &upgradeTransport{c: c, tls: cfg},
			// Never follow a redirect: it would carry the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	})
}

func (c *Client) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return DefaultDialTimeout
}

func (c *Client) retries() int { return setting(c.Retries, DefaultRetries) }

func (c *Client) watchdog(live *liveness, idle time.Duration) *watchdog {
	w := &watchdog{interval: c.KeepAlive, timeout: c.PongTimeout, idle: idle, live: live}
	if w.interval == 0 {
		w.interval = DefaultKeepAlive
	}
	if w.timeout <= 0 {
		w.timeout = DefaultPongTimeout
	}
	return w
}

func (c *Client) udpIdle() time.Duration { return setting(c.UDPIdleTimeout, DefaultUDPIdleTimeout) }

// setting reads a Client field where 0 asks for the default and a negative
// value for none.
func setting[T int | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// dialContext connects to the server, through the proxy when one
// applies.
func (c *Client) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: c.dialTimeout(), KeepAlive: 30 * time.Second}
	if c.Proxy != nil {
		p, err := c.Proxy(c.URL)
		if err != nil {
			return nil, fmt.Errorf("choose proxy: %w", err)
		}
		if p != nil {
			return dialConnect(ctx, d, p, address, nil)
		}
	}
	return d.DialContext(ctx, network, address)
}

// handshake opens one WebSocket connection for target, and returns the
// coalescer its messages are written through.
func (c *Client) handshake(ctx context.Context, target string, udp bool) (*websocket.Conn, *liveness, *coalescer, error) {
	if c.URL == nil {
		return nil, nil, nil, errors.New("tunnel client has no URL")
	}
	c.init()
	u := *c.URL
	q := u.Query()
	q.Set(ParamTarget, target)
	if udp {
		q.Set(ParamProtocol, ProtocolUDP)
	} else {
		q.Set(ParamProtocol, ProtocolTCP)
	}
	u.RawQuery = q.Encode()

	hdr := http.Header{}
	if c.Token != "" {
		hdr.Set("Authorization", "Bearer "+c.Token)
	}
	hdr.Set("User-Agent", "portmux-tunnel")
	live := newLiveness()
	var conns handshakeConns
	ctx = context.WithValue(ctx, handshakeKey{}, &conns)
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:      c.hc,
		HTTPHeader:      hdr,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
		OnPingReceived:  live.onPing,
		OnPongReceived:  live.onPong,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, nil, nil, refused(resp)
		}
		return nil, nil, nil, err
	}
	live.room = socketRoom(conns.raw)
	return ws, live, conns.cw, nil
}

// refused reads the first line of a refusal's body.
func refused(resp *http.Response) error {
	e := &RefusedError{Status: resp.StatusCode}
	if resp.Body != nil {
		line, _ := bufio.NewReader(io.LimitReader(resp.Body, 512)).ReadString('\n')
		e.Message = strings.TrimSpace(line)
	}
	return e
}

// Dial opens one TCP tunnel to target (a name from the route's allow list,
// e.g. "sshd:22"). It makes one attempt; a refusal is a *RefusedError.
func (c *Client) Dial(ctx context.Context, target string) (*Stream, error) {
	ws, live, cw, err := c.handshake(ctx, target, false)
	if err != nil {
		return nil, err
	}
	s := newStream(ws, live, c.watchdog(live, 0), addr{"websocket", "local"}, addr{"websocket", c.URL.Host})
	s.cw = cw
	return s, nil
}

// dialRetry is Dial, tried again with backoff after failures that may
// pass.
func (c *Client) dialRetry(ctx context.Context, target string) (*Stream, error) {
	b := c.newBackoff()
	for attempt := 0; ; attempt++ {
		s, err := c.Dial(ctx, target)
		if err == nil {
			return s, nil
		}
		var re *RefusedError
		if (errors.As(err, &re) && re.Permanent()) || attempt >= c.retries() || ctx.Err() != nil {
			return nil, err
		}
		wait := b.next()
		c.Log.V(1).Info("tunnel handshake failed; retrying", "target", target, "error", err.Error(), "wait", wait.String())
		if !sleep(ctx, wait) {
			return nil, err
		}
	}
}

// ServeTCP accepts connections on ln and carries each through its own
// tunnel to target until ctx is done; then it closes ln and every tunnel
// and returns nil. A connection whose tunnel cannot be opened (after the
// retries) is closed.
func (c *Client) ServeTCP(ctx context.Context, ln net.Listener, target string) error {
	stop := afterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			c.Log.Error(err, "accept failed; retrying", "listen", ln.Addr().String(), "backoff", backoff.String())
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.forwardTCP(ctx, conn, target, &wg)
		}()
	}
}

// forwardTCP opens the tunnel of a local connection, and hands both to a
// fresh goroutine (tracked by wg) that carries them: the one that made
// the handshake, deep from it, ends.
func (c *Client) forwardTCP(ctx context.Context, conn net.Conn, target string, wg *sync.WaitGroup) {
	start := time.Now()
	log := c.Log.WithValues("target", target, "client", conn.RemoteAddr().String())
	s, err := c.dialRetry(ctx, target)
	if err != nil {
		_ = conn.Close()
		if ctx.Err() == nil {
			log.Error(err, "cannot open tunnel; connection closed")
		}
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.carryTCP(ctx, conn, s, start, log)
	}()
}

// carryTCP relays a local connection and its tunnel until both end.
func (c *Client) carryTCP(ctx context.Context, conn net.Conn, s *Stream, start time.Time, log logr.Logger) {
	stop := afterFunc(ctx, func() {
		s.closeGoingAway() // first: the server learns it was no failure
		_ = conn.Close()
	})
	res := relay(s, conn, nil)
	stop()
	kv := []any{"up", res.toStream, "down", res.fromStream, "duration", time.Since(start).Round(time.Millisecond).String()}
	switch {
	case s.deadPeer():
		log.Error(ErrDeadPeer, "tunnel closed", kv...)
	case res.err != nil && ctx.Err() == nil:
		log.Error(res.err, "tunnel failed", kv...)
	default:
		log.V(1).Info("tunnel closed", kv...)
	}
}

// ServeStdio carries in and out through one tunnel to target, for ssh's
// ProxyCommand: in's end becomes the end of the stream to the target, and
// out is closed (when it is an io.Closer) once the target's stream ends. It
// returns when both directions have ended, or with the error that ended
// them.
//
// The handshake is retried (Retries) when it fails in a way that may pass.
// Once bytes have flowed the stream cannot be resumed: a broken tunnel is
// an error, as a broken TCP connection would be. A read from in that is
// still blocked when ServeStdio returns is left behind.
func (c *Client) ServeStdio(ctx context.Context, in io.Reader, out io.Writer, target string) error {
	s, err := c.dialRetry(ctx, target)
	if err != nil {
		return err
	}
	stop := afterFunc(ctx, s.closeGoingAway)
	defer stop()

	upDone := make(chan error, 1)
	go func() {
		bp := relayBuffers.Get().(*[]byte)
		defer relayBuffers.Put(bp)
		_, err := io.CopyBuffer(s, onlyReader{in}, *bp)
		if err == nil {
			err = s.CloseWrite()
		}
		upDone <- err
	}()
	bp := relayBuffers.Get().(*[]byte)
	_, downErr := io.CopyBuffer(onlyWriter{out}, s, *bp)
	relayBuffers.Put(bp)
	if oc, ok := out.(io.Closer); ok {
		_ = oc.Close()
	}
	var upErr error
	if downErr == nil {
		select {
		case upErr = <-upDone:
		case <-ctx.Done():
		}
	}
	_ = s.Close()
	switch {
	case s.deadPeer():
		return ErrDeadPeer
	case ctx.Err() != nil:
		return nil
	case downErr != nil:
		return downErr
	}
	return upErr
}

// afterFunc is context.AfterFunc whose stop also waits for f to return
// when it had started, so that nothing is left running.
func afterFunc(ctx context.Context, f func()) (stop func()) {
	done := make(chan struct{})
	stopf := context.AfterFunc(ctx, func() {
		defer close(done)
		f()
	})
	return func() {
		if !stopf() {
			<-done
		}
	}
}

// onlyReader and onlyWriter hide ReadFrom and WriteTo so that io.CopyBuffer
// uses the buffer given (and a Stream's writes stay one chunk per message).
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

// backoff is an exponential wait with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (c *Client) newBackoff() *backoff {
	b := &backoff{min: c.MinBackoff, max: c.MaxBackoff}
	if b.min <= 0 {
		b.min = DefaultMinBackoff
	}
	if b.max <= 0 {
		b.max = DefaultMaxBackoff
	}
	return b
}

// next returns the wait before the next attempt: the current step, doubled
// each time up to max, with up to half of it taken off at random so that
// clients cut off together do not come back together.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur - time.Duration(rand.Int64N(int64(b.cur)/2+1))
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
