//go:build linux

package main

import (
	"math"
	"testing"
	"time"
)

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
