//go:build !linux

package forward

import (
	"errors"
	"io"
	"net"
	"sync"
)

// WaitReadable on this platform cannot wait without reading: it reports a
// full chunk at once and the caller's read blocks instead.
func WaitReadable(*net.TCPConn) (int, error) { return 1 << 20, nil }

// ReadOrWait reads into a pooled buffer; on this platform the buffer is held
// while the read waits.
func ReadOrWait(c *net.TCPConn, pool *sync.Pool, limit int) (*[]byte, int, error) {
	bp := pool.Get().(*[]byte)
	buf := *bp
	if limit > 0 && limit < len(buf) {
		buf = buf[:limit]
	}
	n, err := c.Read(buf)
	if n == 0 {
		pool.Put(bp)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return nil, 0, err
	}
	return bp, n, nil
}

// ReadQueued cannot tell an empty queue from a wait on this platform: it
// answers ErrNothingQueued, and the caller waits with ReadOrWait.
func ReadQueued(*net.TCPConn, *sync.Pool, int) (*[]byte, int, error) {
	return nil, 0, ErrNothingQueued
}
