package udp

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/clientlimit"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/quic"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/slots"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Relay serves one bound UDP listener. Listen binds it, SetListener gives
// it the snapshot listener to serve (again on every snapshot that keeps its
// address), Close ends it and every session.
type Relay struct {
	opt  Options
	log  logr.Logger
	m    *Metrics
	conn *net.UDPConn
	v6   bool // the socket is AF_INET6 (dual-stack when bound to ::)
	// pktinfo: the socket is bound to a wildcard address, so each
	// reply names the local address its client wrote to.
	pktinfo bool
	batch   int
	sweep   time.Duration
	epoch   time.Time // the session clocks count nanoseconds from here
	seed    maphash.Seed

	cfg     atomic.Pointer[listenerConfig]
	clients *clientlimit.Table
	active  atomic.Int64 // sessions open

	epfd, wakeFd int
	// epoll is epfd, non-blocking, in Go's netpoller: pollLoop parks its
	// goroutine there instead of blocking a thread in epoll_wait, which
	// would make the runtime hand its P to another thread at every wait.
	epoll    *os.File
	epollRaw syscall.RawConn
	raw      syscall.RawConn // conn's
	// up holds the datagrams of one session that came one after another
	// in a read batch, written to its backend with one sendmmsg. Owned by
	// readLoop.
	up upBatch
	wg sync.WaitGroup
	// gso: new backend sockets get UDP_GRO and replies keep the
	// backend's segmented buffers whole (gso_linux.go). Off when the
	// kernel lacks UDP_SEGMENT, or once a send with it failed with EIO.
	gso atomic.Bool
	// listenGRO: the listener socket has UDP_GRO, so a read may be a
	// client's segmented buffer, cut into its datagrams by readLoop.
	listenGRO bool

	mu      sync.Mutex // guards the maps, nextID and closed; taken after a session's mu, never before
	byAddr  map[netip.AddrPort]*session
	byToken map[uint64]*session
	byCID   map[quic.ConnectionID]*session
	cidLens [quic.MaxConnectionIDLen + 1]int // registered IDs by length
	nextID  uint64
	closed  bool
}

// Listen binds address for datagrams. The Relay reads nothing until
// SetListener gives it routes.
func Listen(address string, opt Options) (*Relay, error) {
	if opt.Metrics == nil {
		opt.Metrics = NewMetrics()
	}
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.SweepInterval <= 0 {
		opt.SweepInterval = DefaultSweepInterval
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	network, err := listenNetwork(address)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr(network, address)
	if err != nil {
		return nil, fmt.Errorf("address %s: %w", address, err)
	}
	conn, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, err
	}
	r := &Relay{
		opt: opt, log: opt.Log, m: opt.Metrics, conn: conn, batch: opt.Batch, sweep: opt.SweepInterval,
		epoch: time.Now(), seed: maphash.MakeSeed(), clients: clientlimit.NewTable(),
		byAddr: map[netip.AddrPort]*session{}, byToken: map[uint64]*session{}, byCID: map[quic.ConnectionID]*session{},
		epfd: -1, wakeFd: -1,
	}
	if err := r.setup(); err != nil {
		_ = conn.Close()
		r.closeFds()
		return nil, err
	}
	return r, nil
}

// listenNetwork is the network an address is bound on: an IPv4 literal
// (0.0.0.0 included) IPv4 only, an IPv6 literal IPv6 only, no host both,
// on one dual-stack socket, as the user wrote it rather than as Go's
// default would make 0.0.0.0 (dual-stack).
func listenNetwork(address string) (string, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return "", fmt.Errorf("address %s: %w", address, err)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is4() {
			return "udp4", nil
		}
		return "udp6", nil
	}
	return "udp", nil
}

// socketBuffer is the receive and send buffer asked for the listener
// socket: room for bursts of many sessions while a goroutine is off CPU.
// The kernel caps it at net.core.rmem_max and wmem_max.
const socketBuffer = 4 << 20

