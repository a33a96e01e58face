package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// The attackers run in a child process of their own (soak -attack):
// sharing the harness's process, their goroutines, writes and garbage
// delayed the legitimate clients and the backends measured beside them by
// seconds, which read as portmux's latency. The child gets the target and
// the attack's sizes as flags and prints its summary as JSON when its
// time is up.

// attackChild is a running attacker process.
type attackChild struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// startAttackChild starts the attackers against target for d.
func startAttackChild(o options, target string, d time.Duration) (*attackChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	a := &attackChild{}
	a.cmd = exec.Command(self, "-attack", target, "-duration", d.String(),
		"-slowloris", strconv.Itoa(o.slowloris), "-big-headers", strconv.Itoa(o.bigHeaders),
		"-hogs", strconv.Itoa(o.hogs), "-dribblers", strconv.Itoa(o.dribblers), "-garbage", strconv.Itoa(o.garbage),
		"-h2-floods", strconv.Itoa(o.h2Floods), "-h2-hogs", strconv.Itoa(o.h2Hogs))
	a.cmd.Stdout, a.cmd.Stderr = &a.out, os.Stderr
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the attackers: %w", err)
	}
	return a, nil
}

// wait waits for the attackers to finish and returns what they achieved
// and the CPU they used, in seconds.
func (a *attackChild) wait() (map[string]attackSummary, float64, error) {
	if err := a.cmd.Wait(); err != nil {
		return nil, 0, fmt.Errorf("attackers: %w", err)
	}
	var sum map[string]attackSummary
	if err := json.Unmarshal(a.out.Bytes(), &sum); err != nil {
		return nil, 0, fmt.Errorf("attackers' summary: %w", err)
	}
	st := a.cmd.ProcessState
	return sum, (st.UserTime() + st.SystemTime()).Seconds(), nil
}

// runAttacker is the child's whole life: attack target for o.duration,
// then print the summary.
func runAttacker(ctx context.Context, o options, target string) error {
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	atk := startAttack(ctx, o, target)
	<-ctx.Done()
	atk.wait()
	return json.NewEncoder(os.Stdout).Encode(atk.summary())
}
