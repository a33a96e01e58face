package main

import (
	"os"
	"runtime/debug"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/budget"
)

// applyBudget sizes the process to what the kernel grants it: it sets the
// Go runtime's soft memory limit below the container's memory limit
// (unless GOMEMLIMIT is set) and returns the cap on connections across
// listeners: max when positive, otherwise what the memory and open-file
// limits allow (0 when neither bounds them).
func applyBudget(log logr.Logger, max int) int {
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
	if max <= 0 {
		max = p.MaxConnections
	}
	log.Info("memory budget", "memoryLimit", mem, "goMemLimit", debug.SetMemoryLimit(-1),
		"openFileLimit", fds, "maxConnections", max)
	return max
}