func (r *Relay) setup() error {
	raw, err := r.conn.SyscallConn()
	if err != nil {
		return err
	}
	var domain int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("getsockopt SO_DOMAIN: %w", serr)
	}
	r.raw = raw
	_ = r.conn.SetReadBuffer(socketBuffer)
	_ = r.conn.SetWriteBuffer(socketBuffer)
	local, _ := r.conn.LocalAddr().(*net.UDPAddr)
	r.pktinfo = local != nil && local.IP.IsUnspecified()
	r.v6 = domain == unix.AF_INET6
	if !r.opt.noGSO {
		if err := raw.Control(func(fd uintptr) {
			r.gso.Store(gsoSupported(int(fd)))
			r.listenGRO = r.gso.Load() && !r.opt.noListenGRO && enableGRO(int(fd))
		}); err != nil {
			return err
		}
	}
	if r.v6 {
		p := ipv6.NewPacketConn(r.conn)
		if r.pktinfo {
			if err := p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
				return fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
			}
		}
	} else {
		p := ipv4.NewPacketConn(r.conn)
		if r.pktinfo {
			if err := p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
				return fmt.Errorf("IP_PKTINFO: %w", err)
			}
		}
	}
	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	if r.wakeFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	// Token 0 is the eventfd; sessions count from 1.
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, r.wakeFd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(r.epfd, true); err != nil {
		return fmt.Errorf("epoll fd: %w", err)
	}
	r.epoll = os.NewFile(uintptr(r.epfd), "udp-sessions-epoll")
	if r.epollRaw, err = r.epoll.SyscallConn(); err != nil {
		return fmt.Errorf("epoll fd: %w", err)
	}
	return nil
}

func (r *Relay) closeFds() {
	switch {
	case r.epoll != nil:
		_ = r.epoll.Close()
	case r.epfd >= 0:
		_ = unix.Close(r.epfd)
	}
	if r.wakeFd >= 0 {
		_ = unix.Close(r.wakeFd)
	}
}

// Addr is the bound address (with the port the kernel chose for ":0").
func (r *Relay) Addr() net.Addr { return r.conn.LocalAddr() }

// Sessions counts the sessions open now.
func (r *Relay) Sessions() int { return int(r.active.Load()) }

// Clients is the size of the per-client table, for the clients gauge.
func (r *Relay) Clients() int { return r.clients.Len() }

// SetListener makes l the configuration of new sessions; sessions open
// keep the routes they started with. The first call starts serving.
func (r *Relay) SetListener(l *snapshot.Listener) error {
	lc, err := newListenerConfig(l, r.m)
	if err != nil {
		return err
	}
	if r.cfg.Swap(lc) == nil {
		r.wg.Add(2)
		go r.readLoop()
		go r.pollLoop()
	}
	return nil
}

// Close stops reading, ends every session (outcome closed) and waits for
// the Relay's goroutines. UDP has no close to wait for, so nothing drains.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	err := r.conn.Close()
	started := r.cfg.Load() != nil
	if started {
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		if _, werr := unix.Write(r.wakeFd, one); werr != nil {
			err = errors.Join(err, fmt.Errorf("wake the poller: %w", werr))
		}
	}
	r.wg.Wait()
	r.endAll()
	r.closeFds()
	return err
}

// now is the sessions' clock: nanoseconds since the Relay started.
func (r *Relay) now() int64 { return int64(time.Since(r.epoch)) }

