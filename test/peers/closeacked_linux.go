package peers

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CloseWriteAcked sends c's FIN and returns once the peer's kernel has
// acknowledged it, so that from then on the peer's socket reads end of
// file: a test can order its next step after a close that the code under
// test must notice, where returning from Close promises nothing of the
// kind.
func CloseWriteAcked(t testing.TB, c *net.TCPConn) {
	t.Helper()
	if err := c.CloseWrite(); err != nil {
		t.Errorf("shutdown: %v", err)
		return
	}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Errorf("raw connection: %v", err)
		return
	}
	for {
		var state uint8
		var serr error
		if err := raw.Control(func(fd uintptr) {
			var info *unix.TCPInfo
			info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if serr == nil {
				state = info.State
			}
		}); err != nil || serr != nil {
			t.Errorf("TCP_INFO: %v", errors.Join(err, serr))
			return
		}
		if state != unix.BPF_TCP_FIN_WAIT1 { // FIN_WAIT2, or CLOSING/TIME_WAIT if the peer closed too
			return
		}
		time.Sleep(time.Millisecond)
	}
}
