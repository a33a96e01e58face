package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults of the zero Server's limits.
const (
	DefaultMaxConcurrentStreams = 100
	DefaultMaxHeaderListSize    = 64 << 10
	// DefaultStreamWindow and DefaultConnWindow bound what a client's
	// request bodies can make a connection hold: a stream's body is
	// buffered up to StreamWindow until the handler reads it, and all of
	// a connection's up to ConnWindow.
	DefaultStreamWindow = 256 << 10
	DefaultConnWindow   = 1 << 20
	DefaultIdleTimeout  = 2 * time.Minute
	// DefaultPrefaceTimeout bounds how long a client may take to send its
	// preface and first SETTINGS.
	DefaultPrefaceTimeout = 10 * time.Second
	// DefaultWriteTimeout closes a connection whose client has not taken
	// a pending write for this long.
	DefaultWriteTimeout = 2 * time.Minute
	// DefaultMaxPendingControl is how many bytes of frames the client
	// made the server answer (PING and SETTINGS acknowledgements, resets)
	// may wait unsent before the connection is ended as a flood.
	DefaultMaxPendingControl = 256 << 10
)

const (
	// maxFrameSize is the largest frame read: 16 KiB, the protocol's
	// initial value, which clients send anyway; a larger one is a
	// FRAME_SIZE_ERROR.
	maxFrameSize = 16 << 10
	// maxPendingData is how many bytes of response data may wait in a
	// connection's output before handlers wait for the writer: enough for
	// the writer to batch several streams' frames, small enough per
	// connection.
	maxPendingData = 64 << 10
	// headerListOverhead is what HTTP/2 adds to a header list's size, 32
	// bytes per field (RFC 9113 §6.5.2), for ten fields: the advertised
	// and enforced limit is MaxHeaderListSize plus this, so that a block
	// of MaxHeaderListSize bytes of names and values is not refused.
	headerListOverhead = 320
	// initialWindow is the protocol's initial window (RFC 9113 §6.9.2).
	initialWindow = 65535
	maxWindow     = 1<<31 - 1
)

// Server holds the limits and the handler of the connections it serves.
// Its zero fields take the defaults above; it is not modified by
// ServeConn and may serve many connections at once.
type Server struct {
	// Handler serves each stream, on a goroutine of its own.
	Handler http.Handler
	// Async, if set, is offered each request without a body before a
	// handler goroutine is started for it, on the connection's reading
	// goroutine (so it must not block: it delays every stream behind
	// it). Returning an Owner takes the stream: it is answered through
	// s, from any goroutine, and ended with s.End or s.Reset, and the
	// Owner hears of it; nil leaves it to Handler, and s must not be
	// used.
	Async func(s *Stream, r Request) Owner
	// ReadIdle, if set, is called on the reading goroutine each time it
	// has handled the frames it holds whole and is about to wait for
	// more: an Async taker that batches its streams' work sends it then,
	// so that the streams a client sent together start together.
	ReadIdle func()
	// Go starts a stream's handler goroutine; nil: the go statement. A
	// pool of workers that outlive their stream (package workers) saves
	// each stream growing a new goroutine's stack.
	Go func(func())
	// BaseContext gives every request's context its values and
	// deadline; once it is done, so is every request's context.
	BaseContext context.Context
	// ErrorLog takes the panics of handlers ("panic serving ...") and the
	// client's protocol errors; nil: discarded.
	ErrorLog *log.Logger
	// Admit, if set, is asked for each request stream the client opens,
	// on the reading goroutine with the connection's lock held (so it
	// must not block), for what the stream will hold beyond the
	// connection: its client's share of backend connections, which a
	// hundred streams on each of a client's connections would otherwise
	// multiply. Refused, the stream is answered 503 at once, its body (if
	// any) refused; admitted, Release (which comes with Admit) is called
	// once the stream has ended and its handler or owner is done with
	// it: every stream is one Admit admitted.
	Admit   func() bool
	Release func()
	// Drain, once done, drains every connection: GOAWAY (no error) tells
	// the client to open no more streams here, those in flight finish,
	// and the connection closes; a client that opens one anyway is
	// ignored (it may retry it elsewhere, RFC 9113 §6.8). nil: never.
	Drain context.Context

	MaxConcurrentStreams uint32
	MaxHeaderListSize    uint32
	StreamWindow         uint32
	ConnWindow           uint32
	MaxPendingControl    int
	IdleTimeout          time.Duration
	PrefaceTimeout       time.Duration
	WriteTimeout         time.Duration
}

