//go:build linux

// Command minh2loop is the least an HTTP/2 reverse proxy in Go does when
// it runs on epoll loops instead of goroutines: one loop per core, each
// with a listener of its own (SO_REUSEPORT), reads h2c connections (prior
// knowledge), decodes each request's header block with x/net's HPACK,
// sends the request as HTTP/1.1 with X-Forwarded-For on a kept-alive
// backend connection of the loop's, and encodes the response's head and
// body as HEADERS and DATA frames, all from the loop; the frames of a
// round of events go out in one write per connection.
//
// With -tls-listen it serves h2 over TLS too: crypto/tls does the
// handshake on a goroutine, with the socket in Go's hands; then the
// socket moves to a loop, and the same crypto/tls connection decrypts
// what the loop reads and encrypts what it writes, through a connection
// of memory whose reads, when it holds nothing, fail with an error
// crypto/tls takes as temporary (a timeout): its state stays intact and
// the next read resumes the record.
//
// It exists for the benchmarks only (hack/bench-http.sh, peer go-loop,
// scenarios h2c and h2-tls): beside portmux, whose HTTP/2 streams each
// run on a goroutine, and go-minimal (net/http's HTTP/2 server), it
// shows what the same work costs in Go without the goroutines, the
// design question of issue 19's HTTP/2 gap. It is not a proxy: it answers bodiless
// requests only, with responses whose body fits one read of the backend
// and the client's windows; it routes, limits and checks nothing, knows
// no CONTINUATION, padding aside, and no flow control; a frame it does
// not expect (a request body, a continued header block) ends the
// connection.
//
// Usage:
//
//	minh2loop -listen 127.0.0.1:17443 -target 127.0.0.1:17180
//	minh2loop -listen 127.0.0.1:17443 -tls-listen 127.0.0.1:17444 -tls-cert c.pem -tls-key k.pem -target 127.0.0.1:17180
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:17443", "address to accept h2c connections on")
	tlsListen := flag.String("tls-listen", "", "address to accept TLS connections (h2 by ALPN) on, with -tls-cert and -tls-key")
	target := flag.String("target", "127.0.0.1:17180", "the HTTP/1.1 backend every request goes to")
	certFile := flag.String("tls-cert", "", "PEM certificate of -tls-listen")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	loops, _, err := start(*listen, *target, runtime.GOMAXPROCS(0))
	if err != nil {
		fail(err)
	}
	if *tlsListen != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail(err)
		}
		tl, err := net.Listen("tcp", *tlsListen)
		if err != nil {
			fail(err)
		}
		fail(serveTLS(tl, cert, loops))
	}
	select {}
}

// start runs n loops accepting on listen (a port of 0 picks one), and
// returns them and the address they accept on.
func start(listen, target string, n int) ([]*loop, netip.AddrPort, error) {
	la, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil, la, err
	}
	ta, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, la, err
	}
	loops := make([]*loop, n)
	for i := range loops {
		if loops[i], err = newLoop(la, ta); err != nil {
			return nil, la, err
		}
		if la.Port() == 0 { // the others share the port the first got
			sa, err := unix.Getsockname(loops[i].lfd)
			if err != nil {
				return nil, la, err
			}
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				la = netip.AddrPortFrom(la.Addr(), uint16(a.Port)) //nolint:gosec // a port
			case *unix.SockaddrInet6:
				la = netip.AddrPortFrom(la.Addr(), uint16(a.Port)) //nolint:gosec // a port
			}
		}
	}
	for _, l := range loops {
		go l.run()
	}
	return loops, la, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "minh2loop:", err)
	os.Exit(1)
}

// loop owns an epoll set, a listener and the connections it accepted,
// client and backend: nothing is shared between loops.
type loop struct {
	ep, lfd  int
	target   netip.AddrPort
	clients  map[int]*client
	backends map[int]*backend
	idle     []*backend
	// dirty are the clients with output to write at the end of the round.
	dirty []*client
	rbuf  []byte
	// wake is an eventfd that tells the loop a TLS connection waits in
	// adopted, under mu.
	wake    int
	mu      sync.Mutex
	adopted []*client
}

// client is an h2c connection.
type client struct {
	fd      int
	in, out []byte
	// tls and mem are set for h2 over TLS: in and out are plaintext.
	tls     *tls.Conn
	mem     *memConn
	preface bool
	dec     *hpack.Decoder
	fields  []hpack.HeaderField
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	dirty   bool
	closed  bool
}

