package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// maxListenerDepth bounds how many internal listeners one connection can pass
// through (TLS inside TLS inside ...), so no configuration loops forever.
const maxListenerDepth = 4

var (
	errNoCertificate = errors.New("no certificate configured")
	errNoRoute       = errors.New("no route matched")
	errClientLeft    = errors.New("client closed before sending anything")
)

// handle runs one connection through a listener: PROXY header, TLS
// termination, sniffing, then the chosen route's action. pre holds bytes
// already read from c that belong in front of what c will still return.
func (s *Server) handle(ev *connEvent, c net.Conn, pre []byte, cfg *config, lc *listenerConfig, depth int) {
	probeTimeout := lc.ProbeTimeout
	if probeTimeout <= 0 {
		probeTimeout = snapshot.DefaultProbeTimeout
	}
	probeEnd := time.Now().Add(probeTimeout)

	if lc.ProxyProtocol != nil && depth == 0 {
		ph, err := readProxyHeader(c, probeEnd)
		if err != nil {
			ev.outcome, ev.err = OutcomeProxyError, err
			return
		}
		ev.client, pre = ph.client, ph.rest
		ev.proxySrc, ev.proxyDst = ph.src, ph.dst
		client := peerAddr(c)
		if ph.src != nil {
			client = ph.src.AddrPort().Addr()
		}
		if !s.admitClient(ev, lc, client) {
			return
		}
	}

	// sni is the server name of a handshake this listener terminated: an
	// HTTP/2 stream inside is routed by it (route.DecideTerminated).
	var sni string
	if lc.tls != nil {
		tc := tls.Server(withPrefix(c, pre), lc.tls)
		_ = c.SetDeadline(probeEnd)
		err := tc.HandshakeContext(context.Background())
		_ = c.SetDeadline(time.Time{})
		if err != nil {
			ev.outcome, ev.err = OutcomeTLSError, fmt.Errorf("TLS handshake: %w", err)
			return
		}
		st := tc.ConnectionState()
		ev.sni, ev.alpn, ev.tls = st.ServerName, st.NegotiatedProtocol, true
		sni = strings.TrimSuffix(strings.ToLower(st.ServerName), ".")
		c, pre = tc, nil
		probeEnd = time.Now().Add(probeTimeout)
	}

	bp, data, d, err := s.probe(c, pre, lc, sni, probeEnd)
	lc.sniff.Observe(time.Since(ev.start).Seconds())
	release := func() {
		if bp != nil {
			s.probeBufs.Put(bp)
			bp = nil
		}
	}
	defer release()
	if err != nil {
		ev.outcome, ev.err = OutcomeProbeError, err
		return
	}
	if d.Route < 0 {
		ev.outcome, ev.err = OutcomeNoRoute, errNoRoute
		return
	}
	rc := &lc.routes[d.Route]
	ev.route, ev.protocol = rc.Name, string(rc.Match.Protocol)
	if d.Info.SNI != "" {
		ev.sni = d.Info.SNI
	}
	if d.Info.Host != "" {
		ev.host = d.Info.Host
	}

	switch {
	case rc.Backend != nil && rc.Backend.Mode == snapshot.ModeHTTP:
		// The sniffed bytes are the first request, served by net/http;
		// copy them out of the pooled buffer, which is not held while the
		// connection lives.
		first := append([]byte(nil), data...)
		release()
		s.serveHTTP(ev, c, first, cfg, lc, rc)
	case rc.Backend != nil:
		s.forward(ev, c, data, rc, release)
	case rc.Listener != "":
		next := cfg.listeners[rc.Listener]
		if next == nil || depth+1 >= maxListenerDepth {
			ev.outcome, ev.err = OutcomeError, fmt.Errorf("internal listener %q unavailable", rc.Listener)
			return
		}
		ev.internalListeners = append(ev.internalListeners, next.Name)
		// The sniffed bytes are the start of the TLS stream the internal
		// listener terminates; copy them out of the pooled buffer.
		handoff := append([]byte(nil), data...)
		release()
		s.handle(ev, c, handoff, cfg, next, depth+1)
	case rc.Tunnel != nil:
		// The sniffed bytes are the handshake request; copy them out of
		// the pooled buffer, which is not held while the tunnel lives.
		handshake := append([]byte(nil), data...)
		release()
		s.serveTunnel(ev, c, handshake, rc)
	default:
		ev.outcome, ev.err = OutcomeNoRoute, errNoRoute
	}
}

