package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/quic"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// session is one client's flow through a listener: from its first
// datagram to its log line. Its backend socket is a raw non-blocking
// descriptor in the Relay's epoll set, not a Go net.Conn, so an idle
// session holds no goroutine and no buffer.
type session struct {
	r     *Relay
	lc    *listenerConfig
	id    uint64       // its epoll token
	key   netip.Prefix // its slot in the per-client table
	start int64        // Relay clock

	// Read by the sweep without the lock.
	lastActive atomic.Int64
	idle       atomic.Int64 // nanoseconds; max until a route is chosen
	deciding   atomic.Bool  // probe != nil
	probeEnd   atomic.Int64

	mu sync.Mutex // guards the rest; taken before Relay.mu, never after
	// fd is the connected backend socket, -1 before a route is chosen and
	// after the end: a write or read under mu never reaches a reused
	// descriptor.
	fd      int
	gro     bool // fd has UDP_GRO: a read may hold several datagrams
	rc      *routeConfig
	backend netip.AddrPort
	// client is where replies go: the address the session heard from
	// last; oob the local address it wrote to (nil unless the listener is
	// bound to a wildcard address).
	client netip.AddrPort
	oob    []byte
	addrs  []netip.AddrPort // the client addresses mapped to it, oldest first
	probe  *probe
	quic   bool
	// serverIDLen is the length of the server's connection IDs, from its
	// long headers (0: not seen); lastDCID the last one the client sent
	// short headers to.
	serverIDLen int
	lastDCID    quic.ConnectionID
	cids        []quic.ConnectionID // registered in Relay.byCID
	newIDs      []quic.ConnectionID // learnt, to register once mu is released
	sni         string
	up, down    int64 // bytes
	upN, downN  int64 // datagrams
	ended       bool
	outcome     string
	err         error
}

// probe holds a session's first datagrams until a route is chosen.
type probe struct {
	prober route.DatagramProber
	held   []byte // datagrams back to back
	lens   []int
	end    int64
}

func (p *probe) hold(d []byte) {
	p.held = append(p.held, d...)
	p.lens = append(p.lens, len(d))
}

// setClient makes from the address replies go to, from the local address
// in oob (the control message of its datagram).
func (s *session) setClient(from netip.AddrPort, oob []byte) {
	s.client = from
	s.oob = nil
	if !s.r.pktinfo || len(oob) == 0 {
		return
	}
	var dst []byte
	if s.r.v6 {
		var cm ipv6.ControlMessage
		if cm.Parse(oob) == nil {
			dst = cm.Dst
		}
	} else {
		var cm ipv4.ControlMessage
		if cm.Parse(oob) == nil {
			dst = cm.Dst
		}
	}
	if a, ok := netip.AddrFromSlice(dst); ok {
		s.oob = pktinfo(s.r.v6, a)
	}
}

// fromClient relays a datagram of a session that exists: held while the
// route is undecided, written to the backend after.
func (s *session) fromClient(d []byte, from netip.AddrPort, oob []byte, now int64) {
	if s.fromClientLocked(d, from, oob, now) {
		s.registerIDs()
	}
}

// fromClientLocked is fromClient under s.mu, released even on a panic so
// that containing it can end s. It reports whether IDs were learnt.
func (s *session) fromClientLocked(d []byte, from netip.AddrPort, oob []byte, now int64) (learnt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		s.lc.drops[DropEnded].Inc()
		return false
	}
	if h := s.r.opt.lockedHook; h != nil {
		h(true, d)
	}
	s.lastActive.Store(now)
	if from != s.client {
		s.moveTo(from, oob)
	}
	if p := s.probe; p != nil {
		dec, err := p.prober.Add(d)
		switch {
		case err != nil:
			s.lc.drops[DropShortInitial].Inc()
		case len(p.held)+len(d) > s.lc.maxProbe:
			s.lc.drops[DropProbeOverflow].Inc()
			dec = p.prober.Finish()
		default:
			p.hold(d)
		}
		if dec.NeedMore {
			return false
		}
		s.decidedProbe(dec, now)
		return true
	}
	if s.quic && quic.IsShortInitial(d) {
		s.lc.drops[DropShortInitial].Inc()
		return false
	}
	s.r.up.add(s, d)
	return s.quic && s.learnClientDCID(d)
}

// learnClientDCID notes the connection ID a client's short-header packet
// is sent to. Servers hand out most of their IDs in NEW_CONNECTION_ID
// frames, encrypted, and clients move to them soon (quic-go right after
// its handshake), so the IDs of the server's long headers would not find
// a client rebound later; the ID it used on its last path does, as a
// NAT rebinding keeps it. Short headers do not say the ID's length: it
// is the server's, as its long headers showed. It reports whether the ID
// is new. s.mu is held.
func (s *session) learnClientDCID(d []byte) bool {
	if s.serverIDLen == 0 || len(d) == 0 || d[0]&0x80 != 0 {
		return false
	}
	id, ok := quic.ShortHeaderDCID(d, s.serverIDLen)
	if !ok || id == s.lastDCID {
		return false
	}
	s.lastDCID = id
	for _, known := range s.cids {
		if known == id {
			return false
		}
	}
	s.newIDs = append(s.newIDs, id)
	return true
}

