package tunnel

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Options tune a Handler. The zero value is usable.
type Options struct {
	// KeepAlive is the interval between pings to the client. Zero means
	// DefaultKeepAlive (20s); negative disables pings, and a dead client is
	// then found only by TCP (minutes to hours).
	KeepAlive time.Duration

	// PongTimeout is how long a pong may take. Zero means
	// DefaultPongTimeout (10s).
	PongTimeout time.Duration

	// IdleTimeout closes a TCP tunnel that carried no byte either way for
	// this long (keepalive pings do not count). Zero means
	// DefaultIdleTimeout (1h); negative: never (an idle client then holds
	// its tunnel, a socket to the target and a goroutine for ever).
	IdleTimeout time.Duration

	// UDPIdleTimeout closes a UDP tunnel that carried no datagram either
	// way for this long. Zero means DefaultUDPIdleTimeout (60s); negative:
	// never (a client that forgets its tunnels then holds a socket each).
	UDPIdleTimeout time.Duration

	// Buffers provides the copy buffers of TCP tunnels (a chunk read is one
	// message) and bounds the memory they hold; share one between every
	// Handler of a process. A buffer is held only while a direction moves
	// bytes, never while it waits. Nil: a Buffers of this Handler's own.
	Buffers *Buffers

	// Report, when set, is called once for every request the Handler
	// answers, after it has ended: a refusal before ServeHTTP returns, a
	// tunnel when it closes (on the tunnel's goroutine, after ServeHTTP
	// has returned). ctx is the request's context: values set on the
	// server's BaseContext or ConnContext are there, but it may be
	// cancelled.
	Report func(ctx context.Context, r *Report)
}

func (o Options) withDefaults() Options {
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = DefaultPongTimeout
	}
	switch {
	case o.IdleTimeout == 0:
		o.IdleTimeout = DefaultIdleTimeout
	case o.IdleTimeout < 0:
		o.IdleTimeout = 0
	}
	switch {
	case o.UDPIdleTimeout == 0:
		o.UDPIdleTimeout = DefaultUDPIdleTimeout
	case o.UDPIdleTimeout < 0:
		o.UDPIdleTimeout = 0
	}
	if o.Buffers == nil {
		o.Buffers = &Buffers{}
	}
	return o
}

// Handler serves one tunnel route: it checks the token and the target,
// dials the target, upgrades the request to a WebSocket and carries the
// stream or the datagrams until either end closes. It is safe for
// concurrent use and keeps nothing per connection.
type Handler struct {
	opt Options
	// closed: the tunnel's token Secret is missing; refuse everything.
	closed bool
	// tokenSum is the SHA-256 of the token; auth says whether one is
	// required.
	auth     bool
	tokenSum [sha256.Size]byte
	targets  map[targetKey]*target
	// names lists every allowed name, for telling "wrong protocol" from
	// "not allowed".
	names map[string]bool
	// origins holds the allowed browser origins, canonical (see
	// snapshot.CanonicalOrigin).
	origins map[string]bool
}

type targetKey struct {
	name string
	udp  bool
}

type target struct {
	*snapshot.TunnelTarget
	dialer forward.Dialer // TCP: spreads over endpoints, next on failure
	next   atomic.Uint64  // UDP: the round-robin cursor
}

// NewHandler builds the handler of t. t is not modified and must not be
// modified while the handler is in use.
func NewHandler(t *snapshot.Tunnel, opt Options) *Handler {
	h := &Handler{
		opt:     opt.withDefaults(),
		targets: map[targetKey]*target{},
		names:   map[string]bool{},
		origins: map[string]bool{},
	}
	if t == nil || (t.Token != nil && len(t.Token) == 0) {
		// Fail closed: a token Secret that is missing allows nothing.
		h.closed = true
		return h
	}
	if len(t.Token) > 0 {
		h.auth = true
		h.tokenSum = sha256.Sum256(t.Token)
	}
	for _, o := range t.AllowedOrigins {
		if c, ok := snapshot.CanonicalOrigin(o); ok {
			h.origins[c] = true // one that is not an origin matches nothing
		}
	}
	for i := range t.Allow {
		tt := &target{TunnelTarget: &t.Allow[i]}
		tt.dialer.Timeout = tt.Backend.DialTimeout
		for _, n := range tt.Names {
			k := targetKey{name: n, udp: tt.UDP}
			if _, dup := h.targets[k]; !dup {
				h.targets[k] = tt
			}
			h.names[n] = true
		}
	}
	return h
}

