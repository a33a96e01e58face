//go:build linux

package main

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestOpenBatched: every call's result comes back; the first failure or
// the deadline stops the calls left, and the error says which.
func TestOpenBatched(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name       string
		n, batch   int
		timeout    time.Duration
		failAt     int64         // the call that fails; 0: none
		pause      time.Duration // how long each call takes
		wantOpened func(int) bool
		wantErr    string
	}{
		{"all open", 10, 3, time.Minute, 0, 0, func(n int) bool { return n == 10 }, ""},
		{"batch over n", 2, 8, time.Minute, 0, 0, func(n int) bool { return n == 2 }, ""},
		{"first failure stops", 100, 2, time.Minute, 5, 0, func(n int) bool { return n >= 4 && n < 10 }, "thing "},
		{"deadline stops", 100, 1, 30 * time.Millisecond, 0, 10 * time.Millisecond, func(n int) bool { return n > 0 && n < 100 }, "of 100 things in 30ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			opened, err := openBatched(tc.n, tc.batch, tc.timeout, "thing", func() (int64, error) {
				k := calls.Add(1)
				time.Sleep(tc.pause)
				if k == tc.failAt {
					return 0, boom
				}
				return k, nil
			})
			if !tc.wantOpened(len(opened)) {
				t.Errorf("%d opened in %d calls", len(opened), calls.Load())
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
			if tc.failAt != 0 && !errors.Is(err, boom) {
				t.Errorf("error %v does not wrap the failure", err)
			}
			if int64(len(opened)) > calls.Load() || calls.Load() > int64(tc.n) {
				t.Errorf("%d opened, %d calls for n %d", len(opened), calls.Load(), tc.n)
			}
		})
	}
}
