package forward

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultParkThreshold is how long a direction waits for data on its
// goroutine before it is parked: long enough that a request's answer or a
// burst's next chunk rarely parks (a park and wake cost a few system calls),
// short enough that idle connections soon cost no goroutine. It also bounds
// the goroutines a burst of new connections holds at once, whose
// descriptors the runtime keeps for good (about 480 bytes each): 500 ms
// left 0.3 KB a connection of them after 9000 connections.
const DefaultParkThreshold = 100 * time.Millisecond

// Returning memory after a burst: when this many more directions are parked
// than at the last release, the stacks their goroutines left behind and
// the garbage of their setup are given back to the OS at once, as soon as
// the parked count stops growing (the burst is over) but at most every
// releaseQuiet, or every releaseEvery while it keeps growing. The
// runtime's background scavenger would keep them: it returns only what
// lies beyond the next GC goal (twice the live heap at GOGC=100, five
// times at the 400 a memory limit sets), which an idle process never
// reaches again.
const (
	releaseAfter = 256
	releaseQuiet = time.Second
	releaseEvery = 5 * time.Second
)

// Parker holds the idle directions of forwarded connections in one epoll
// instance of its own, so that an idle connection costs its sockets and a
// few hundred bytes instead of two goroutine stacks. It also gives a socket
// TCP keepalive when it first idles, so its owner can accept and dial
// without it. When a parked socket becomes readable (or closes, or errs),
// its direction resumes on a new goroutine.
//
// The sockets stay registered with Go's poller too; the Parker only waits.
// Directions are removed from its epoll set while their sockets are still
// open (see pipe.fail), so it never acts on a reused descriptor.
type Parker struct {
	threshold time.Duration
	epfd      int
	// file is epfd in Go's poller (readable while the set has events),
	// where the loop waits: see loop.
	file   *os.File
	raw    syscall.RawConn
	wakeFd int // eventfd: Close wakes the loop
	done   chan struct{}

	mu     sync.Mutex // guards parked, seq, closed and every pipe.aborted
	parked map[uint64]*dir
	seq    uint64
	closed bool
}