func (s *Server) withDefaults() Server {
	c := *s
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	def(&c.MaxHeaderListSize, DefaultMaxHeaderListSize)
	def(&c.StreamWindow, DefaultStreamWindow)
	def(&c.ConnWindow, DefaultConnWindow)
	c.StreamWindow = min(c.StreamWindow, maxWindow)
	c.ConnWindow = max(min(c.ConnWindow, maxWindow), initialWindow)
	if c.MaxPendingControl <= 0 {
		c.MaxPendingControl = DefaultMaxPendingControl
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.PrefaceTimeout <= 0 {
		c.PrefaceTimeout = DefaultPrefaceTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.BaseContext == nil {
		c.BaseContext = context.Background()
	}
	if c.Go == nil {
		c.Go = func(f func()) { go f() }
	}
	return c
}

// retryLater is the head of a 503 for a stream Admit refused: the
// client may try again in a second, when its other streams may be done.
var retryLater = http.Header{"Retry-After": {"1"}}

// errConnClosed is what a handler's writes and body reads return once the
// connection is gone.
var errConnClosed = errors.New("http2: connection closed")

// errWindowWithheld is why a connection ends whose client opened no
// flow-control window for WriteTimeout while responses waited for one.
var errWindowWithheld = errors.New("http2: the client opened no flow-control window for the write timeout")

// ServeConn serves c, which must start with the client's preface, until
// the client or the server ends it; it closes c and returns once every
// handler it started has returned. The error says why the connection
// ended: nil for an orderly end (the client closed it, GOAWAY, idle).
func (s *Server) ServeConn(c net.Conn) error {
	cfg := s.withDefaults()
	sc := newServerConn(&cfg, c)
	err := sc.serve()
	sc.close(err)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil // the client left, or we closed after GOAWAY
	}
	sc.handlers.Wait()
	return err
}

// serverConn is one connection. mu guards everything below it, the
// output included: frames are encoded and appended in one critical
// section, which keeps HPACK's table and the frames in the same order.
type serverConn struct {
	srv *Server
	nc  net.Conn // nil when driven (Conn)
	// flush and abort are a driven connection's (Conn): its owner is
	// asked to take the output, or to close the connection at once.
	// flushAsked (under mu): flush was called, Output has not been since.
	flush, abort func()
	flushAsked   bool
	// in, fr, phase, maxBlock and stops are the reader's (the reading
	// goroutine, or a driven connection's owner): the input, the Framer
	// that reads it (consume), how far the preface came, the largest
	// header block held, and what stopped disarms.
	in         input
	fr         *http2.Framer
	blocks     *blockReader // decodes the header blocks fr reads
	phase      phase
	maxBlock   int
	stops      []func() bool
	remoteAddr string
	handlers   sync.WaitGroup
	writerDone chan struct{}

	mu sync.Mutex
	// out is the output not yet handed to the writer; wfr writes frames
	// into it and henc encodes header blocks into hbuf for them.
	out   outBuf
	spare []byte // the writer's last buffer, for out to reuse
	lent  []byte // driven: what Output gave, the owner's until it asks again
	wfr   *http2.Framer
	henc  *hpack.Encoder
	hbuf  bytes.Buffer
	wcond sync.Cond // the writer waits for output
	space sync.Cond // handlers wait for room in out, or the connection's window
	// writerIdle: the writer waits on wcond.
	writerIdle bool
	// idle ends the connection after IdleTimeout without streams; nil
	// until the preface is read.
	idle *time.Timer
	// windowTimer ends the connection once a response has waited for
	// the client's window until windowDue, which WriteTimeout after the
	// first wait since the client last opened window (windowWaiting).
	windowTimer   *time.Timer
	windowDue     time.Time
	windowWaiting bool
	// unwatched: the connection has stopped (stopped), and neither timer
	// may start again.
	unwatched bool

	streams map[uint32]*stream // open and half-closed streams
	// baseDone: BaseContext is done, and so is every stream's context.
	baseDone bool
	// maxID is the highest stream ID the client has opened: IDs at or
	// below it that are not in streams are closed.
	maxID uint32
	// running counts handlers that have not returned, those of reset
	// streams included, and streams Async took that have not ended;
	// asyncOpen counts the latter.
	running, asyncOpen int
	// opened counts the streams the client opened, cancelled those of
	// them it reset before their responses ended: work started for
	// nothing (see cancelledLocked).
	opened, cancelled int
	// sendWindow is what the client lets us send on the connection;
	// initialSend the initial window of its streams, and peerFrame the
	// largest frame it takes.
	sendWindow, initialSend int64
	peerFrame               uint32
	// recvWindow is what the client may still send on the connection;
	// recvUnacked what it sent that was consumed and not yet given back.
	recvWindow, recvUnacked int64
	// goAway: no new streams (sent or received GOAWAY); closing: the
	// writer closes the connection once out is sent; closed: the
	// connection is gone, nothing is written any more.
	goAway, closing, closed bool
	err                     error
}

func newServerConn(srv *Server, c net.Conn) *serverConn {
	sc := newConnState(srv, c.RemoteAddr().String())
	sc.nc = c
	sc.writerDone = make(chan struct{})
	return sc
}

// newConnState is a connection from remoteAddr, whatever serves it.
func newConnState(srv *Server, remoteAddr string) *serverConn {
	sc := &serverConn{
		srv:         srv,
		remoteAddr:  remoteAddr,
		streams:     make(map[uint32]*stream),
		sendWindow:  initialWindow,
		initialSend: initialWindow,
		peerFrame:   maxFrameSize,
		recvWindow:  int64(srv.ConnWindow),
	}
	sc.wcond.L = &sc.mu
	sc.space.L = &sc.mu
	sc.wfr = http2.NewFramer(&sc.out, nil)
	sc.henc = hpack.NewEncoder(&sc.hbuf)
	sc.fr = http2.NewFramer(nil, &sc.in)
	sc.fr.SetMaxReadFrameSize(maxFrameSize)
	sc.fr.MaxHeaderListSize = srv.MaxHeaderListSize + headerListOverhead
	sc.maxBlock = 2 * int(sc.fr.MaxHeaderListSize)
	sc.blocks = newBlockReader()
	sc.fr.SetReuseFrames()
	return sc
}

// serve reads the client's bytes and processes them (consume) until the
// connection ends.
func (sc *serverConn) serve() error {
	go sc.writeLoop()
	sc.writeSettings()
	defer sc.stopped()
	if sc.srv.ReadIdle != nil {
		defer sc.srv.ReadIdle() // the last batch, whatever ended the reading
	}

	// The preface and the first SETTINGS within PrefaceTimeout.
	_ = sc.nc.SetReadDeadline(time.Now().Add(sc.srv.PrefaceTimeout))
	for {
		n, err := sc.nc.Read(sc.in.space())
		sc.in.commit(n)
		early := sc.phase != phaseFrames
		if err := sc.consume(); err != nil {
			return err
		}
		if early && sc.phase == phaseFrames {
			_ = sc.nc.SetReadDeadline(time.Time{})
		}
		if err != nil {
			return sc.readEnd(err)
		}
	}
}

// writeSettings queues the server's SETTINGS and the connection's window.
func (sc *serverConn) writeSettings() {
	sc.mu.Lock()
	_ = sc.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: sc.srv.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: sc.srv.MaxHeaderListSize + headerListOverhead},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: sc.srv.StreamWindow},
	)
	if inc := sc.srv.ConnWindow - initialWindow; inc > 0 {
		_ = sc.wfr.WriteWindowUpdate(0, inc)
	}
	sc.wakeWriter()
	sc.mu.Unlock()
}

