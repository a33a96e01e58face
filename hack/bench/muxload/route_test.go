//go:build linux

package main

import (
	"strings"
	"testing"
)

func TestCheckRoutes(t *testing.T) {
	for _, c := range []struct {
		name     string
		delta    map[string]int64
		min, max int64
		wantErr  string
	}{
		{"all where they belong", map[string]int64{"ssh": 10, "tls-a": 0, "plain": 0}, 10, 10, ""},
		{"some failed before reaching a backend", map[string]int64{"ssh": 8}, 7, 10, ""},
		{"one misrouted", map[string]int64{"ssh": 9, "plain": 1}, 9, 10, "1 to plain"},
		{"fewer than the client completed", map[string]int64{"ssh": 6}, 7, 10, "received 6"},
		{"more than the client opened", map[string]int64{"ssh": 11}, 10, 10, "received 11"},
	} {
		err := checkRoutes(c.delta, "ssh", c.min, c.max)
		if c.wantErr == "" && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.wantErr)
		}
	}
}

func TestRouteDelta(t *testing.T) {
	d := routeDelta(map[string]int64{"ssh": 5, "tls-a": 2}, map[string]int64{"ssh": 9, "tls-a": 2, "tls-b": 1})
	if d["ssh"] != 4 || d["tls-a"] != 0 || d["tls-b"] != 1 {
		t.Fatalf("delta = %v", d)
	}
}