// backend is a connection to the target; c and stream name the request
// it carries, c nil while idle.
type backend struct {
	fd     int
	buf    []byte
	c      *client
	stream uint32
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

func family(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func newLoop(la, ta netip.AddrPort) (*loop, error) {
	lfd, err := unix.Socket(family(la), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, opt, 1); err != nil {
			return nil, fmt.Errorf("listener: %w", err)
		}
	}
	if err := unix.Bind(lfd, sockaddr(la)); err != nil {
		return nil, fmt.Errorf("binding %s: %w", la, err)
	}
	if err := unix.Listen(lfd, 1024); err != nil {
		return nil, fmt.Errorf("listening on %s: %w", la, err)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return &loop{
		ep: ep, lfd: lfd, wake: wake, target: ta,
		clients: map[int]*client{}, backends: map[int]*backend{}, rbuf: make([]byte, 64<<10),
	}, nil
}

// run handles rounds of events for ever, and writes each round's output
// at its end.
func (l *loop) run() {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(l.ep, events, -1)
		if err != nil {
			continue // EINTR
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == l.lfd {
				l.accept()
			} else if fd == l.wake {
				l.adopt()
			} else if c := l.clients[fd]; c != nil {
				l.clientReady(c, ev.Events)
			} else if b := l.backends[fd]; b != nil {
				l.backendReadable(b)
			}
		}
		for _, c := range l.dirty {
			c.dirty = false
			l.flush(c)
		}
		clear(l.dirty)
		l.dirty = l.dirty[:0]
	}
}

func (l *loop) accept() {
	for {
		fd, _, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN: another loop took it, or none is left
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		l.register(&client{fd: fd})
	}
}

// register starts carrying c, whose fd is a non-blocking socket.
func (l *loop) register(c *client) {
	c.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { c.fields = append(c.fields, f) })
	c.enc = hpack.NewEncoder(&c.hbuf)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, c.fd, &ev) != nil {
		_ = unix.Close(c.fd)
		return
	}
	l.clients[c.fd] = c
	c.out = appendFrame(c.out, frameSettings, 0, 0, nil)
	l.mark(c)
	if c.tls != nil {
		// The handshake may have read the first records already.
		if l.decrypt(c, nil) != nil || l.frames(c) != nil {
			l.closeClient(c)
		}
	}
}

// adopt registers the TLS connections handed to the loop.
func (l *loop) adopt() {
	var b [8]byte
	_, _ = unix.Read(l.wake, b[:])
	l.mu.Lock()
	adopted := l.adopted
	l.adopted = nil
	l.mu.Unlock()
	for _, c := range adopted {
		l.register(c)
	}
}

// hand gives c to the loop, from another goroutine.
func (l *loop) hand(c *client) {
	l.mu.Lock()
	l.adopted = append(l.adopted, c)
	l.mu.Unlock()
	one := [8]byte{7: 1}
	_, _ = unix.Write(l.wake, one[:])
}

// mark has c's output written at the end of the round.
func (l *loop) mark(c *client) {
	if !c.dirty {
		c.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

// flush writes what it can of c's output, encrypted first over TLS; the
// rest waits for EPOLLOUT.
func (l *loop) flush(c *client) {
	if c.closed {
		return
	}
	out := &c.out
	if c.tls != nil {
		if len(c.out) > 0 {
			if _, err := c.tls.Write(c.out); err != nil {
				l.closeClient(c)
				return
			}
			c.out = c.out[:0]
		}
		out = &c.mem.out
	}
	if len(*out) == 0 {
		return
	}
	n, err := unix.Write(c.fd, *out)
	if n > 0 {
		*out = (*out)[:copy(*out, (*out)[n:])]
	}
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.closeClient(c)
	}
}

func (l *loop) closeClient(c *client) {
	if c.closed {
		return
	}
	c.closed = true
	delete(l.clients, c.fd)
	_ = unix.Close(c.fd)
	for _, b := range l.backends {
		if b.c == c {
			b.c = nil // its response is dropped; the backend stays in use
		}
	}
}

// HTTP/2 frame types and flags (RFC 9113 §6).
const (
	frameData     = 0x0
	frameHeaders  = 0x1
	frameSettings = 0x4
	framePing     = 0x6
	flagAck       = 0x1
	flagEndStream = 0x1
	flagEndHeader = 0x4
	flagPadded    = 0x8
	flagPriority  = 0x20
	frameHeadLen  = 9
	clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

func appendFrame(b []byte, typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, payload...)
}

func (l *loop) clientReady(c *client, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		for {
			n, err := unix.Read(c.fd, l.rbuf)
			if n > 0 {
				if c.tls == nil {
					c.in = append(c.in, l.rbuf[:n]...)
				} else if l.decrypt(c, l.rbuf[:n]) != nil {
					l.closeClient(c)
					return
				}
			}
			if n == 0 || (err != nil && !errors.Is(err, unix.EAGAIN)) {
				l.closeClient(c)
				return
			}
			if err != nil || n < len(l.rbuf) {
				break
			}
		}
		if err := l.frames(c); err != nil {
			l.closeClient(c)
			return
		}
	}
	if events&unix.EPOLLOUT != 0 {
		l.mark(c)
	}
}

