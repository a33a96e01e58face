package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {99.9, 100 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(s[:3], 50); got != 2*time.Millisecond {
		t.Errorf("p50 of 3 = %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
}

func TestSummarizeSorts(t *testing.T) {
	l := summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 40 * time.Millisecond})
	if l.P50 != 2 || l.P90 != 40 || l.Max != 40 {
		t.Fatalf("summary = %+v", l)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("odd: %v", m)
	}
	xs := []float64{4, 1, 3, 2}
	if m := median(xs); m != 2.5 {
		t.Errorf("even: %v", m)
	}
	if xs[0] != 4 {
		t.Error("median sorted its argument")
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of none is a number")
	}
}
