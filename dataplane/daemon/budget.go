package daemon

import (
	"os"
	"runtime/debug"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/budget"
)

// SetMemoryLimit sizes the process to what the kernel grants it: it sets
// the Go runtime's soft memory limit below the container's memory limit
// (unless GOMEMLIMIT is set). It returns the plan, whose MaxConnections
// only a process that runs a dataplane uses.
func SetMemoryLimit(log logr.Logger) budget.Plan {
	p, kv := plan(log)
	log.Info("memory budget", kv...)
	return p
}

// ApplyBudget is SetMemoryLimit for a process that runs a dataplane: it
// returns the cap on connections across listeners, max when positive,
// otherwise what the memory and open-file limits allow (0 when neither
// bounds them). Under a memory limit it also collects garbage less often
// (budget.GCPercent), unless GOGC is set.
func ApplyBudget(log logr.Logger, max int) int {
	p, kv := plan(log)
	if max <= 0 {
		max = p.MaxConnections
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		if gc := budget.GCPercent(debug.SetMemoryLimit(-1)); gc > 0 {
			debug.SetGCPercent(gc)
			kv = append(kv, "gogc", gc)
		}
	}
	log.Info("memory budget", append(kv, "maxConnections", max)...)
	return max
}

// plan reads the limits, sets GOMEMLIMIT and returns the plan with what
// to log about it.
func plan(log logr.Logger) (budget.Plan, []any) {
	mem, err := budget.MemoryLimit(budget.Root())
	if err != nil {
		log.Info("no memory limit found; connections are capped by the open-file limit only", "reason", err.Error())
	}
	fds, err := budget.FileLimit()
	if err != nil {
		log.Info("no open-file limit found", "reason", err.Error())
	}
	p := budget.Decide(mem, fds)
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && p.MemoryLimit > 0 {
		debug.SetMemoryLimit(p.MemoryLimit)
	}
	return p, []any{"memoryLimit", mem, "goMemLimit", debug.SetMemoryLimit(-1), "openFileLimit", fds}
}