// refusal is an answer before the upgrade.
type refusal struct {
	status  int
	outcome Outcome
	msg     string
}

func (r *refusal) Error() string { return r.msg }

// ServeHTTP answers one handshake request. A refused request is answered
// and reported before it returns. An upgraded one returns at once: the
// tunnel runs on goroutines of its own (the hijacked connection belongs
// to it, not to the HTTP server), and is reported when it ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep := &Report{Start: time.Now()}
	ctx := r.Context()
	report := func() {
		rep.Duration = time.Since(rep.Start)
		if h.opt.Report != nil {
			h.opt.Report(ctx, rep)
		}
	}
	upgraded := false
	defer func() {
		if !upgraded {
			report()
		}
	}()

	tt, udp, ref := h.check(r, rep)
	if ref != nil {
		h.refuse(w, rep, ref)
		return
	}

	// Dial before upgrading, so that a target that cannot be reached is a
	// 502 the client can read, not a WebSocket that closes at once.
	var up net.Conn
	var err error
	if udp {
		up, rep.Endpoint, err = h.dialUDP(ctx, tt)
	} else {
		up, rep.Endpoint, err = tt.dialer.Dial(ctx, tt.Backend.Endpoints)
	}
	if err != nil {
		h.refuse(w, rep, unreachable(rep.Target))
		rep.Err = err
		return
	}
	c, live, err := h.accept(w, r)
	if err != nil {
		_ = up.Close()
		rep.Outcome, rep.Err = OutcomeError, err
		return
	}
	rep.Status = http.StatusSwitchingProtocols
	upgraded = true
	remote := remoteAddr(r)
	shutdown := shutdownOf(ctx)
	// A fresh goroutine with a small stack carries the tunnel, and the
	// server's goroutine, deep from parsing the request, ends.
	go func() {
		// The relays contain their own panics; one anywhere else in the
		// tunnel's life still ends only this tunnel.
		if err := panics.Run(func() error {
			if udp {
				h.serveUDP(c, live, up.(*net.UDPConn), rep, shutdown)
			} else {
				h.serveTCP(c, live, up, rep, remote, shutdown)
			}
			return nil
		}); err != nil {
			_ = c.CloseNow()
			_ = up.Close()
			rep.Outcome, rep.Err = OutcomeError, err
		}
		report()
	}()
}

// shutdownKey keys the shutdown context of a connection's requests.
type shutdownKey struct{}

// WithShutdown returns ctx for the requests of one client connection,
// carrying shutdown: once it is cancelled, a tunnel upgraded on the
// connection ends with close code 1001 (going away), so the client learns
// the server stopped on purpose and can reconnect, instead of seeing its
// connection cut. Use it in http.Server's BaseContext: a request's own
// context ends with its handler, long before the tunnel does.
func WithShutdown(ctx, shutdown context.Context) context.Context {
	return context.WithValue(ctx, shutdownKey{}, shutdown)
}

// shutdownOf returns the shutdown context WithShutdown put in ctx, or a
// context that never ends.
func shutdownOf(ctx context.Context) context.Context {
	if s, ok := ctx.Value(shutdownKey{}).(context.Context); ok {
		return s
	}
	return context.Background()
}

// errShuttingDown is the report's error for a tunnel the server ended.
var errShuttingDown = errors.New("server shutting down")

// unreachable is the 502 answer. It names the target the client asked for
// but not the endpoints or the dial error: those are the cluster's
// business, and go to the log.
func unreachable(target string) *refusal {
	return &refusal{http.StatusBadGateway, OutcomeDialError, fmt.Sprintf("cannot reach %q: no endpoint answered", target)}
}

