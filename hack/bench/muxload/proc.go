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
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat and
// /proc/stat. Linux fixes it at 100 for user space whatever the kernel's HZ.
const clockTicks = 100

// pfKthread is PF_KTHREAD in the flags field of /proc/PID/stat: the task
// is a kernel thread (ksoftirqd, kworker), whose CPU is the kernel's, not
// another user's job.
const pfKthread = 0x00200000

// procFS reads a proc file system mounted at root: "/proc" in use, a
// directory of fixtures in tests.
type procFS struct{ root string }

// procStat is what the load tool needs from one /proc/PID/stat line.
type procStat struct {
	pid, ppid int
	flags     uint64
	// utime and stime are the process's own CPU (all its threads, live and
	// exited); cutime and cstime are what its reaped children used. All in
	// clock ticks.
	utime, stime, cutime, cstime uint64
}

// ticks is the process's CPU, its own and its reaped children's: summed
// over a tree and differenced between two instants, a child that exits and
// is reaped in between moves from one term to the other and is not lost.
func (s procStat) ticks() uint64 { return s.utime + s.stime + s.cutime + s.cstime }

// parseStat parses a /proc/PID/stat line. The command name is in
// parentheses and may itself hold spaces and parentheses, so the fields are
// counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return procStat{}, errors.New("stat: no (comm)")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procStat{}, fmt.Errorf("stat: pid: %w", err)
	}
	// After ')': state ppid pgrp session tty_nr tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime ...
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat: %d fields after comm, want at least 15", len(f))
	}
	s := procStat{pid: pid}
	if s.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	nums := []*uint64{&s.flags, &s.utime, &s.stime, &s.cutime, &s.cstime}
	for i, idx := range []int{6, 11, 12, 13, 14} {
		if *nums[i], err = strconv.ParseUint(f[idx], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("stat: field %d: %w", idx+3, err)
		}
	}
	return s, nil
}

// stat reads /proc/PID/stat.
func (p procFS) stat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(p.root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// all reads the stat of every process. Processes that exit while it reads
// are left out: a snapshot of a busy machine is never atomic.
func (p procFS) all() ([]procStat, error) {
	ents, err := os.ReadDir(p.root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		s, err := p.stat(pid)
		if err != nil {
			continue // it exited between the listing and the read
		}
		out = append(out, s)
	}
	return out, nil
}

// descendants returns root and every process below it, found through the
// parent links of one snapshot. A process that re-parents itself away
// (double fork) is not found: the peers here all stay in the foreground.
func descendants(all []procStat, root int) []procStat {
	children := make(map[int][]procStat, len(all))
	var top *procStat
	for i := range all {
		if all[i].pid == root {
			top = &all[i]
		}
		children[all[i].ppid] = append(children[all[i].ppid], all[i])
	}
	if top == nil {
		return nil
	}
	tree := []procStat{*top}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i].pid]...)
	}
	return tree
}

// treeTicks sums the CPU ticks of root's tree; procs is how many processes
// it holds (0 once root is gone).
func (p procFS) treeTicks(root int) (ticks uint64, procs int, err error) {
	all, err := p.all()
	if err != nil {
		return 0, 0, err
	}
	tree := descendants(all, root)
	for _, s := range tree {
		ticks += s.ticks()
	}
	return ticks, len(tree), nil
}

// kthreadTicks sums the CPU of the kernel threads: on loopback they carry
// much of everyone's TCP work, so they are neither the mux nor other load.
func kthreadTicks(all []procStat) uint64 {
	var t uint64
	for _, s := range all {
		if s.flags&pfKthread != 0 {
			t += s.utime + s.stime
		}
	}
	return t
}

// memory is the resident memory of a set of processes, in KiB.
type memory struct {
	rssKB, pssKB int64
	procs        int
}

// parseSmapsRollup reads the Rss and Pss lines of /proc/PID/smaps_rollup.
// Pss shares each page among the processes that map it, so summing it
// over a fork-per-connection tree counts shared pages once; Rss counts
// them once per process.
func parseSmapsRollup(b []byte) (memory, error) {
	var m memory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "Rss" && key != "Pss") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return memory{}, fmt.Errorf("smaps_rollup: bad %s line %q", key, sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("smaps_rollup: %s: %w", key, err)
		}
		if key == "Rss" {
			m.rssKB = n
		} else {
			m.pssKB = n
		}
		seen++
	}
	if seen != 2 {
		return memory{}, errors.New("smaps_rollup: no Rss and Pss lines")
	}
	return m, sc.Err()
}

// treeMemory sums Rss and Pss over root's tree.
func (p procFS) treeMemory(root int) (memory, error) {
	all, err := p.all()
	if err != nil {
		return memory{}, err
	}
	tree := descendants(all, root)
	if len(tree) == 0 {
		return memory{}, fmt.Errorf("process %d is gone", root)
	}
	var total memory
	for _, s := range tree {
		b, err := os.ReadFile(filepath.Join(p.root, strconv.Itoa(s.pid), "smaps_rollup"))
		if err != nil {
			continue // exited since the snapshot
		}
		m, err := parseSmapsRollup(b)
		if err != nil {
			return memory{}, fmt.Errorf("process %d: %w", s.pid, err)
		}
		total.rssKB += m.rssKB
		total.pssKB += m.pssKB
		total.procs++
	}
	return total, nil
}

// cpuTimes is the machine's CPU from the aggregate "cpu" line of
// /proc/stat, in clock ticks.
type cpuTimes struct {
	// busy is user + nice + system: the time spent in processes (kernel
	// threads included), not in interrupts.
	busy uint64
	// steal is the time the hypervisor gave this VM's CPUs to someone
	// else: on a shared host, load that no process here shows.
	steal uint64
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat.
func parseProcStat(b []byte) (cpuTimes, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: first line %q is not the cpu total", line)
	}
	var col [8]uint64
	for i := range col {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: column %d: %w", i+1, err)
		}
		col[i] = n
	}
	return cpuTimes{busy: col[0] + col[1] + col[2], steal: col[7]}, nil
}

// cpuTimes reads the machine's CPU from /proc/stat.
func (p procFS) cpuTimes() (cpuTimes, error) {
	b, err := os.ReadFile(filepath.Join(p.root, "stat"))
	if err != nil {
		return cpuTimes{}, err
	}
	return parseProcStat(b)
}