// started arms what watches a connection once its preface is in: the
// idle timeout, Drain and BaseContext. stopped disarms them.
func (sc *serverConn) started() {
	idle := time.AfterFunc(sc.srv.IdleTimeout, sc.idleTimeout)
	sc.mu.Lock()
	sc.idle = idle // the goroutines that end streams restart it
	sc.mu.Unlock()
	sc.stops = append(sc.stops, idle.Stop)
	if sc.srv.Drain != nil {
		sc.stops = append(sc.stops, context.AfterFunc(sc.srv.Drain, sc.drain))
	}
	sc.stops = append(sc.stops, context.AfterFunc(sc.srv.BaseContext, sc.baseCancelled))
}

// stopped disarms what started armed, for good. A stream's handler may
// return after the connection stopped, and the last one to do so used
// to restart the idle timer (idleLaterLocked), which then held the whole
// ended connection for IdleTimeout: a client that reset its stream and
// left made the server hold 5-8 KB for a minute, whatever the
// connection limits. unwatched keeps both timers stopped.
func (sc *serverConn) stopped() {
	sc.mu.Lock()
	sc.unwatched = true
	if sc.windowTimer != nil {
		sc.windowTimer.Stop()
	}
	sc.mu.Unlock()
	for _, stop := range sc.stops {
		stop()
	}
}