// readLoop reads the listener socket until it closes.
func (r *Relay) readLoop() {
	defer r.wg.Done()
	ms := make([]ipv4.Message, r.batch)
	oobLen := 0
	if r.pktinfo {
		oobLen = max(len(ipv4.NewControlMessage(ipv4.FlagDst|ipv4.FlagInterface)), len(ipv6.NewControlMessage(ipv6.FlagDst|ipv6.FlagInterface)))
	}
	if r.listenGRO {
		oobLen += groSpace
	}
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, maxDatagram)}
		if oobLen > 0 {
			ms[i].OOB = make([]byte, oobLen)
		}
	}
	var backoff time.Duration
	rb := newReadBatch(ms, r.v6)
	for {
		n, err := r.read(ms, rb)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			r.log.Error(err, "UDP read failed; retrying", "address", r.Addr().String(), "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		now := r.now()
		for i := range ms[:n] {
			m := &ms[i]
			from, b, oob, seg := addrPortOf(m.Addr), m.Buffers[0][:m.N], m.OOB[:m.NN], 0
			if r.listenGRO {
				seg = groSegment(oob)
			}
			// A client's segmented buffer is its datagrams, each
			// handled as if it came alone.
			for j := range segments(len(b), seg) {
				r.fromClientContained(segment(b, seg, j), from, oob, now)
			}
		}
		// The held datagrams point into ms: written before the next read.
		r.up.flush()
	}
}

// readBatch is the recvmmsg of readLoop: its headers, and the buffers
// and control message space of its messages.
type readBatch struct {
	mm         *addrMmsg
	bufs, oobs [][]byte
}

func newReadBatch(ms []ipv4.Message, v6 bool) *readBatch {
	rb := &readBatch{mm: newAddrMmsg(len(ms), v6)}
	for i := range ms {
		rb.bufs = append(rb.bufs, ms[i].Buffers[0])
		if len(ms[i].OOB) > 0 {
			rb.oobs = append(rb.oobs, ms[i].OOB)
		}
	}
	return rb
}

// read fills ms with datagrams: recvmmsg, or one recvmsg when the batch
// is 1.
func (r *Relay) read(ms []ipv4.Message, rb *readBatch) (int, error) {
	if len(ms) > 1 {
		var n int
		var rerr error
		err := r.raw.Read(func(fd uintptr) bool {
			n, rerr = rb.mm.recvFrom(int(fd), rb.bufs, rb.oobs)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return 0, err
		}
		for i := range n {
			ms[i].N, ms[i].NN, ms[i].Addr = rb.mm.n(i), rb.mm.oobn(i), addrPortAddr(rb.mm.from(i))
		}
		return n, nil
	}
	m := &ms[0]
	n, nn, _, from, err := r.conn.ReadMsgUDPAddrPort(m.Buffers[0], m.OOB)
	if err != nil {
		return 0, err
	}
	m.N, m.NN, m.Addr = n, nn, addrPortAddr(from)
	return 1, nil
}

// addrPortAddr carries a netip.AddrPort in a net.Addr without allocating.
type addrPortAddr netip.AddrPort

func (a addrPortAddr) Network() string { return "udp" }
func (a addrPortAddr) String() string  { return netip.AddrPort(a).String() }

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case addrPortAddr:
		return netip.AddrPort(a)
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// fromClientContained is fromClient with a panic turned into the end of
// the session concerned.
func (r *Relay) fromClientContained(d []byte, from netip.AddrPort, oob []byte, now int64) {
	var err error
	defer func() {
		if err != nil {
			r.contain(err, r.lookup(from))
		}
	}()
	defer panics.Capture(&err)
	r.fromClient(d, from, oob, now)
}

// contain reports a recovered panic and ends s, if any.
func (r *Relay) contain(err error, s *session) {
	p := panics.Is(err)
	if r.opt.OnPanic != nil {
		r.opt.OnPanic(p)
	}
	name := ""
	if lc := r.cfg.Load(); lc != nil {
		name = lc.Name
	}
	r.log.Error(p, "panic handling a datagram; its session was ended, the others are served", "listener", name, "stack", string(p.Stack))
	if s != nil {
		s.end(OutcomeError, p)
	}
}

func (r *Relay) lookup(from netip.AddrPort) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byAddr[from]
}

