//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A cgroup is a cgroup v2 directory made for one mux process. The /proc
// tree misses the CPU of children that exit unreaped (a parent that
// ignores SIGCHLD lets the kernel discard their times): a fork-per-
// connection mux would look almost free. A cgroup's cpu.stat counts every
// task that ever ran in it, so where one can be made it is the CPU figure
// and the /proc tree is kept beside it as a check.
type cgroup struct {
	dir string
	fd  *os.File // the directory, for clone3's CLONE_INTO_CGROUP
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted, from a
// mountinfo file ("" when there is none).
func cgroup2Mount(mountinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
			return pf[4]
		}
	}
	return ""
}

// ownCgroup2Path is this process's cgroup v2 path from /proc/self/cgroup
// (the "0::" line).
func ownCgroup2Path(selfCgroup []byte) string {
	for line := range strings.SplitSeq(string(selfCgroup), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return "/"
}

// newCgroup makes a cgroup below this process's own, named after name.
func newCgroup(name string) (*cgroup, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	mnt := cgroup2Mount(mi)
	if mnt == "" {
		return nil, errors.New("cgroup: no cgroup v2 hierarchy mounted")
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	dir := filepath.Join(mnt, ownCgroup2Path(self), fmt.Sprintf("muxload-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	fd, err := os.Open(dir)
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return &cgroup{dir: dir, fd: fd}, nil
}

// parseCPUStat returns usage_usec from a cgroup v2 cpu.stat file.
func parseCPUStat(b []byte) (time.Duration, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu.stat: usage_usec: %w", err)
			}
			return time.Duration(n) * time.Microsecond, nil
		}
	}
	return 0, errors.New("cpu.stat: no usage_usec")
}

// usage is the CPU every task in the cgroup has used so far.
func (c *cgroup) usage() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	return parseCPUStat(b)
}

// remove kills whatever still runs in the cgroup (a child that left the
// mux's process group) and removes it, waiting at most a few seconds.
func (c *cgroup) remove() error {
	_ = c.fd.Close()
	_ = os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.Remove(c.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup: remove %s: %w", c.dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
