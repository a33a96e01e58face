package panics_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/panics"
)

func TestCapture(t *testing.T) {
	tests := []struct {
		name  string
		body  func() error
		panic bool
	}{
		{"no panic keeps the error", func() error { return errors.New("plain") }, false},
		{"no panic, no error", func() error { return nil }, false},
		{"a panic replaces the error", func() error { panic(errors.New("boom")) }, true},
		{"an index out of range", func() error { var s []byte; _ = s[3]; return nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := func() (err error) {
				defer panics.Capture(&err)
				return tt.body()
			}
			err := run()
			p := panics.Is(fmt.Errorf("wrapped: %w", err))
			if (p != nil) != tt.panic {
				t.Fatalf("Is(%v) = %v, want a panic: %v", err, p, tt.panic)
			}
			if p != nil && !strings.Contains(string(p.Stack), "panics_test.go") {
				t.Errorf("stack does not show where it panicked:\n%s", p.Stack)
			}
		})
	}
}