// fromClient handles one datagram from a client.
func (r *Relay) fromClient(d []byte, from netip.AddrPort, oob []byte, now int64) {
	r.mu.Lock()
	s := r.byAddr[from]
	if s == nil && r.cfgHasQUICIDs() {
		s = r.byConnectionID(d)
	}
	r.mu.Unlock()
	if r.up.s != s {
		// Another session's datagrams go first, in the order they came.
		r.up.flush()
	}
	if s != nil {
		s.fromClient(d, from, oob, now)
		return
	}
	lc := r.cfg.Load()
	// Decide before admitting, so a datagram to drop costs no slot and
	// a session that would have no route is never created.
	p := route.NewDatagramProber(lc.Routes)
	dec, err := p.Add(d)
	switch {
	case err != nil:
		lc.drops[DropShortInitial].Inc()
		return
	case !dec.NeedMore && dec.Route < 0:
		lc.drops[DropNoRoute].Inc()
		return
	}
	s, reason := r.admit(lc, from, now)
	if s == nil {
		lc.drops[reason].Inc()
		return
	}
	if s.first(d, from, oob, now, dec, &p, lc) {
		s.registerIDs()
	}
}

// first handles a new session's first datagram under s.mu, released
// even on a panic so that containing it can end s. It reports whether
// the route was decided.
func (s *session) first(d []byte, from netip.AddrPort, oob []byte, now int64, dec route.Decision, p *route.DatagramProber, lc *listenerConfig) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setClient(from, oob)
	if dec.NeedMore {
		s.probe = &probe{prober: *p, end: now + int64(lc.probeTimeout)}
		s.deciding.Store(true)
		s.probe.hold(d)
		return false
	}
	s.decided(dec, p, now)
	s.writeBackend(d)
	return true
}

// cfgHasQUICIDs reports whether a datagram from an unknown address could
// belong to a session by its connection ID. r.mu is held.
func (r *Relay) cfgHasQUICIDs() bool { return len(r.byCID) > 0 }

// byConnectionID finds the session a QUIC datagram from a new address
// belongs to: its short header's DCID with every length registered, or
// its long header's DCID. r.mu is held.
func (r *Relay) byConnectionID(d []byte) *session {
	if len(d) == 0 {
		return nil
	}
	if d[0]&0x80 != 0 {
		if _, dcid, _, ok := quic.LongHeaderIDs(d); ok {
			return r.byCID[dcid]
		}
		return nil
	}
	for n, count := range r.cidLens {
		if count == 0 {
			continue
		}
		if id, ok := quic.ShortHeaderDCID(d, n); ok {
			if s := r.byCID[id]; s != nil {
				return s
			}
		}
	}
	return nil
}

// admit creates a session for a new client address within the caps, or
// says which cap refused it.
func (r *Relay) admit(lc *listenerConfig, from netip.AddrPort, now int64) (*session, string) {
	if !slots.Take(&r.active, lc.MaxConnections) {
		return nil, DropSessionLimit
	}
	if r.opt.Admit != nil && !r.opt.Admit() {
		r.active.Add(-1)
		return nil, DropSessionLimit
	}
	key, refused := r.clients.Admit(from.Addr().Unmap(), r.opt.Now(), lc.clientLimits)
	if refused != "" {
		r.releaseSlots()
		return nil, DropClientLimit
	}
	s := &session{r: r, lc: lc, fd: -1, client: from, key: key, start: now, addrs: []netip.AddrPort{from}}
	s.lastActive.Store(now)
	s.idle.Store(math.MaxInt64) // until a route says
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.clients.Release(key)
		r.releaseSlots()
		return nil, DropEnded
	}
	r.nextID++
	s.id = r.nextID
	r.byAddr[from] = s
	r.byToken[s.id] = s
	r.mu.Unlock()
	lc.sessions.Inc()
	return s, ""
}

func (r *Relay) releaseSlots() {
	r.active.Add(-1)
	if r.opt.Release != nil {
		r.opt.Release()
	}
}

