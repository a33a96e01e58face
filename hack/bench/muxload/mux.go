//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// stopGrace is how long a mux has to exit after SIGTERM before its
// process group is killed.
const stopGrace = 3 * time.Second

// muxProcess is one start of the mux under test: a shell running the
// peer's command line in a process group of its own, so that the whole
// group can be stopped and the whole tree measured. A fresh one per run
// keeps runs independent: pools and heaps grown by one run do not hide the
// next run's growth.
type muxProcess struct {
	cmd    *exec.Cmd
	log    *os.File
	cg     *cgroup // nil when no cgroup could be made
	exited chan struct{}
}

// startMux runs cmdline with /bin/sh in a new process group, its output
// appended to logPath. With useCgroup it tries to start it inside a cgroup
// of its own and falls back to no cgroup, saying why on stderr once per
// start.
func startMux(cmdline, logPath, name string, useCgroup bool) (*muxProcess, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("mux log: %w", err)
	}
	m := &muxProcess{log: log, exited: make(chan struct{})}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if useCgroup {
		cg, err := newCgroup(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "muxload: %v; CPU from /proc only\n", err)
		} else {
			m.cg = cg
			attr.UseCgroupFD, attr.CgroupFD = true, int(cg.fd.Fd())
		}
	}
	m.cmd = exec.Command("/bin/sh", "-c", cmdline)
	m.cmd.Stdout, m.cmd.Stderr = log, log
	m.cmd.SysProcAttr = attr
	if err := m.cmd.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("start %q: %w", cmdline, err), m.release())
	}
	go func() {
		_ = m.cmd.Wait()
		close(m.exited)
	}()
	return m, nil
}

// pid is the root of the mux's process tree.
func (m *muxProcess) pid() int { return m.cmd.Process.Pid }

// alive says whether the mux's root process is still running.
func (m *muxProcess) alive() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the mux's process group, then SIGKILL after
// stopGrace, then kills and removes its cgroup.
func (m *muxProcess) stop() error {
	pgid := m.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-m.exited
	}
	// Children that outlived the shell (sslh-fork's) are still in the group.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	return m.release()
}

// release closes the log and removes the cgroup.
func (m *muxProcess) release() error {
	_ = m.log.Close()
	if m.cg != nil {
		return m.cg.remove()
	}
	return nil
}
