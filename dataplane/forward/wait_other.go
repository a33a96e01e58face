//go:build !linux

package forward

import "syscall"

// waitReadable is the portable fallback: without a way to peek it reports a
// fixed chunk, and ReadFrom blocks for it.
func waitReadable(syscall.RawConn) (int, error) { return 1 << 20, nil }
