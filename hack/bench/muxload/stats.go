package main

import (
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank percentile p (0 < p <= 100) of sorted
// samples: the smallest sample that at least p % of them do not exceed.
// Nearest rank never invents a value between two samples, so a p99 is a
// latency some connection really had. Zero for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

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
		P50: ms(percentile(samples, 50)),
		P90: ms(percentile(samples, 90)),
		P99: ms(percentile(samples, 99)),
		Max: ms(percentile(samples, 100)),
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