// moveTo makes from the session's client address: a QUIC client that
// migrated or was rebound by a NAT, found by its connection ID, or an
// address the session had before. s.mu is held.
func (s *session) moveTo(from netip.AddrPort, oob []byte) {
	r := s.r
	r.mu.Lock()
	if r.byAddr[from] == nil && !s.ended {
		r.byAddr[from] = s
		s.addrs = append(s.addrs, from)
		if len(s.addrs) > maxAliases {
			// The oldest goes; should it write again, its connection ID
			// finds the session again.
			if old := s.addrs[0]; r.byAddr[old] == s {
				delete(r.byAddr, old)
			}
			s.addrs = s.addrs[1:]
		}
	}
	r.mu.Unlock()
	s.setClient(from, oob)
}

// finishProbe decides a session whose probe timed out: the routes still
// undecided count as no match.
func (s *session) finishProbe(now int64) {
	if s.finishProbeLocked(now) {
		s.registerIDs()
	}
}

// finishProbeLocked is finishProbe under s.mu, released even on a panic.
// It reports whether the probe was decided.
func (s *session) finishProbeLocked(now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.probe == nil {
		return false
	}
	dec := s.probe.prober.Finish()
	s.decidedProbe(dec, now)
	return true
}

// decidedProbe connects a session whose held datagrams decided dec and
// writes them to the backend; with no route it ends the session. s.mu is
// held.
func (s *session) decidedProbe(dec route.Decision, now int64) {
	p := s.probe
	s.probe = nil
	s.deciding.Store(false)
	if dec.Route < 0 {
		s.endLocked(OutcomeNoRoute, errors.New("no route matched"))
		return
	}
	s.decided(dec, &p.prober, now)
	held := p.held
	for _, n := range p.lens {
		s.writeBackend(held[:n])
		held = held[n:]
	}
}

// decided opens the session's backend socket for route dec.Route. s.mu is
// held.
func (s *session) decided(dec route.Decision, p *route.DatagramProber, now int64) {
	rc := &s.lc.routes[dec.Route]
	s.rc, s.sni = rc, dec.Info.SNI
	s.idle.Store(int64(rc.idle))
	s.lastActive.Store(now)
	if rc.Match.Protocol == snapshot.QUIC {
		s.quic = true
		if _, dcid, _, ok := p.QUIC(); ok {
			// Initial and 0-RTT packets, and a client's Handshake
			// packets until the server's first reply arrives, carry the
			// client's DCID.
			s.newIDs = append(s.newIDs, dcid)
		}
	}
	ep, ok := s.r.endpoint(rc, s.client)
	if !ok {
		s.endLocked(OutcomeDialError, errors.New("the backend has no endpoint"))
		return
	}
	s.backend = ep
	fd, gro, err := s.r.dial(ep, s.id)
	if err != nil {
		s.endLocked(OutcomeDialError, err)
		return
	}
	s.fd, s.gro = fd, gro
}

// dial opens a non-blocking UDP socket connected to ep and adds it to the
// epoll set under token id; gro says it has UDP_GRO.
func (r *Relay) dial(ep netip.AddrPort, id uint64) (fd int, gro bool, err error) {
	family := unix.AF_INET
	var sa unix.Sockaddr
	if a := ep.Addr(); a.Is6() && !a.Is4In6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ep.Port()), Addr: a.As16(), ZoneId: zoneIndex(a.Zone())}
	} else {
		sa = &unix.SockaddrInet4{Port: int(ep.Port()), Addr: a.Unmap().As4()}
	}
	fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("socket for %s: %w", ep, err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		_ = unix.Close(fd)
		return -1, false, fmt.Errorf("connect to %s: %w", ep, err)
	}
	gro = r.gso.Load() && enableGRO(fd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		_ = unix.Close(fd)
		return -1, false, fmt.Errorf("epoll_ctl: %w", err)
	}
	return fd, gro, nil
}

// writeBackend sends one datagram to the backend, never waiting: a full
// socket buffer drops it, as a full network would. s.mu is held.
func (s *session) writeBackend(d []byte) {
	if s.fd < 0 {
		s.lc.drops[DropEnded].Inc()
		return
	}
	if _, err := unix.Write(s.fd, d); err != nil {
		// ECONNREFUSED reports an earlier datagram's ICMP error; the
		// read side ends the session on it.
		s.lc.drops[DropBackendWrite].Inc()
		return
	}
	s.up += int64(len(d))
	s.upN++
	s.rc.upBytes.Add(float64(len(d)))
	s.rc.upDgrams.Inc()
}