// NewParker starts a Parker that parks directions idle for threshold (0:
// DefaultParkThreshold). Close it to resume every parked direction.
func NewParker(threshold time.Duration) (*Parker, error) {
	if threshold <= 0 {
		threshold = DefaultParkThreshold
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// Token 0 is the eventfd.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "parker epoll")
	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		_ = unix.Close(wfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	pk := &Parker{threshold: threshold, epfd: epfd, file: file, raw: raw, wakeFd: wfd, done: make(chan struct{}), parked: map[uint64]*dir{}}
	go pk.loop()
	return pk, nil
}

// Parked counts the directions parked now.
func (pk *Parker) Parked() int {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	return len(pk.parked)
}

// Close resumes every parked direction and stops the Parker. Directions
// that wait after Close stay on their goroutines.
func (pk *Parker) Close() error {
	pk.mu.Lock()
	if pk.closed {
		pk.mu.Unlock()
		return nil
	}
	pk.closed = true
	pk.mu.Unlock()
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(pk.wakeFd, one); err != nil {
		return fmt.Errorf("wake the parker: %w", err)
	}
	<-pk.done
	return errors.Join(pk.file.Close(), unix.Close(pk.wakeFd))
}

// park registers d's source socket and takes d off its goroutine. It
// reports false when d must keep waiting on its goroutine (the pipe is
// ending, the Parker is closed, or the socket is gone).
func (pk *Parker) park(d *dir) bool {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.closed || d.p.aborted {
		return false
	}
	pk.seq++
	tok := pk.seq
	var cerr error
	// Control holds the descriptor open while epoll_ctl runs. The lock is
	// held too, so an event that fires at once waits for the map entry.
	err := d.raw.Control(func(fd uintptr) {
		if !d.keepalive {
			// An idle socket is where a dead peer goes unnoticed: it gets
			// TCP keepalive now, not at accept or dial, which spares every
			// short connection four system calls.
			setKeepAlive(int(fd))
			d.keepalive = true
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
		cerr = unix.EpollCtl(pk.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		return false
	}
	d.token = tok
	pk.parked[tok] = d
	return true
}

// detach marks p as ending and takes its parked directions out of the epoll
// set, returning them for the caller to resume once it has closed the
// sockets.
func (pk *Parker) detach(p *pipe) []*dir {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	p.aborted = true
	var out []*dir
	for _, d := range []*dir{&p.up, &p.down} {
		if d.token != 0 && pk.parked[d.token] == d {
			delete(pk.parked, d.token)
			d.token = 0
			pk.unregister(d)
			out = append(out, d)
		}
	}
	return out
}

// unregister removes d's socket from the epoll set, if it is still open.
func (pk *Parker) unregister(d *dir) {
	_ = d.raw.Control(func(fd uintptr) {
		_ = unix.EpollCtl(pk.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// setKeepAlive turns on TCP keepalive with Go's defaults: first probe after
// 15s idle, then every 15s, 9 probes. Errors are ignored: keepalive is a
// best effort on a socket that may already be gone.
func setKeepAlive(fd int) {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9)
}

// wake resumes the direction parked under tok, if it still is.
func (pk *Parker) wake(tok uint64, expired bool) {
	pk.mu.Lock()
	d := pk.parked[tok]
	if d != nil {
		delete(pk.parked, tok)
		d.token = 0
		pk.unregister(d)
	}
	pk.mu.Unlock()
	if d != nil {
		d.expired = expired
		go d.run()
	}
}

func (pk *Parker) loop() {
	defer close(pk.done)
	events := make([]unix.EpollEvent, 256)
	lastScan := time.Now()
	var lastRelease time.Time
	releasedAt := 0 // parked count at the last release
	lastParked := 0 // parked count at the last scan
	// It waits in Go's poller, which watches the epoll set as a file, not
	// in a blocking epoll_wait: a goroutine in a system call keeps its
	// processor until the runtime's monitor takes it back, up to 10 ms
	// later, and the goroutines queued on that processor (a relay loop
	// that had just yielded) wait as long. The read deadline, set anew
	// at each scan, drives the idle scan.
	var (
		n   int
		err error
	)
	_ = pk.file.SetReadDeadline(lastScan.Add(scanEvery))
	poll := func(fd uintptr) bool {
		n, err = unix.EpollWait(int(fd), events, 0)
		return n > 0 || (err != nil && !errors.Is(err, unix.EINTR))
	}
	for {
		n, err = 0, nil
		if rerr := pk.raw.Read(poll); rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) {
			err = rerr
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			n = 0
			time.Sleep(10 * time.Millisecond)
		}
		for i := range n {
			tok := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if tok == 0 {
				pk.resumeAll()
				return
			}
			pk.wake(tok, false)
		}
		if time.Since(lastScan) >= scanEvery {
			lastScan = time.Now()
			_ = pk.file.SetReadDeadline(lastScan.Add(scanEvery))
			pk.expire()
			parked := pk.Parked()
			if parked < releasedAt {
				releasedAt = parked
			}
			if release(parked-releasedAt, parked <= lastParked, time.Since(lastRelease)) {
				releasedAt, lastRelease = parked, time.Now()
				go releaseMemory()
			}
			lastParked = parked
		}
	}
}

// scanEvery is how often the Parker looks for directions idle past
// their timeout (expire) and for memory to give back.
const scanEvery = 250 * time.Millisecond

// releaseMemory returns free memory to the OS after two collections: the
// first moves what sync.Pools kept of the burst (probe and copy buffers,
// tens of KB each) to their victim caches, the second frees it. An idle
// process collects no more, so one collection would leave it resident.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// release decides whether to return memory to the OS now: grown more
// directions were parked since the last release, settled says the count
// stopped growing, since is the time since the last release.
func release(grown int, settled bool, since time.Duration) bool {
	if grown < releaseAfter {
		return false
	}
	if settled {
		return since >= releaseQuiet
	}
	return since >= releaseEvery
}

// expire wakes the parked directions whose pipe has been idle for its idle
// timeout; they end the pipe.
func (pk *Parker) expire() {
	pk.mu.Lock()
	var due []uint64
	for tok, d := range pk.parked {
		if d.p.idleExpired() {
			due = append(due, tok)
		}
	}
	pk.mu.Unlock()
	for _, tok := range due {
		pk.wake(tok, true)
	}
}

func (pk *Parker) resumeAll() {
	pk.mu.Lock()
	toks := make([]uint64, 0, len(pk.parked))
	for tok := range pk.parked {
		toks = append(toks, tok)
	}
	pk.mu.Unlock()
	for _, tok := range toks {
		pk.wake(tok, false)
	}
}