// waitForWindowLocked notes that st's response waits for the client to
// open a flow-control window. Unless the clock already runs, the client
// has WriteTimeout to open one (windowTimeout): until then it holds the
// response, and what was fetched for it, as a client that stops reading
// holds the output.
func (sc *serverConn) waitForWindowLocked(st *stream) {
	st.waitsForWindow = true
	if sc.windowWaiting {
		return
	}
	sc.windowWaiting = true
	sc.windowDue = time.Now().Add(sc.srv.WriteTimeout)
	if sc.unwatched {
		return
	}
	if sc.windowTimer == nil {
		sc.windowTimer = time.AfterFunc(sc.srv.WriteTimeout, sc.windowTimeout)
	} else {
		sc.windowTimer.Reset(sc.srv.WriteTimeout)
	}
}

// windowShutLocked reports whether the client's windows let st send
// nothing now: its own, or the connection's.
func (st *stream) windowShutLocked() bool { return st.sendWindow <= 0 || st.sc.sendWindow <= 0 }

// windowOpenedLocked stops the clock of waitForWindowLocked once the
// client's windows let st, a response that waited, go on: opening a
// window elsewhere does not. The next wait starts the clock again, so a
// client that opens window however slowly is never cut off.
func (sc *serverConn) windowOpenedLocked(st *stream) {
	if sc.windowWaiting && st.waitsForWindow && !st.windowShutLocked() {
		sc.windowWaiting = false
	}
}

// windowTimeout ends the connection once responses have waited for
// window since windowDue's clock started: GOAWAY ENHANCE_YOUR_CALM, and
// their writes fail.
func (sc *serverConn) windowTimeout() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.windowWaiting || sc.closing {
		return
	}
	if wait := time.Until(sc.windowDue); wait > 0 {
		sc.windowTimer.Reset(wait) // the clock restarted after this timer was set
		return
	}
	sc.windowWaiting = false
	waiting := false
	for _, st := range sc.streams {
		waiting = waiting || st.waitsForWindow && st.windowShutLocked()
	}
	if !waiting {
		return // the responses that waited are gone
	}
	if sc.err == nil {
		sc.err = errWindowWithheld
	}
	sc.logf("%v (%v)", errWindowWithheld, sc.srv.WriteTimeout)
	sc.goAwayLocked(http2.ErrCodeEnhanceYourCalm)
	sc.failAllLocked(errWindowWithheld)
}

// frameHeaderLen is the length of a frame's header (RFC 9113 §4.1).
const frameHeaderLen = 9

// readError handles an error of ReadFrame: a stream error resets that
// stream and reading goes on; anything else ends the connection (with
// GOAWAY when it is the client's fault), and is returned.
func (sc *serverConn) readError(err error) error {
	var se http2.StreamError
	if errors.As(err, &se) {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if se.StreamID > sc.maxID && se.StreamID%2 == 1 {
			// A header block that failed to decode still opened its
			// stream (RFC 9113 §5.1.1).
			sc.maxID = se.StreamID
		}
		sc.resetLocked(se.StreamID, se.Code)
		return nil
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		return sc.connError(http2.ConnectionError(http2.ErrCodeFrameSize))
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		return sc.connError(ce)
	}
	return err
}

