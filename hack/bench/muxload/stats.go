//go:build linux

package main

import (
	"math"
	"slices"
	"time"

	"github.com/portmux/portmux/hack/internal/harness"
)

// latencies summarises one run's connection latencies, in milliseconds.
type latencies struct {
	P50, P90, P99, Max float64
}

// summarize sorts samples in place and takes the percentiles the results
// report.
func summarize(samples []time.Duration) latencies {
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return latencies{
		P50: ms(harness.Percentile(samples, 50)),
		P90: ms(harness.Percentile(samples, 90)),
		P99: ms(harness.Percentile(samples, 99)),
		Max: ms(harness.Percentile(samples, 100)),
	}
}

// median of xs (the mean of the middle two for an even count); NaN for
// none. It sorts a copy.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