// check decides whether the request may have a tunnel, in an order that
// tells an unauthenticated client nothing about the allow list.
func (h *Handler) check(r *http.Request, rep *Report) (*target, bool, *refusal) {
	q := r.URL.Query()
	rep.Target = q.Get(ParamTarget)
	if len(rep.Target) > maxTargetLen {
		rep.Target = rep.Target[:maxTargetLen]
	}
	if h.closed {
		return nil, false, &refusal{http.StatusServiceUnavailable, OutcomeUnavailable, "tunnel unavailable: its token Secret is missing"}
	}
	if h.auth && !h.tokenOK(r.Header.Values("Authorization")) {
		return nil, false, &refusal{http.StatusUnauthorized, OutcomeUnauthorized, "missing or wrong bearer token"}
	}
	if ref := checkHandshake(r); ref != nil {
		return nil, false, ref
	}
	if ref := h.checkOrigin(r); ref != nil {
		return nil, false, ref
	}
	var udp bool
	switch p := q.Get(ParamProtocol); strings.ToLower(p) {
	case "", ProtocolTCP:
	case ProtocolUDP:
		udp = true
	default:
		return nil, false, &refusal{http.StatusBadRequest, OutcomeBadRequest, fmt.Sprintf("unknown protocol %.32q: want tcp or udp", p)}
	}
	rep.UDP = udp
	if rep.Target == "" {
		return nil, udp, &refusal{http.StatusBadRequest, OutcomeBadRequest, "missing target: add ?target=NAME:PORT"}
	}
	tt := h.targets[targetKey{name: rep.Target, udp: udp}]
	if tt == nil {
		proto := ProtocolTCP
		if udp {
			proto = ProtocolUDP
		}
		if h.names[rep.Target] {
			return nil, udp, &refusal{http.StatusForbidden, OutcomeForbidden, fmt.Sprintf("target %q is not allowed over %s", rep.Target, proto)}
		}
		return nil, udp, &refusal{http.StatusForbidden, OutcomeForbidden, fmt.Sprintf("target %q is not allowed", rep.Target)}
	}
	rep.Allowed, rep.Backend = true, tt.Backend.Name
	return tt, udp, nil
}

// tokenOK compares the bearer token in constant time. Both sides are
// hashed first, so that not even the token's length leaks through timing.
func (h *Handler) tokenOK(values []string) bool {
	if len(values) != 1 {
		return false
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1
}

// checkHandshake refuses what the upgrade would refuse (RFC 6455 §4.2.1),
// so that nothing is dialled for a request that cannot become a tunnel.
func checkHandshake(r *http.Request) *refusal {
	switch {
	case !r.ProtoAtLeast(1, 1):
		return &refusal{http.StatusUpgradeRequired, OutcomeBadRequest, "a WebSocket handshake needs HTTP/1.1"}
	case !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		return &refusal{http.StatusUpgradeRequired, OutcomeBadRequest, "not a WebSocket handshake: Upgrade: websocket required"}
	case r.Method != http.MethodGet:
		return &refusal{http.StatusMethodNotAllowed, OutcomeBadRequest, "a WebSocket handshake is a GET"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return &refusal{http.StatusBadRequest, OutcomeBadRequest, "unsupported Sec-WebSocket-Version: want 13"}
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return &refusal{http.StatusBadRequest, OutcomeBadRequest, "want exactly one Sec-WebSocket-Key"}
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return &refusal{http.StatusBadRequest, OutcomeBadRequest, "invalid Sec-WebSocket-Key"}
	}
	return nil
}

// checkOrigin refuses a browser's request from a page whose origin is not
// in the tunnel's allowed list (RFC 6455 §10.2): otherwise any web page a
// user visits could reach the targets through the user's browser. The
// request's own Host proves nothing: a page served under a name the
// attacker re-points at the tunnel (DNS rebinding) sends a matching Host
// and Origin. Non-browser clients send no Origin and are not concerned.
func (h *Handler) checkOrigin(r *http.Request) *refusal {
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return nil
	}
	if c, ok := snapshot.CanonicalOrigin(origins[0]); ok && len(origins) == 1 && h.origins[c] {
		return nil
	}
	return &refusal{http.StatusForbidden, OutcomeForbidden, fmt.Sprintf("cross-origin request refused: origin %.64q is not in the tunnel's allowedOrigins", origins[0])}
}

// headerHasToken reports whether a comma-separated header lists token
// (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (h *Handler) refuse(w http.ResponseWriter, rep *Report, ref *refusal) {
	rep.Status, rep.Outcome = ref.status, ref.outcome
	if rep.Err == nil {
		rep.Err = ref
	}
	hdr := w.Header()
	hdr.Set("Connection", "close") // one connection, one attempt
	if ref.status == http.StatusUnauthorized {
		hdr.Set("WWW-Authenticate", `Bearer realm="portmux"`)
	}
	if ref.status == http.StatusUpgradeRequired {
		hdr.Set("Upgrade", "websocket")
	}
	http.Error(w, ref.msg, ref.status)
}