// connError sends GOAWAY for a connection error of the client's, which
// ends the connection, and returns it; other errors are returned as they
// are.
func (sc *serverConn) connError(err error) error {
	var ce http2.ConnectionError
	if !errors.As(err, &ce) {
		return err
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.goAwayLocked(http2.ErrCode(ce))
	return fmt.Errorf("client error: %w", ce)
}

// goAwayLocked sends GOAWAY and has the writer close the connection once
// it is sent.
func (sc *serverConn) goAwayLocked(code http2.ErrCode) {
	if sc.closed {
		return
	}
	if !sc.closing {
		_ = sc.wfr.WriteGoAway(sc.maxID, code, nil)
	}
	sc.goAway, sc.closing = true, true
	sc.wakeWriter()
}

// process acts on one frame; an error it returns is a connection error.
func (sc *serverConn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return sc.processHeaders(f)
	case *http2.DataFrame:
		return sc.processData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return sc.processSettings(f)
	case *http2.WindowUpdateFrame:
		return sc.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil // we send no PING
		}
		sc.mu.Lock()
		defer sc.mu.Unlock()
		_ = sc.wfr.WritePing(true, f.Data)
		return sc.controlWrittenLocked()
	case *http2.RSTStreamFrame:
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if f.StreamID > sc.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		if st := sc.streams[f.StreamID]; st != nil {
			st.failLocked(fmt.Errorf("http2: the client reset the stream: %v", f.ErrCode))
			sc.removeLocked(st)
			if !st.localDone {
				sc.cancelledLocked()
			}
		}
		return nil
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			sc.resetLocked(f.StreamID, http2.ErrCodeProtocol)
		}
		return nil
	case *http2.GoAwayFrame:
		// The client is going away: its streams in flight finish, and
		// the connection ends when the client closes it or, once idle,
		// at the idle timeout, as every connection does. Closing at once
		// reset it whenever a frame the client sent after its GOAWAY (a
		// PING) was still unread in the socket (h2spec 3.8/1, "connection
		// reset by peer", in one CI run).
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // clients do not push
	default:
		return nil // unknown frame types are ignored (RFC 9113 §4.1)
	}
}

// processSettings applies the client's settings, in their order, and
// acknowledges them.
func (sc *serverConn) processSettings(f *http2.SettingsFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// Every stream's window moves by the change (§6.9.2).
			delta := int64(s.Val) - sc.initialSend
			sc.initialSend = int64(s.Val)
			for _, st := range sc.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.roomLocked()
				sc.windowOpenedLocked(st)
			}
		case http2.SettingMaxFrameSize:
			sc.peerFrame = s.Val
		case http2.SettingHeaderTableSize:
			sc.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = sc.wfr.WriteSettingsAck()
	return sc.controlWrittenLocked()
}

// cancelledLocked counts a stream the client reset before its response
// ended. Handlers that stop at once when reset never pile up past the
// bound on running ones, yet each started work (a backend request) the
// client never waited for: a client that has reset more than twice
// MaxConcurrentStreams of its streams so, and more than half of all it
// opened, is told ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487). A
// browser cancelling what a page it left still loads stays well under.
func (sc *serverConn) cancelledLocked() {
	sc.cancelled++
	if sc.cancelled > 2*int(sc.srv.MaxConcurrentStreams) && 2*sc.cancelled > sc.opened {
		sc.goAwayLocked(http2.ErrCodeEnhanceYourCalm)
	}
}

// processWindowUpdate opens the connection's or a stream's send window.
func (sc *serverConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		sc.sendWindow += inc
		if sc.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		sc.spaceLocked()
		if sc.windowWaiting {
			for _, st := range sc.streams {
				sc.windowOpenedLocked(st)
			}
		}
		return nil
	}
	if f.StreamID > sc.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	st := sc.streams[f.StreamID]
	if st == nil {
		return nil // closed: a late update
	}
	st.sendWindow += inc
	if st.sendWindow > maxWindow {
		sc.resetLocked(st.id, http2.ErrCodeFlowControl)
		return nil
	}
	st.roomLocked()
	sc.windowOpenedLocked(st)
	return nil
}