// endpoint picks the session's backend endpoint: a hash of the client
// address, so a client that comes back after its session idled out finds
// the same endpoint while the endpoints stay the same.
func (r *Relay) endpoint(rc *routeConfig, client netip.AddrPort) (netip.AddrPort, bool) {
	switch len(rc.endpoints) {
	case 0:
		return netip.AddrPort{}, false
	case 1:
		return rc.endpoints[0], true
	}
	b := client.Addr().As16()
	h := maphash.Bytes(r.seed, b[:]) ^ uint64(client.Port())
	return rc.endpoints[h%uint64(len(rc.endpoints))], true
}

// pollLoop waits on every session's backend socket, relays replies to the
// clients, and sweeps sessions past their timeouts.
func (r *Relay) pollLoop() {
	defer r.wg.Done()
	events := make([]unix.EpollEvent, 128)
	out := newReplies(r.batch, r.v6)
	lastSweep := r.now()
	var deadline int64
	for {
		// Wake for the sweep at the latest; the deadline moves once per
		// sweep, not once per wait.
		if next := lastSweep + int64(r.sweep); next != deadline {
			deadline = next
			_ = r.epoll.SetReadDeadline(r.epoch.Add(time.Duration(next)))
		}
		n, err := r.wait(events)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			r.log.Error(err, "epoll_wait on UDP sessions failed; retrying")
			n = 0
			time.Sleep(10 * time.Millisecond)
		}
		now := r.now()
		for i := range n {
			tok := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if tok == 0 {
				return
			}
			r.mu.Lock()
			s := r.byToken[tok]
			r.mu.Unlock()
			if s != nil {
				r.fromBackendContained(s, out, now)
			}
		}
		r.flush(out)
		if now-lastSweep >= int64(r.sweep) {
			lastSweep = now
			r.sweepSessions(now)
		}
	}
}

// wait returns the ready events of the sessions' epoll set, parking in
// Go's netpoller until there are some or the read deadline passes.
func (r *Relay) wait(events []unix.EpollEvent) (int, error) {
	var n int
	var werr error
	err := r.epollRaw.Read(func(fd uintptr) bool {
		n, werr = epollPoll(int(fd), events)
		return n > 0 || (werr != nil && !errors.Is(werr, unix.EINTR))
	})
	if err != nil {
		return 0, err
	}
	return n, werr
}

// epollPoll is epoll_wait with no timeout: it never blocks, so it is a
// raw system call the runtime need not watch (as mmsg's).
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func (r *Relay) fromBackendContained(s *session, out *replies, now int64) {
	var err error
	defer func() {
		if err != nil {
			r.contain(err, s)
		}
	}()
	defer panics.Capture(&err)
	s.fromBackend(out, now)
}

// flush sends the replies gathered so far.
func (r *Relay) flush(out *replies) {
	if out.n == 0 {
		return
	}
	defer out.reset()
	if r.batch == 1 {
		for i := range out.n {
			if _, _, err := r.conn.WriteMsgUDPAddrPort(out.ms[i].Buffers[0], out.ms[i].OOB, out.to[i]); err != nil {
				r.sendFailed(out, i, err)
			}
		}
		return
	}
	// Replies before plain go one per message: a segmented message
	// of them failed.
	sent, plain := 0, 0
	for sent < out.n {
		if out.seg[sent] > 0 && !r.gso.Load() {
			r.sendSplit(out, sent)
			sent++
			continue
		}
		n, first, err := r.writeBatch(out, sent, plain)
		if err != nil {
			if first > 1 {
				// A run joined into one segmented message: send it
				// again one reply per message.
				r.gsoFailed(err)
				plain = sent + first
				continue
			}
			// The first message failed: drop it, or send its datagrams
			// one by one, and go on with the rest.
			r.sendFailed(out, sent, err)
			n = 1
		}
		sent += n
	}
}