// writeBackendBatch sends the datagrams b holds to the backend, never
// waiting: those a full socket buffer refuses are dropped, as a full
// network would drop them. s.mu is held.
func (s *session) writeBackendBatch(b *upBatch) {
	bufs := b.bufs
	defer func() {
		clear(b.bufs)
		b.bufs, b.s = b.bufs[:0], nil
	}()
	if len(bufs) == 1 {
		s.writeBackend(bufs[0])
		return
	}
	if s.fd < 0 {
		s.lc.drops[DropEnded].Add(float64(len(bufs)))
		return
	}
	if s.r.gso.Load() && !s.r.opt.noJoin {
		s.writeBackendJoined(b, bufs)
		return
	}
	s.writeBackendEach(b, bufs)
}

// writeBackendJoined sends bufs to the backend with runs of one size
// (the last maybe shorter) joined into segmented messages, as a client's
// segmented buffer came. A joined message the kernel refuses is sent
// again datagram by datagram. s.mu is held.
func (s *session) writeBackendJoined(b *upBatch, bufs [][]byte) {
	for len(bufs) > 0 {
		b.groups, b.oobs = b.groups[:0], b.oobs[:0]
		for i := 0; i < len(bufs); {
			rest := bufs[i:]
			g := joinLen(len(rest), func(j int) int { return len(rest[j]) }, func(int) bool { return true })
			var oob []byte
			if g > 1 {
				oob = appendSegment(b.ctl[len(b.groups)][:0], len(rest[0]))
			}
			b.groups, b.oobs = append(b.groups, g), append(b.oobs, oob)
			i += g
		}
		n, err := b.mm.sendGroups(s.fd, bufs, b.groups, b.oobs)
		clear(b.oobs)
		if err != nil {
			g := b.groups[0]
			if g > 1 {
				s.r.gsoFailed(err)
				s.writeBackendEach(b, bufs[:g])
			} else {
				s.lc.drops[DropBackendWrite].Inc()
			}
			bufs = bufs[g:]
			continue
		}
		var sent int
		for _, g := range b.groups[:n] {
			sent += g
		}
		s.countUp(bufs[:sent])
		bufs = bufs[sent:]
	}
}

// countUp counts bufs as relayed to the backend. s.mu is held.
func (s *session) countUp(bufs [][]byte) {
	var bytes int
	for _, d := range bufs {
		bytes += len(d)
	}
	s.up += int64(bytes)
	s.upN += int64(len(bufs))
	s.rc.upBytes.Add(float64(bytes))
	s.rc.upDgrams.Add(float64(len(bufs)))
}

// writeBackendEach sends bufs to the backend one datagram per message.
// s.mu is held.
func (s *session) writeBackendEach(b *upBatch, bufs [][]byte) {
	for len(bufs) > 0 {
		n, err := b.mm.send(s.fd, bufs)
		if err != nil {
			// The first one failed (ECONNREFUSED reports an earlier
			// datagram's ICMP error; the read side ends the session).
			s.lc.drops[DropBackendWrite].Inc()
			n = 1
		} else {
			s.countUp(bufs[:n])
		}
		bufs = bufs[n:]
	}
}

// perWake bounds the datagrams read from one session per epoll wake, so a
// busy backend cannot starve the others.
const perWake = 16

// fromBackend reads the datagrams the backend sent and queues them for
// the client, flushing when the batch is full. One recvmmsg reads as many
// as the batch has room for; a read that returns fewer has drained the
// socket, so no read is spent on learning that it is empty.
func (s *session) fromBackend(out *replies, now int64) {
	if s.fromBackendLocked(out, now) {
		s.registerIDs()
	}
}