// processHeaders opens a stream with a request, or ends one with
// trailers.
func (sc *serverConn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		sc.maxID = max(sc.maxID, id)
		sc.resetLocked(id, http2.ErrCodeProtocol)
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if id <= sc.maxID {
		switch st := sc.streams[id]; {
		case st == nil: // a closed stream
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		case st.remoteDone: // trailers after the end of the body
			sc.resetLocked(id, http2.ErrCodeStreamClosed)
			return nil
		default:
			return sc.trailersLocked(st, f)
		}
	}
	sc.maxID = id
	if sc.goAway {
		return nil // past our GOAWAY: ignored (§6.8)
	}
	if f.Truncated {
		// Over MaxHeaderListSize: 431, and the body, if any, is refused.
		sc.writeStatusLocked(id, http.StatusRequestHeaderFieldsTooLarge)
		if !f.StreamEnded() {
			_ = sc.wfr.WriteRSTStream(id, http2.ErrCodeNo)
		}
		return sc.controlWrittenLocked()
	}
	if len(sc.streams) >= int(sc.srv.MaxConcurrentStreams) {
		_ = sc.wfr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		return sc.controlWrittenLocked()
	}
	if sc.running >= 2*int(sc.srv.MaxConcurrentStreams) {
		// Handlers of streams the client reset are still running: it
		// resets faster than they end.
		sc.goAwayLocked(http2.ErrCodeEnhanceYourCalm)
		return nil
	}
	ended := f.StreamEnded()
	r, err := readRequest(f.Fields, ended)
	if err != nil {
		sc.logf("http2: stream %d: %v", id, err)
		sc.resetLocked(id, http2.ErrCodeProtocol)
		return nil
	}
	if sc.srv.Admit != nil && !sc.srv.Admit() {
		sc.writeHeadLocked(id, http.StatusServiceUnavailable, retryLater, true)
		if !ended {
			_ = sc.wfr.WriteRSTStream(id, http2.ErrCodeNo)
		}
		return sc.controlWrittenLocked()
	}
	st := &stream{sc: sc, id: id}
	sc.openStreamLocked(st, r.length, ended)
	sc.opened++
	sc.running++
	sc.handlers.Add(1)
	st.w = responseWriter{st: st, head: r.Method == http.MethodHead}
	if sc.srv.Async != nil && ended {
		// Offered without the lock: the taker uses the stream's context
		// (AfterFunc locks) and may answer before Async returns.
		st.async = true
		sc.asyncOpen++
		sc.mu.Unlock()
		owner := sc.srv.Async((*Stream)(&st.w), r)
		sc.mu.Lock()
		if owner != nil {
			if st.async { // not ended yet
				st.owner = owner
				if st.cancelled {
					st.tellOwnerLocked()
				}
				// A write made before Async returned may wait: it is
				// resumed, if for nothing.
				st.resumeLocked()
			}
			return nil
		}
		st.async = false
		sc.asyncOpen--
	}
	req := r.http(st, ended, sc.remoteAddr)
	if st.body != nil {
		st.body.req = req
		req.Body = st.body
	}
	sc.srv.Go(func() { sc.runHandler(st, req) })
	return nil
}

// trailersLocked ends st's body with trailers.
func (sc *serverConn) trailersLocked(st *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		sc.resetLocked(st.id, http2.ErrCodeProtocol) // trailers end the stream
		return nil
	}
	h, err := checkTrailers(f.Fields)
	if err != nil {
		sc.resetLocked(st.id, http2.ErrCodeProtocol)
		return nil
	}
	if st.body != nil {
		st.body.trailer = h
	}
	sc.endRemoteLocked(st)
	return nil
}