// gsoFailed notes a send with UDP_SEGMENT that failed with err: after
// EIO, no send carries it again.
func (r *Relay) gsoFailed(err error) {
	if gsoBroken(err) && r.gso.Swap(false) {
		r.log.Info("sending with UDP_SEGMENT failed; replies go one datagram per message from now on", "address", r.Addr().String(), "error", err.Error())
	}
}

// sendFailed handles the failed send of the i-th reply: a single datagram
// is dropped; a segmented buffer is sent again datagram by datagram, and
// after EIO no buffer is sent segmented again.
func (r *Relay) sendFailed(out *replies, i int, err error) {
	if out.seg[i] == 0 {
		out.drop[i].Inc()
		return
	}
	r.gsoFailed(err)
	r.sendSplit(out, i)
}

// sendSplit sends the i-th reply, a segmented buffer, as its datagrams,
// with sendmmsg (one message at a time with a batch of 1).
func (r *Relay) sendSplit(out *replies, i int) {
	b, seg, to, oob := out.ms[i].Buffers[0], out.seg[i], out.to[i], out.pk[i]
	k := segments(len(b), seg)
	if r.batch == 1 {
		for j := range k {
			if _, _, err := r.conn.WriteMsgUDPAddrPort(segment(b, seg, j), oob, to); err != nil {
				out.drop[i].Inc()
			}
		}
		return
	}
	for j := 0; j < k; {
		bufs, tos, oobs := out.splitBufs[:0], out.splitTo[:0], out.splitOOB[:0]
		for ; j < k && len(bufs) < cap(bufs); j++ {
			bufs, tos, oobs = append(bufs, segment(b, seg, j)), append(tos, to), append(oobs, oob)
		}
		for len(bufs) > 0 {
			n, err := r.sendmmsg(out.split, bufs, nil, tos, oobs)
			if err != nil {
				out.drop[i].Inc()
				n = 1
			}
			bufs, tos, oobs = bufs[n:], tos[n:], oobs[n:]
		}
	}
	clear(out.splitBufs[:cap(out.splitBufs)])
}

// writeBatch sends the replies of out from the from-th with one sendmmsg,
// up to the first segmented one if segmenting is off; with segmenting
// on, each run of datagrams to one client that joinRun finds from the
// plain-th on goes as one segmented message. It returns the replies
// sent, and how many the first message held.
func (r *Relay) writeBatch(out *replies, from, plain int) (sent, first int, err error) {
	out.bufs, out.oobs, out.groups, out.gto = out.bufs[:0], out.oobs[:0], out.groups[:0], out.gto[:0]
	gso := r.gso.Load()
	for i := from; i < out.n && (gso || out.seg[i] == 0); {
		g := 1
		if gso && !r.opt.noJoin && i >= plain {
			g = joinRun(out, i)
		}
		oob := out.ms[i].OOB
		if g > 1 {
			out.ctl[i] = appendSegment(append(out.ctl[i][:0], out.pk[i]...), len(out.ms[i].Buffers[0]))
			oob = out.ctl[i]
		}
		for j := i; j < i+g; j++ {
			out.bufs = append(out.bufs, out.ms[j].Buffers[0])
		}
		out.groups = append(out.groups, g)
		out.gto = append(out.gto, out.to[i])
		out.oobs = append(out.oobs, oob)
		i += g
	}
	n, err := r.sendmmsg(out.wm, out.bufs, out.groups, out.gto, out.oobs)
	for _, g := range out.groups[:n] {
		sent += g
	}
	first = out.groups[0]
	clear(out.bufs)
	clear(out.oobs)
	return sent, first, err
}

// joinRun is how many replies from the i-th on go to one client as one
// segmented message: datagrams (not segmented buffers) of one size, the
// last maybe shorter, to one address from one local address, within the
// kernel's bounds (maxSplit segments, a UDP length). 1: send it alone.
func joinRun(out *replies, i int) int {
	if out.seg[i] != 0 {
		return 1
	}
	return joinLen(out.n-i, func(j int) int { return len(out.ms[i+j].Buffers[0]) }, func(j int) bool {
		return out.seg[i+j] == 0 && out.to[i+j] == out.to[i] && sameBytes(out.pk[i+j], out.pk[i])
	})
}