// accept upgrades the request; the liveness it returns is fed by the
// connection's ping and pong callbacks.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, *liveness, error) {
	live := newLiveness()
	rec := &hijackRecorder{ResponseWriter: w}
	c, err := websocket.Accept(rec, r, &websocket.AcceptOptions{
		Subprotocols: []string{Subprotocol},
		// checkOrigin has verified the origin already.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
		OnPingReceived:     live.onPing,
		OnPongReceived:     live.onPong,
	})
	if err == nil {
		live.room = socketRoom(rec.conn)
	}
	return c, live, err
}

// hijackRecorder keeps the connection the WebSocket library takes over, so
// that the keepalive can look at its socket.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, brw, err
}

func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *Handler) watchdog(live *liveness, idle time.Duration) *watchdog {
	return &watchdog{interval: h.opt.KeepAlive, timeout: h.opt.PongTimeout, idle: idle, live: live}
}

// serveTCP carries the stream between the client and up until both ends
// have finished.
func (h *Handler) serveTCP(c *websocket.Conn, live *liveness, up net.Conn, rep *Report, remote net.Addr, shutdown context.Context) {
	s := newStream(c, live, h.watchdog(live, h.opt.IdleTimeout), up.LocalAddr(), remote)
	stop := afterFunc(shutdown, s.closeGoingAway)
	res := relay(s, up, h.opt.Buffers)
	stop()
	rep.Up, rep.Down = res.fromStream, res.toStream
	var re *ResetError
	switch {
	case shutdown.Err() != nil:
		rep.Outcome, rep.Err = OutcomeClosed, errShuttingDown
	case s.deadPeer():
		rep.Outcome, rep.Err = OutcomeDeadPeer, ErrDeadPeer
	case s.idled():
		rep.Outcome = OutcomeIdleTimeout
	case errors.As(res.err, &re) && re.Code == websocket.StatusGoingAway:
		// The client stopped on purpose (SIGINT, or ssh ending its
		// ProxyCommand): the stream was cut, but nothing failed.
		rep.Outcome, rep.Err = OutcomeClosed, res.err
	case res.err != nil:
		rep.Outcome, rep.Err = OutcomeError, res.err
	default:
		rep.Outcome = OutcomeClosed
	}
}

func remoteAddr(r *http.Request) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		return a
	}
	return addr{"tcp", r.RemoteAddr}
}

// dialUDP opens the tunnel's upstream socket to one of the target's
// endpoints, round-robin, trying the next when one fails (for UDP only
// resolution and routing can fail here).
func (h *Handler) dialUDP(ctx context.Context, tt *target) (*net.UDPConn, string, error) {
	eps := tt.Backend.Endpoints
	if len(eps) == 0 {
		return nil, "", forward.ErrNoEndpoints
	}
	timeout := tt.Backend.DialTimeout
	if timeout <= 0 {
		timeout = snapshot.DefaultDialTimeout
	}
	d := net.Dialer{Timeout: timeout}
	start := tt.next.Add(1) - 1
	var errs []error
	for i := range eps {
		ep := eps[(start+uint64(i))%uint64(len(eps))]
		c, err := d.DialContext(ctx, "udp", ep)
		if err == nil {
			uc := c.(*net.UDPConn)
			// Room for bursts of replies while the client is slow to take
			// them (the kernel caps it at net.core.rmem_max).
			_ = uc.SetReadBuffer(udpSocketBuffer)
			return uc, ep, nil
		}
		errs = append(errs, err)
	}
	return nil, "", fmt.Errorf("dial %d endpoint(s): %w", len(eps), errors.Join(errs...))
}

var _ http.Handler = (*Handler)(nil)
