//go:build linux

package main

import (
	"testing"
	"time"
)

func TestCgroup2Mount(t *testing.T) {
	hybrid := `25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu
`
	if got := cgroup2Mount([]byte(hybrid)); got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %q", got)
	}
	if got := cgroup2Mount([]byte("27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")); got != "" {
		t.Errorf("v1 only: %q", got)
	}
}

func TestOwnCgroup2Path(t *testing.T) {
	if got := ownCgroup2Path([]byte("4:memory:/x\n0::/user.slice/a.scope\n")); got != "/user.slice/a.scope" {
		t.Errorf("got %q", got)
	}
	if got := ownCgroup2Path([]byte("4:memory:/x\n")); got != "/" {
		t.Errorf("no v2 line: %q", got)
	}
}

func TestParseCPUStat(t *testing.T) {
	d, err := parseCPUStat([]byte("usage_usec 312371\nuser_usec 308350\nsystem_usec 4021\n"))
	if err != nil || d != 312371*time.Microsecond {
		t.Fatalf("got %v, %v", d, err)
	}
	if _, err := parseCPUStat([]byte("user_usec 1\n")); err == nil {
		t.Fatal("no usage_usec accepted")
	}
}
