package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"
)

// SocketMode is the control socket's permission: only the user the pod's
// containers run as may connect (connecting needs write permission).
const SocketMode = 0o600

// Listen binds the control socket at path. A socket file left by a
// dataplane that was killed (the directory outlives container restarts)
// is replaced; one that a live process still answers on is not.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("control socket %s: another process serves on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: removing the stale socket: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}
