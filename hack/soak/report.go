package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// sampler reads portmux's state every second and keeps the highest values.
type sampler struct {
	p   *portmux
	mu  sync.Mutex
	max sample
	cur sample
}

func newSampler(p *portmux) *sampler { return &sampler{p: p} }

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := s.p.sample()
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.cur = cur
		s.max.Goroutines = max(s.max.Goroutines, cur.Goroutines)
		s.max.OpenFDs = max(s.max.OpenFDs, cur.OpenFDs)
		s.max.RSS = max(s.max.RSS, cur.RSS)
		s.max.PeakRSS = max(s.max.PeakRSS, cur.PeakRSS)
		s.max.Active = max(s.max.Active, cur.Active)
		s.max.HTTPBackend = max(s.max.HTTPBackend, cur.HTTPBackend)
		s.max.Panics = max(s.max.Panics, cur.Panics)
		s.mu.Unlock()
	}
}

func (s *sampler) peak() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

func (s *sampler) last() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// report is everything a run found.
type report struct {
	Limit          int64                    `json:"limitBytes"`
	CgroupNote     string                   `json:"cgroupNote,omitempty"`
	Budget         string                   `json:"budgetLogLine"`
	Baseline       map[string]kindSummary   `json:"baseline"`
	Attack         map[string]kindSummary   `json:"underAttack"`
	Attackers      map[string]attackSummary `json:"attackers"`
	Before, Peak   sample
	After          sample
	Drained        bool               `json:"drained"`
	DrainTime      time.Duration      `json:"drainTime"`
	Outcomes       map[string]float64 `json:"outcomes"`
	CgroupPeak     int64              `json:"cgroupPeakBytes"`
	CgroupFailcnt  int64              `json:"cgroupFailcnt"`
	LegitBytesLost int                `json:"legitAnswersWrong"`
	Died           bool               `json:"died"`
	// LiveHeapBefore and LiveHeapAfter are the heap right after two
	// forced collections, before the attack and once every connection has
	// closed after it.
	LiveHeapBefore int64 `json:"liveHeapBeforeBytes"`
	LiveHeapAfter  int64 `json:"liveHeapAfterBytes"`
	// PortmuxCores, ClientCores (the legitimate clients and the backends)
	// and AttackerCores are the CPU each used during the attack, in cores:
	// on a small machine they compete for it.
	PortmuxCores  float64 `json:"portmuxCores"`
	ClientCores   float64 `json:"clientCores"`
	AttackerCores float64 `json:"attackerCores"`
}

func (r *report) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.markdown()), 0o644)
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Legitimate clients (from %s)\n\n", legitAddrs)
	b.WriteString("| kind | ops baseline | success | p50 / p99 ms | ops under attack | success | p50 / p99 ms | added p99 ms | wrong answers |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, k := range sortedKeys(r.Baseline, r.Attack) {
		base, atk := r.Baseline[k], r.Attack[k]
		fmt.Fprintf(&b, "| %s | %d | %.2f%% | %.2f / %.2f | %d | %.2f%% | %.2f / %.2f | %+.2f | %d |\n",
			k, base.Ops, 100*base.Success, base.P50, base.P99, atk.Ops, 100*atk.Success, atk.P50, atk.P99, atk.P99-base.P99, base.Lost+atk.Lost)
	}
	for _, k := range sortedKeys(r.Attack, map[string]kindSummary(nil)) {
		if e := r.Attack[k].LastError; e != "" {
			fmt.Fprintf(&b, "\n%s: last error under attack: %s\n", k, e)
		}
	}
	b.WriteString("\n## Attackers\n\n| kind | clients | connections | refused at connect | closed on them | answers |\n|---|---|---|---|---|---|\n")
	for _, k := range sortedKeys(r.Attackers, map[string]attackSummary(nil)) {
		a := r.Attackers[k]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s |\n", k, a.Clients, a.Connects, a.Refused, a.Closed, statuses(a.Statuses))
	}
	b.WriteString("\n## portmux\n\n")
	if r.Limit > 0 {
		fmt.Fprintf(&b, "- memory limit (cgroup): %d MiB; peak RSS (VmHWM) %.1f MiB (%.0f%% of it); cgroup peak %.1f MiB; times the cgroup hit its limit: %d\n",
			r.Limit>>20, mib(r.Peak.PeakRSS), 100*float64(r.Peak.PeakRSS)/float64(r.Limit), mib(r.CgroupPeak), r.CgroupFailcnt)
	} else {
		fmt.Fprintf(&b, "- no memory limit (%s); peak RSS (VmHWM) %.1f MiB\n", r.CgroupNote, mib(r.Peak.PeakRSS))
	}
	fmt.Fprintf(&b, "- budget: %s\n", r.Budget)
	fmt.Fprintf(&b, "- CPU during the attack: portmux %.2f cores, the legitimate clients and backends %.2f, the attackers (a process of their own) %.2f, of %d\n",
		r.PortmuxCores, r.ClientCores, r.AttackerCores, runtime.NumCPU())
	fmt.Fprintf(&b, "- goroutines: %.0f before, %.0f at the peak, %.0f after; open files: %.0f before, %.0f at the peak, %.0f after\n",
		r.Before.Goroutines, r.Peak.Goroutines, r.After.Goroutines, r.Before.OpenFDs, r.Peak.OpenFDs, r.After.OpenFDs)
	fmt.Fprintf(&b, "- live heap right after two collections: %.1f MiB before the attack, %.1f MiB once every connection had closed after it (heap-after.pb.gz: where)\n",
		mib(r.LiveHeapBefore), mib(r.LiveHeapAfter))
	fmt.Fprintf(&b, "- connections at the peak: %.0f (and %.0f to http backends); every connection closed %v after the attack: %v\n",
		r.Peak.Active, r.Peak.HTTPBackend, r.DrainTime, r.Drained)
	fmt.Fprintf(&b, "- outcomes: %s\n- panics: %.0f; portmux died: %v; legitimate answers with wrong bytes: %d\n",
		statuses(r.Outcomes), r.Peak.Panics, r.Died, r.LegitBytesLost)
	return b.String()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sortedKeys[V, W any](a map[string]V, b map[string]W) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func statuses[N int64 | float64](m map[string]N) string {
	var parts []string
	for _, k := range sortedKeys(m, map[string]N(nil)) {
		parts = append(parts, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
