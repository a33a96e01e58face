// Package budget sizes the dataplane to the memory and file descriptors the
// process may use, so that no mix of clients can push it past its
// container's limit: past the limit the kernel kills the pod, and with it
// every tenant's connections.
//
// Plan is the pure decision; MemoryLimit and FileLimit read what the kernel
// grants (cgroup v1 or v2, RLIMIT_NOFILE).
package budget

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// PerConnection is the memory a connection is budgeted at its worst: a
// TLS handshake or an HTTP header block of up to 64 KiB being read (the
// bigger of the two), the probe buffer, and the goroutine stacks grown
// while sniffing. Most connections cost far less once forwarded (about 3
// KB idle, 8 KB TLS-terminated); the budget is for a client that makes
// each one as costly as it can. Measured with `make soak`, see the README.
const PerConnection = 96 << 10

// Reserve is the memory kept for the process itself (runtime, binary,
// caches, the control loop) before connections are counted.
const Reserve = 48 << 20

// gcHeadroom is the share of the memory limit left above GOMEMLIMIT: the
// garbage collector works harder as the heap nears GOMEMLIMIT, and what it
// does not count (stacks beyond the heap, kernel buffers charged to the
// cgroup) needs room below the hard limit.
const gcHeadroom = 0.15

// fdsPerConnection: a connection holds its client's socket and a
// backend's (or a tunnel target's, or a pooled HTTP connection's).
const fdsPerConnection = 2

// fdReserve is kept for listeners, the API server, metrics and logs.
const fdReserve = 128

// gcPercentUnderLimit is the GOGC of a dataplane whose heap a memory limit
// bounds. Go's default, 100, collects whenever the heap doubles: a proxy's
// live heap is a few MB while every request allocates 8-10 KB, so at 10,000
// requests/s it collected ten times a second, 10-15 % of its CPU in http
// mode. With a limit in force the heap cannot outgrow the container
// whatever GOGC says (the collector works harder near the limit), which
// is the combination Go's GC guide recommends.
const gcPercentUnderLimit = 400

// GCPercent is the GOGC a dataplane runs with under memoryLimit, the
// runtime's soft memory limit (math.MaxInt64 or less than 1: none), or 0
// to leave the runtime's: without a limit, a higher GOGC would let the
// heap grow with nothing to stop it.
func GCPercent(memoryLimit int64) int {
	if memoryLimit <= 0 || memoryLimit == math.MaxInt64 {
		return 0
	}
	return gcPercentUnderLimit
}

// Plan is what the process may hold.
type Plan struct {
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT), 0
	// when the process has no memory limit.
	MemoryLimit int64
	// MaxConnections caps connections across listeners, 0 when nothing
	// bounds them.
	MaxConnections int
}

// Decide plans for a memory limit (0: none) and a file descriptor limit
// (0: none).
func Decide(memLimit int64, fdLimit uint64) Plan {
	var p Plan
	if memLimit > 0 {
		p.MemoryLimit = int64(float64(memLimit) * (1 - gcHeadroom))
		p.MaxConnections = max(int((p.MemoryLimit-Reserve)/PerConnection), 64)
	}
	if fdLimit > 0 {
		byFD := int(min(fdLimit, math.MaxInt32)-min(fdLimit, fdReserve)) / fdsPerConnection
		if p.MaxConnections == 0 || byFD < p.MaxConnections {
			p.MaxConnections = max(byFD, 1)
		}
	}
	return p
}

// unlimited is the smallest cgroup v1 limit that means "none" (the kernel
// reports PAGE_COUNTER_MAX rounded to pages, about 2^63).
const unlimited = 1 << 62

// MemoryLimit returns the memory limit of the process's cgroup (the
// smallest along its path, cgroup v1 or v2), 0 when there is none. fsys is
// the file system root ("/" in production, a test tree otherwise).
func MemoryLimit(fsys fs.FS) (int64, error) {
	f, err := fsys.Open("proc/self/cgroup")
	if err != nil {
		return 0, fmt.Errorf("read the process's cgroup: %w", err)
	}
	defer func() { _ = f.Close() }()
	var v1, v2 string
	haveV1, haveV2 := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path (cgroups(7)).
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2, haveV2 = parts[2], true
		case hasController(parts[1], "memory"):
			v1, haveV1 = parts[2], true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read the process's cgroup: %w", err)
	}
	switch {
	case haveV1:
		return smallestLimit(fsys, "sys/fs/cgroup/memory", v1, "memory.limit_in_bytes")
	case haveV2:
		return smallestLimit(fsys, "sys/fs/cgroup", v2, "memory.max")
	}
	return 0, nil
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// smallestLimit reads file in the cgroup at cgPath under mount and in each
// of its ancestors, and returns the smallest limit. Inside a container's
// cgroup namespace the path may not exist under the mount (the mount is
// the container's own cgroup): then the mount's own file is the limit.
func smallestLimit(fsys fs.FS, mount, cgPath, file string) (int64, error) {
	var best int64
	found := false
	for dir := path.Clean("/" + cgPath); ; dir = path.Dir(dir) {
		v, err := readLimit(fsys, path.Join(mount, dir, file))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return 0, err
		default:
			found = true
			if v > 0 && (best == 0 || v < best) {
				best = v
			}
		}
		if dir == "/" {
			break
		}
	}
	if !found {
		return 0, nil
	}
	return best, nil
}

// readLimit reads a limit file: a number of bytes, or "max" (0: none).
func readLimit(fsys fs.FS, name string) (int64, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if v >= unlimited {
		return 0, nil
	}
	return v, nil
}

// FileLimit returns the process's soft limit on open files (Go raises it
// to the hard limit at start), 0 when unlimited.
func FileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if rl.Cur == math.MaxUint64 {
		return 0, nil
	}
	return rl.Cur, nil
}

// Root is the file system MemoryLimit reads in production.
func Root() fs.FS { return os.DirFS("/") }