// frames handles the whole frames c sent; a partial one waits for more.
func (l *loop) frames(c *client) error {
	in := c.in
	if !c.preface {
		if len(in) < len(clientPreface) {
			return nil
		}
		if string(in[:len(clientPreface)]) != clientPreface {
			return errors.New("not an HTTP/2 preface")
		}
		in, c.preface = in[len(clientPreface):], true
	}
	for len(in) >= frameHeadLen {
		size := int(in[0])<<16 | int(in[1])<<8 | int(in[2])
		if len(in) < frameHeadLen+size {
			break
		}
		typ, flags := in[3], in[4]
		stream := binary.BigEndian.Uint32(in[5:9]) & 0x7fffffff
		payload := in[frameHeadLen : frameHeadLen+size]
		in = in[frameHeadLen+size:]
		switch typ {
		case frameSettings:
			if flags&flagAck == 0 {
				c.out = appendFrame(c.out, frameSettings, flagAck, 0, nil)
				l.mark(c)
			}
		case framePing:
			if flags&flagAck == 0 {
				c.out = appendFrame(c.out, framePing, flagAck, 0, payload)
				l.mark(c)
			}
		case frameHeaders:
			if flags&flagEndHeader == 0 || flags&flagEndStream == 0 {
				return errors.New("a continued header block or a request body")
			}
			if err := l.headers(c, stream, flags, payload); err != nil {
				return err
			}
		case frameData:
			return errors.New("a request body")
		}
	}
	c.in = c.in[:copy(c.in, in)]
	return nil
}

// headers decodes a request's header block and sends the request on.
func (l *loop) headers(c *client, stream uint32, flags byte, block []byte) error {
	if flags&flagPadded != 0 {
		if len(block) == 0 || int(block[0]) >= len(block) {
			return errors.New("bad padding")
		}
		block = block[1 : len(block)-int(block[0])]
	}
	if flags&flagPriority != 0 {
		if len(block) < 5 {
			return errors.New("short priority")
		}
		block = block[5:]
	}
	c.fields = c.fields[:0]
	if _, err := c.dec.Write(block); err != nil {
		return fmt.Errorf("HPACK: %w", err)
	}
	method, path, authority := "GET", "/", ""
	for _, f := range c.fields {
		switch f.Name {
		case ":method":
			method = f.Value
		case ":path":
			path = f.Value
		case ":authority":
			authority = f.Value
		}
	}
	b, err := l.backend()
	if err != nil {
		return err
	}
	b.c, b.stream = c, stream
	req := make([]byte, 0, 256)
	req = append(req, method...)
	req = append(req, ' ')
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, authority...)
	req = append(req, "\r\nX-Forwarded-For: 127.0.0.1\r\n"...)
	for _, f := range c.fields {
		if !f.IsPseudo() {
			req = append(append(append(append(req, f.Name...), ": "...), f.Value...), "\r\n"...)
		}
	}
	req = append(req, "\r\n"...)
	_, err = unix.Write(b.fd, req) // a small head into an empty socket buffer
	return err
}

// backend returns an idle backend connection, or connects a new one
// (blocking the loop for a loopback connect: this is a benchmark peer).
func (l *loop) backend() (*backend, error) {
	if n := len(l.idle); n > 0 {
		b := l.idle[n-1]
		l.idle = l.idle[:n-1]
		return b, nil
	}
	fd, err := unix.Socket(family(l.target), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	if err := unix.Connect(fd, sockaddr(l.target)); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("backend: %w", err)
	}
	_ = unix.SetNonblock(fd, true)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	b := &backend{fd: fd}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("backend: %w", err)
	}
	l.backends[fd] = b
	return b, nil
}

var headEnd = []byte("\r\n\r\n")