// processData takes a DATA frame's bytes into its stream's body, within
// the windows this server advertised.
func (sc *serverConn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if id > sc.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	if n > sc.recvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	sc.recvWindow -= n
	st := sc.streams[id]
	if st == nil || st.remoteDone {
		// Closed or half-closed: the bytes are given back to the
		// connection at once.
		sc.consumedLocked(n)
		if st != nil {
			sc.resetLocked(id, http2.ErrCodeStreamClosed)
			return nil
		}
		_ = sc.wfr.WriteRSTStream(id, http2.ErrCodeStreamClosed)
		return sc.controlWrittenLocked()
	}
	if n > st.recvWindow {
		sc.consumedLocked(n)
		sc.resetLocked(id, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWindow -= n
	data := f.Data()
	// Padding, and a body the handler no longer reads, count against
	// the windows but are held by no one: given back at once.
	back := n - int64(len(data))
	if st.body.closed {
		back = n
	}
	if back > 0 {
		st.giveBackLocked(back)
	}
	if len(data) > 0 {
		st.received += int64(len(data))
		if st.declared >= 0 && st.received > st.declared {
			if !st.body.closed {
				sc.consumedLocked(int64(len(data)))
			}
			sc.resetLocked(id, http2.ErrCodeProtocol)
			return nil
		}
		if !st.body.closed {
			st.body.buf = append(st.body.buf, data...)
			st.cond.Broadcast()
		}
	}
	if f.StreamEnded() {
		if st.declared >= 0 && st.received != st.declared {
			sc.resetLocked(id, http2.ErrCodeProtocol)
			return nil
		}
		sc.endRemoteLocked(st)
	}
	return nil
}

// consumedLocked gives n bytes back to the client's connection window,
// with a WINDOW_UPDATE once a quarter of it is owed.
func (sc *serverConn) consumedLocked(n int64) {
	sc.recvUnacked += n
	if sc.recvUnacked >= int64(sc.srv.ConnWindow)/4 {
		_ = sc.wfr.WriteWindowUpdate(0, uint32(sc.recvUnacked))
		sc.recvWindow += sc.recvUnacked
		sc.recvUnacked = 0
		sc.wakeWriter()
	}
}

// resetLocked sends RST_STREAM for id and forgets its stream.
func (sc *serverConn) resetLocked(id uint32, code http2.ErrCode) {
	if st := sc.streams[id]; st != nil {
		st.failLocked(fmt.Errorf("http2: stream reset: %v", code))
		sc.removeLocked(st)
	}
	if sc.closed {
		return
	}
	_ = sc.wfr.WriteRSTStream(id, code)
	_ = sc.controlWrittenLocked()
}

// controlWrittenLocked wakes the writer after a control frame and ends a
// connection whose client makes us answer faster than it reads.
func (sc *serverConn) controlWrittenLocked() error {
	sc.wakeWriter()
	if len(sc.out.b) > sc.srv.MaxPendingControl+maxPendingData+int(sc.peerFrame) {
		sc.logf("http2: %d bytes of answers unread by the client: closing", len(sc.out.b))
		sc.failAllLocked(errConnClosed)
		sc.closed = true
		sc.closeSocket()
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	return nil
}

// drain sends GOAWAY without error: no new streams; the connection
// closes once those in flight have ended.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.goAway || sc.closed {
		return
	}
	_ = sc.wfr.WriteGoAway(sc.maxID, http2.ErrCodeNo, nil)
	sc.goAway = true
	if len(sc.streams) == 0 {
		sc.closing = true
	}
	sc.wakeWriter()
}

// idleTimeout ends a connection without streams with GOAWAY.
func (sc *serverConn) idleTimeout() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.streams) == 0 && sc.running == 0 {
		sc.goAwayLocked(http2.ErrCodeNo)
	}
}

// close ends the connection after serve returned: streams are failed,
// their handlers' writes return errors, and the writer sends what it may
// and closes the socket.
func (sc *serverConn) close(err error) {
	sc.mu.Lock()
	sc.endLocked(err)
	sc.mu.Unlock()
	// The reader is done; the writer closes the socket once it has sent
	// what is left (a GOAWAY), or WriteTimeout has passed.
	<-sc.writerDone
	_ = sc.nc.Close()
}

// endLocked ends the reading side for good: err (the first one kept) is
// why, every stream fails, and what is left to send (a GOAWAY) goes out
// before the socket closes.
func (sc *serverConn) endLocked(err error) {
	if sc.err == nil {
		sc.err = err
	}
	sc.goAway, sc.closing = true, true
	sc.failAllLocked(errConnClosed)
	sc.wakeWriter()
}

// closeSocket closes the connection at once: its socket, or, driven
// (Conn), by asking its owner.
func (sc *serverConn) closeSocket() {
	if sc.nc != nil {
		_ = sc.nc.Close()
		return
	}
	sc.abort()
}

// failAllLocked fails every stream: their handlers see err.
func (sc *serverConn) failAllLocked(err error) {
	for _, st := range sc.streams {
		st.failLocked(err)
		sc.removeLocked(st)
	}
	sc.spaceLocked()
}

func (sc *serverConn) logf(format string, args ...any) {
	if sc.srv.ErrorLog != nil {
		sc.srv.ErrorLog.Printf(format, args...)
	}
}
