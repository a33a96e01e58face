//go:build linux

package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// routeDelta is how many connections each backend accepted between two
// counts.
func routeDelta(before, after map[string]int64) map[string]int64 {
	d := make(map[string]int64, len(after))
	for r, n := range after {
		d[r] = n - before[r]
	}
	return d
}

// checkRoutes says whether the connections of a run went where they
// should: none to any backend but want, and want received at least every
// connection that got its echo (minimum) and at most every one tried
// (maximum): a failed connection may or may not have reached a backend.
func checkRoutes(delta map[string]int64, want string, minimum, maximum int64) error {
	var wrong []string
	for _, r := range slices.Sorted(maps.Keys(delta)) {
		if r != want && delta[r] != 0 {
			wrong = append(wrong, fmt.Sprintf("%d to %s", delta[r], r))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("misrouted: %s; all should reach %s", strings.Join(wrong, ", "), want)
	}
	if got := delta[want]; got < minimum || got > maximum {
		return fmt.Errorf("%s received %d connections; the client completed %d of %d", want, got, minimum, maximum)
	}
	return nil
}

// probeRoutes sends one connection of each route in routes through t,
// one after the other, and checks that exactly that route's backend
// received it. It runs after every measured run, so a mux that starts
// sending tls-b to tls-a (or everything to the SSH backend) under load is
// caught even in a run that only used one route.
func probeRoutes(t target, b *backends, routes []string) error {
	for _, r := range routes {
		before := b.counts()
		if err := t.routeOp(r)(); err != nil {
			return fmt.Errorf("probe %s: %w", r, err)
		}
		if err := checkRoutes(routeDelta(before, b.counts()), r, 1, 1); err != nil {
			return fmt.Errorf("probe %s: %w", r, err)
		}
	}
	return nil
}