// fromBackendLocked is fromBackend under s.mu, released even on a panic
// so that containing it can end s. It reports whether s is still open.
func (s *session) fromBackendLocked(out *replies, now int64) bool {
	s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock()
		}
	}()
	var refused error
	for read := 0; read < perWake; {
		if s.fd < 0 {
			break
		}
		if out.full() {
			locked = false
			s.mu.Unlock()
			s.r.flush(out)
			s.mu.Lock()
			locked = true
			continue
		}
		bufs := out.free(perWake - read)
		var oobs [][]byte
		if s.gro {
			oobs = out.freeControl(len(bufs))
		}
		n, err := out.mm.recv(s.fd, bufs, oobs)
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				refused = err
			}
			break
		}
		s.lastActive.Store(now)
		var bytes, dgrams int
		for i := range n {
			buf, size, seg := bufs[i], out.mm.n(i), 0
			if oobs != nil {
				seg = groSegment(oobs[i][:out.mm.oobn(i)])
			}
			if h := s.r.opt.lockedHook; h != nil {
				h(false, buf[:size])
			}
			k := segments(size, seg)
			if k == 1 {
				seg = 0
			}
			if s.quic {
				for j := range k {
					if d := segment(buf[:size], seg, j); len(d) > 0 && d[0]&0x80 != 0 {
						s.learnServerID(d)
					}
				}
			}
			bytes += size
			dgrams += k
			out.add(size, seg, s.client, s.oob, s.lc.drops[DropClientWrite])
		}
		s.down += int64(bytes)
		s.downN += int64(dgrams)
		s.rc.downBytes.Add(float64(bytes))
		s.rc.downDgrams.Add(float64(dgrams))
		read += n
		if n < len(bufs) {
			break
		}
	}
	if refused != nil {
		outcome := OutcomeError
		if errors.Is(refused, unix.ECONNREFUSED) {
			outcome = OutcomeRefused
		}
		s.endLocked(outcome, fmt.Errorf("read from the backend: %w", refused))
		return false
	}
	return true
}

// learnServerID notes the SCID of the server's long-header packet: the
// connection ID its client will send short-header packets to. s.mu is
// held.
func (s *session) learnServerID(d []byte) {
	_, _, scid, ok := quic.LongHeaderIDs(d)
	if !ok || scid.Len() == 0 {
		return
	}
	s.serverIDLen = scid.Len()
	for _, id := range s.cids {
		if id == scid {
			return
		}
	}
	for _, id := range s.newIDs {
		if id == scid {
			return
		}
	}
	s.newIDs = append(s.newIDs, scid)
}

// registerIDs enters the connection IDs learnt into the Relay's table,
// the oldest forgotten past maxConnectionIDs. Called without s.mu held.
func (s *session) registerIDs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.newIDs) == 0 || s.ended {
		s.newIDs = nil
		return
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range s.newIDs {
		if other := r.byCID[id]; other != nil {
			continue // another session's (or a collision): first come keeps it
		}
		r.byCID[id] = s
		r.cidLens[id.Len()]++
		s.cids = append(s.cids, id)
		if len(s.cids) > maxConnectionIDs {
			r.forgetID(s.cids[0], s)
			s.cids = s.cids[1:]
		}
	}
	s.newIDs = nil
}

// forgetID removes id from the table if it is s's. r.mu is held.
func (r *Relay) forgetID(id quic.ConnectionID, s *session) {
	if r.byCID[id] == s {
		delete(r.byCID, id)
		r.cidLens[id.Len()]--
	}
}

// end ends the session: closes its socket, forgets it, gives back its
// slots, counts and logs it. It runs once.
func (s *session) end(outcome string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(outcome, err)
}

// endLocked is end with s.mu held.
func (s *session) endLocked(outcome string, err error) {
	if s.ended {
		return
	}
	s.ended, s.outcome, s.err = true, outcome, err
	r := s.r
	if s.fd >= 0 {
		_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		_ = unix.Close(s.fd)
		s.fd = -1
	}
	s.probe = nil
	s.deciding.Store(false)
	r.mu.Lock()
	for _, a := range s.addrs {
		if r.byAddr[a] == s {
			delete(r.byAddr, a)
		}
	}
	delete(r.byToken, s.id)
	for _, id := range s.cids {
		r.forgetID(id, s)
	}
	r.mu.Unlock()
	r.clients.Release(s.key)
	r.releaseSlots()
	s.lc.sessions.Dec()
	s.report()
}

// report counts the ended session and logs its line, with the fields of a
// TCP connection's where they mean the same.
func (s *session) report() {
	r := s.r
	routeName, protocol := "", ""
	if s.rc != nil {
		routeName, protocol = s.rc.Name, string(s.rc.Match.Protocol)
	}
	r.m.sessionsTotal.WithLabelValues(s.lc.Name, routeName, protocol, s.outcome).Inc()
	log := r.log
	if !r.opt.LogSessions {
		log = log.V(1)
	}
	if !log.Enabled() {
		return
	}
	backend := ""
	if s.backend.IsValid() {
		backend = s.backend.String()
	}
	kv := []any{
		"listener", s.lc.Name, "route", routeName, "protocol", protocol,
		"client", s.client.String(), "backend", backend,
		"up", s.up, "down", s.down, "datagramsUp", s.upN, "datagramsDown", s.downN,
		"duration", time.Duration(r.now() - s.start).Round(time.Microsecond).String(),
		"outcome", s.outcome, "transport", "udp",
	}
	if s.sni != "" {
		kv = append(kv, "sni", s.sni)
	}
	if len(s.addrs) > 1 {
		kv = append(kv, "addresses", len(s.addrs))
	}
	if s.err != nil {
		kv = append(kv, "error", s.err.Error())
	}
	log.Info("session", kv...)
}