// backendReadable reads a response and, once its head and Content-Length
// body are in, passes it on as HEADERS and DATA frames.
func (l *loop) backendReadable(b *backend) {
	for {
		n, err := unix.Read(b.fd, l.rbuf)
		if n > 0 {
			b.buf = append(b.buf, l.rbuf[:n]...)
		}
		if n == 0 || (err != nil && !errors.Is(err, unix.EAGAIN)) {
			delete(l.backends, b.fd)
			_ = unix.Close(b.fd)
			if b.c != nil {
				l.closeClient(b.c)
			}
			return
		}
		if err != nil || n < len(l.rbuf) {
			break
		}
	}
	end := bytes.Index(b.buf, headEnd)
	if end < 0 {
		return
	}
	status, fields, length, ok := parseHead(b.buf[:end])
	body := b.buf[end+len(headEnd):]
	if !ok || length < 0 {
		delete(l.backends, b.fd) // not what this peer handles
		_ = unix.Close(b.fd)
		if b.c != nil {
			l.closeClient(b.c)
		}
		return
	}
	if len(body) < length {
		return
	}
	if c := b.c; c != nil && !c.closed {
		c.hbuf.Reset()
		_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
		for _, f := range fields {
			_ = c.enc.WriteField(f)
		}
		flags := byte(flagEndHeader)
		if length == 0 {
			flags |= flagEndStream
		}
		c.out = appendFrame(c.out, frameHeaders, flags, b.stream, c.hbuf.Bytes())
		if length > 0 {
			c.out = appendFrame(c.out, frameData, flagEndStream, b.stream, body[:length])
		}
		l.mark(c)
	}
	b.buf = b.buf[:copy(b.buf, body[length:])]
	b.c = nil
	l.idle = append(l.idle, b)
}

// parseHead reads a response head: its status, its fields in HTTP/2's
// lower case less the hop-by-hop ones, and its Content-Length (-1 when
// none).
func parseHead(head []byte) (status string, fields []hpack.HeaderField, length int, ok bool) {
	lines := bytes.Split(head, []byte("\r\n"))
	if len(lines[0]) < len("HTTP/1.1 200") {
		return "", nil, 0, false
	}
	status, length = string(lines[0][9:12]), -1
	for _, line := range lines[1:] {
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			return "", nil, 0, false
		}
		f := hpack.HeaderField{Name: string(bytes.ToLower(name)), Value: string(bytes.TrimSpace(value))}
		switch f.Name {
		case "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection":
			continue
		case "content-length":
			n, err := strconv.Atoi(f.Value)
			if err != nil {
				return "", nil, 0, false
			}
			length = n
		}
		fields = append(fields, f)
	}
	return status, fields, length, true
}

// decrypt feeds ciphertext to c's TLS connection and appends what it
// decrypts to c.in.
func (l *loop) decrypt(c *client, ciphertext []byte) error {
	c.mem.in = append(c.mem.in, ciphertext...)
	var plain [16 << 10]byte
	for {
		n, err := c.tls.Read(plain[:])
		c.in = append(c.in, plain[:n]...)
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			return nil // a partial record: the rest comes with the next read
		default:
			return err
		}
	}
}

// errWouldBlock is what a memConn's Read returns when it holds nothing:
// a timeout, which crypto/tls takes as temporary.
var errWouldBlock = &wouldBlock{}

type wouldBlock struct{}

func (*wouldBlock) Error() string   { return "would block" }
func (*wouldBlock) Timeout() bool   { return true }
func (*wouldBlock) Temporary() bool { return true }

// memConn is the connection crypto/tls reads and writes once its socket
// is the loop's: until then (during the handshake) it is the socket. The
// loop fills in and drains out.
type memConn struct {
	net.Conn
	loop    bool
	in, out []byte
}

func (m *memConn) Read(b []byte) (int, error) {
	if !m.loop {
		return m.Conn.Read(b)
	}
	if len(m.in) == 0 {
		return 0, errWouldBlock
	}
	n := copy(b, m.in)
	m.in = m.in[:copy(m.in, m.in[n:])]
	return n, nil
}

func (m *memConn) Write(b []byte) (int, error) {
	if !m.loop {
		return m.Conn.Write(b)
	}
	m.out = append(m.out, b...)
	return len(b), nil
}

// serveTLS accepts TLS connections on l, does each handshake on a
// goroutine of its own, and hands the connections that chose h2 to the
// loops in turn.
func serveTLS(l net.Listener, cert tls.Certificate, loops []*loop) error {
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	next := 0
	for {
		nc, err := l.Accept()
		if err != nil {
			return err
		}
		lp := loops[next%len(loops)]
		next++
		go handshake(nc.(*net.TCPConn), cfg, lp)
	}
}

// handshake runs c's TLS handshake, then moves its socket to lp: a
// duplicate of the descriptor, non-blocking, while Go's is closed.
func handshake(c *net.TCPConn, cfg *tls.Config, lp *loop) {
	mem := &memConn{Conn: c}
	tc := tls.Server(mem, cfg)
	if tc.Handshake() != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
		_ = c.Close()
		return
	}
	f, err := c.File()
	_ = c.Close()
	if err != nil {
		return
	}
	fd, err := unix.Dup(int(f.Fd()))
	_ = f.Close()
	if err != nil || unix.SetNonblock(fd, true) != nil {
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	mem.Conn, mem.loop = nil, true
	lp.hand(&client{fd: fd, tls: tc, mem: mem})
}