// forward dials the route's backend, sends the sniffed bytes and then
// carries the connection both ways until it ends.
func (s *Server) forward(ev *connEvent, c net.Conn, data []byte, rc *routeConfig, release func()) {
	b := rc.Backend
	up, ep, err := rc.dialer.Dial(s.stop, b.Endpoints)
	if err != nil {
		s.m.dialErrors.WithLabelValues(b.Name).Inc()
		ev.outcome, ev.err = OutcomeDialError, err
		return
	}
	ev.backend = ep
	if b.ProxyProtocol > 0 {
		src, dst := c.RemoteAddr(), c.LocalAddr()
		if ev.proxySrc != nil {
			src, dst = ev.proxySrc, ev.proxyDst // the connection the balancer took
		}
		h := proxyproto.HeaderProxyFromAddrs(byte(b.ProxyProtocol), src, dst)
		if _, err := h.WriteTo(up); err != nil {
			_ = up.Close()
			ev.outcome, ev.err = OutcomeError, fmt.Errorf("write PROXY header: %w", err)
			return
		}
	}
	if len(data) > 0 {
		if _, err := up.Write(data); err != nil {
			_ = up.Close()
			ev.outcome, ev.err = OutcomeError, fmt.Errorf("write sniffed bytes: %w", err)
			return
		}
	}
	release() // no buffer is held while the connection lives
	ev.async = true
	sent := int64(len(data))
	h := forward.Start(c, up, forward.Options{IdleTimeout: rc.idle, BufferPool: &s.copyBufs, StreamBufferPool: &s.recBufs, Parker: s.parker}, func(r forward.Result) {
		ev.up, ev.down = r.Up+sent, r.Down
		rc.up.Add(float64(ev.up))
		rc.down.Add(float64(ev.down))
		switch {
		case r.Idle:
			ev.outcome = OutcomeIdleTimeout
		case r.Err != nil && !isClosedConn(r.Err):
			ev.outcome, ev.err = OutcomeError, r.Err
		default:
			ev.outcome = OutcomeForwarded
		}
		ev.finish()
	})
	s.cutWith(ev.conn, h.Abort)
}

// probe reads the client's first bytes until a route decides, the probe
// timeout passes, the buffer is full or the client ends its stream. While
// the client has sent nothing it holds no buffer. The returned buffer, if
// any, must go back to the pool once data is no longer needed.
func (s *Server) probe(c net.Conn, pre []byte, lc *listenerConfig, sni string, end time.Time) (*[]byte, []byte, route.Decision, error) {
	// A client that dribbles its bytes costs CPU linear in them.
	prober := route.NewProber(lc.Routes, sni)
	if d := prober.Decide(pre, false); !d.NeedMore {
		return nil, pre, d, nil // e.g. an "any" route first: no waiting
	}
	_ = c.SetReadDeadline(end)
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()

	limit := lc.MaxProbeBytes
	if limit <= 0 || limit > snapshot.DefaultMaxProbeBytes {
		limit = snapshot.DefaultMaxProbeBytes
	}
	// Bytes already read (past a PROXY header) are never dropped.
	limit = max(limit, min(len(pre), snapshot.DefaultMaxProbeBytes))

	var bp *[]byte
	n := 0
	if tc, ok := c.(*net.TCPConn); ok && len(pre) == 0 {
		// No buffer while the client is silent; one read once it speaks.
		var err error
		bp, n, err = forward.ReadOrWait(tc, &s.probeBufs, limit)
		switch {
		case isTimeout(err):
			return nil, nil, prober.Decide(nil, true), nil
		case err != nil:
			return nil, nil, route.Decision{}, err
		case n == 0:
			return nil, nil, route.Decision{}, errClientLeft
		}
	} else {
		bp = s.probeBufs.Get().(*[]byte)
		n = copy((*bp)[:limit], pre)
	}
	buf := (*bp)[:limit]
	for {
		d := prober.Decide(buf[:n], false)
		if !d.NeedMore {
			return bp, buf[:n], d, nil
		}
		if n == len(buf) {
			return bp, buf[:n], prober.Decide(buf[:n], true), nil
		}
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			if isTimeout(err) || (errors.Is(err, io.EOF) && n > 0) {
				return bp, buf[:n], prober.Decide(buf[:n], true), nil
			}
			s.probeBufs.Put(bp)
			if errors.Is(err, io.EOF) {
				err = errClientLeft
			}
			return nil, nil, route.Decision{}, err
		}
	}
}

// proxyHeader is what an incoming PROXY header told.
type proxyHeader struct {
	// client is the client to log and to pass on: the header's source,
	// or the real peer for a LOCAL or non-TCP header.
	client string
	// src and dst are the connection the balancer accepted, nil unless
	// the header is a PROXY command with TCP addresses.
	src, dst *net.TCPAddr
	// rest holds the bytes read past the header.
	rest []byte
}

// readProxyHeader reads a PROXY v1 or v2 header. The read is bounded in
// time by end (a header sent byte by byte is cut there) and in size by the
// library: a v1 line is at most 107 bytes and must arrive in one read, a v2
// header at most 16 + proxyproto.MaxV2HeaderSize (4096) bytes.
func readProxyHeader(c net.Conn, end time.Time) (proxyHeader, error) {
	_ = c.SetReadDeadline(end)
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	br := bufio.NewReaderSize(c, 512)
	h, err := proxyproto.Read(br)
	if err != nil {
		return proxyHeader{}, fmt.Errorf("PROXY header: %w", err)
	}
	ph := proxyHeader{client: c.RemoteAddr().String()}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		ph.rest = append([]byte(nil), rest...)
	}
	// A LOCAL header (the balancer's own health check) and addresses that
	// are not TCP (UNKNOWN, UNSPEC, UDP, unix) leave the real peer as the
	// client, as the spec says for LOCAL.
	if src, dst, ok := h.TCPAddrs(); ok && h.Command.IsProxy() {
		ph.client, ph.src, ph.dst = src.String(), src, dst
	}
	return ph, nil
}

func isTimeout(err error) bool {
	return err != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

func isClosedConn(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrClosedPipe)
}

// prefixConn replays bytes read while sniffing before reading on.
type prefixConn struct {
	net.Conn
	pre []byte
}

func withPrefix(c net.Conn, pre []byte) net.Conn {
	if len(pre) == 0 {
		return c
	}
	return &prefixConn{Conn: c, pre: pre}
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes the underlying connection when it can.
func (p *prefixConn) CloseWrite() error {
	if hc, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return p.Close()
}