// joinLen is how many of n datagrams, the j-th of size(j) bytes, go as
// one segmented message from the first: those of the first's size, then
// maybe one shorter, while joinable, within maxSplit segments and
// maxSegmented bytes. 1: the first goes alone.
func joinLen(n int, size func(j int) int, joinable func(j int) bool) int {
	first := size(0)
	if first == 0 {
		return 1
	}
	total, j := first, 1
	for ; j < n && j < maxSplit; j++ {
		sz := size(j)
		if sz == 0 || sz > first || total+sz > maxSegmented || !joinable(j) {
			break
		}
		total += sz
		if sz < first {
			j++
			break
		}
	}
	return j
}

// maxSegmented bounds the bytes of one segmented message: a UDP length
// over IPv4.
const maxSegmented = 65507

// sameBytes reports whether two control messages are one (a session's).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0] || string(a) == string(b))
}

// sendmmsg writes bufs to tos from the local addresses oobs name with one
// sendmmsg on the listener socket (see addrMmsg.sendTo), waiting while
// its buffer is full.
func (r *Relay) sendmmsg(wm *addrMmsg, bufs [][]byte, groups []int, tos []netip.AddrPort, oobs [][]byte) (int, error) {
	var n int
	var werr error
	err := r.raw.Write(func(fd uintptr) bool {
		n, werr = wm.sendTo(int(fd), bufs, groups, tos, oobs)
		return !errors.Is(werr, unix.EAGAIN)
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// sweepSessions ends sessions idle past their timeout and decides those
// whose probe timed out.
func (r *Relay) sweepSessions(now int64) {
	var idle, probing []*session
	r.mu.Lock()
	for _, s := range r.byToken {
		switch {
		case s.deciding.Load():
			if now >= s.probeEnd.Load() {
				probing = append(probing, s)
			}
		case now-s.lastActive.Load() >= s.idle.Load():
			idle = append(idle, s)
		}
	}
	r.mu.Unlock()
	for _, s := range idle {
		s.end(OutcomeIdleTimeout, nil)
	}
	for _, s := range probing {
		s.finishProbe(now)
	}
}

// endAll ends every session, when the Relay closes.
func (r *Relay) endAll() {
	r.mu.Lock()
	all := make([]*session, 0, len(r.byToken))
	for _, s := range r.byToken {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.end(OutcomeClosed, nil)
	}
}

// upBatch is datagrams from one client for one sendmmsg to its backend.
type upBatch struct {
	s    *session // nil: none held
	bufs [][]byte
	mm   *mmsg
	// With segmentation on it holds up to maxSplit datagrams (a
	// client's segmented buffer), joined into messages of groups[k]
	// datagrams with the control message oobs[k] (UDP_SEGMENT's in
	// ctl[k]).
	groups []int
	oobs   [][]byte
	ctl    [][]byte
}

// add holds d, a datagram of s, whose route is chosen; s.mu is held. A
// full batch is written at once.
func (b *upBatch) add(s *session, d []byte) {
	if b.mm == nil {
		n := s.r.batch
		if s.r.gso.Load() {
			n = max(n, maxSplit)
		}
		b.mm = newMmsg(n)
		b.ctl = make([][]byte, n)
		for i := range b.ctl {
			b.ctl[i] = make([]byte, 0, segmentSpace)
		}
	}
	b.s = s
	b.bufs = append(b.bufs, d)
	if len(b.bufs) == len(b.mm.hdrs) {
		s.writeBackendBatch(b)
	}
}

// flush writes what is held.
func (b *upBatch) flush() {
	if b.s == nil {
		return
	}
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeBackendBatch(b)
}

// replies gathers datagrams from backends for one sendmmsg.
type replies struct {
	ms   []ipv4.Message
	to   []netip.AddrPort
	drop []prometheus.Counter
	// seg is each reply's segment size: 0 for one datagram, else a
	// buffer the backend sent segmented; pk its pktinfo control message
	// (ms[i].OOB adds UDP_SEGMENT's to it in ctl[i]).
	seg  []int
	pk   [][]byte
	ctl  [][]byte
	gro  [][]byte // control messages of the reads from backend sockets
	n    int
	mm   *mmsg     // reads from a backend socket into the free buffers
	bufs [][]byte  // scratch of free and writeBatch
	wm   *addrMmsg // writes to the listener socket
	oobs [][]byte  // scratch of writeBatch
	// groups and gto: scratch of writeBatch, its messages' reply
	// counts and addresses.
	groups []int
	gto    []netip.AddrPort

	// split sends a segmented buffer as its datagrams when the kernel
	// will not segment it.
	split     *addrMmsg
	splitBufs [][]byte
	splitTo   []netip.AddrPort
	splitOOB  [][]byte
}

// maxSplit is how many datagrams one sendmmsg of sendSplit writes: the
// kernel's most per GRO buffer (UDP_GRO_CNT_MAX).
const maxSplit = 64

func newReplies(batch int, v6 bool) *replies {
	out := &replies{
		ms: make([]ipv4.Message, batch), to: make([]netip.AddrPort, batch), drop: make([]prometheus.Counter, batch),
		seg: make([]int, batch), pk: make([][]byte, batch), ctl: make([][]byte, batch), gro: make([][]byte, batch),
		mm: newMmsg(batch), bufs: make([][]byte, 0, batch), wm: newAddrMmsg(batch, v6), oobs: make([][]byte, 0, batch),
		groups: make([]int, 0, batch), gto: make([]netip.AddrPort, 0, batch),
		split: newAddrMmsg(maxSplit, v6), splitBufs: make([][]byte, 0, maxSplit),
		splitTo: make([]netip.AddrPort, 0, maxSplit), splitOOB: make([][]byte, 0, maxSplit),
	}
	ctl := unix.CmsgSpace(max(unix.SizeofInet4Pktinfo, unix.SizeofInet6Pktinfo)) + segmentSpace
	for i := range out.ms {
		out.ms[i].Buffers = [][]byte{make([]byte, maxDatagram)}
		out.ctl[i] = make([]byte, 0, ctl)
		out.gro[i] = make([]byte, groSpace)
	}
	return out
}

// free is the buffers of the next replies, at most max of them and at
// least one: the batch is not full.
func (out *replies) free(limit int) [][]byte {
	out.bufs = out.bufs[:0]
	for i := out.n; i < len(out.ms) && len(out.bufs) < limit; i++ {
		out.bufs = append(out.bufs, out.ms[i].Buffers[0][:maxDatagram])
	}
	return out.bufs
}

// freeControl is the control message buffers of the free buffers.
func (out *replies) freeControl(n int) [][]byte { return out.gro[out.n : out.n+n] }

func (out *replies) full() bool { return out.n == len(out.ms) }

// add queues the reply of n bytes read into next(), segmented every seg
// bytes (0: one datagram).
func (out *replies) add(n, seg int, to netip.AddrPort, oob []byte, drop prometheus.Counter) {
	i := out.n
	m := &out.ms[i]
	m.Buffers[0] = m.Buffers[0][:n]
	m.OOB = oob
	if seg > 0 {
		out.ctl[i] = appendSegment(append(out.ctl[i][:0], oob...), seg)
		m.OOB = out.ctl[i]
	}
	out.to[i], out.drop[i], out.seg[i], out.pk[i] = to, drop, seg, oob
	out.n++
}

func (out *replies) reset() {
	for i := range out.n {
		out.ms[i].Buffers[0] = out.ms[i].Buffers[0][:maxDatagram]
		out.ms[i].OOB, out.drop[i], out.pk[i], out.seg[i] = nil, nil, nil, 0
	}
	out.n = 0
}
