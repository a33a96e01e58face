package budget

import (
	"math"
	"testing"
	"testing/fstest"
)

func TestDecide(t *testing.T) {
	const mi = 1 << 20
	tests := []struct {
		name      string
		mem       int64
		fds       uint64
		wantMem   int64
		wantConns int
	}{
		{"the chart's 512Mi and a container's file limit", 512 * mi, 1 << 20, 456340275, (456340275 - Reserve) / PerConnection},
		{"memory bounds, files do not", 256 * mi, 0, 228170137, (228170137 - Reserve) / PerConnection},
		{"files bound tighter than memory", 4096 * mi, 1024, 3650722201, (1024 - 128) / 2},
		{"no limit at all", 0, 0, 0, 0},
		{"files only (a host)", 0, 20000, 0, (20000 - 128) / 2},
		{"a tiny container still serves some", 32 * mi, 0, 28521267, 64},
		{"a tiny file limit still serves one", 0, 100, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Decide(tt.mem, tt.fds)
			if p.MemoryLimit != tt.wantMem || p.MaxConnections != tt.wantConns {
				t.Errorf("Decide(%d, %d) = %+v, want memory %d, connections %d", tt.mem, tt.fds, p, tt.wantMem, tt.wantConns)
			}
			if p.MemoryLimit > 0 && p.MemoryLimit >= tt.mem {
				t.Errorf("GOMEMLIMIT %d is not below the hard limit %d", p.MemoryLimit, tt.mem)
			}
		})
	}
}

func TestGCPercent(t *testing.T) {
	for _, tt := range []struct {
		name  string
		limit int64
		want  int
	}{
		{"the chart's 512Mi", 456340275, gcPercentUnderLimit},
		{"no limit (the runtime's default)", math.MaxInt64, 0},
		{"no limit (unset)", 0, 0},
	} {
		if got := GCPercent(tt.limit); got != tt.want {
			t.Errorf("%s: GCPercent(%d) = %d, want %d", tt.name, tt.limit, got, tt.want)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name string
		fs   fstest.MapFS
		want int64
	}{
		{"cgroup v2 in a container's namespace", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("536870912\n"),
		}, 512 << 20},
		{"cgroup v2 unlimited", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0},
		{"cgroup v2 on a host: the smallest along the path", fstest.MapFS{
			"proc/self/cgroup":                                 file("0::/kubepods.slice/pod1/ctr\n"),
			"sys/fs/cgroup/kubepods.slice/memory.max":          file("8589934592\n"),
			"sys/fs/cgroup/kubepods.slice/pod1/memory.max":     file("1073741824\n"),
			"sys/fs/cgroup/kubepods.slice/pod1/ctr/memory.max": file("max\n"),
		}, 1 << 30},
		{"cgroup v1 with the path visible", fstest.MapFS{
			"proc/self/cgroup":                                           file("9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes":                 file("9223372036854771712\n"),
			"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": file("268435456\n"),
		}, 256 << 20},
		{"cgroup v1 unlimited (this build machine)", fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/process_api/abc\n0::/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, 0},
		{"cgroup v1 with the memory controller listed with others", fstest.MapFS{
			"proc/self/cgroup":                           file("3:cpu,memory:/docker/x\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("104857600\n"),
		}, 100 << 20},
		{"no cgroup files at all", fstest.MapFS{
			"proc/self/cgroup": file("0::/\n"),
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MemoryLimit(tt.fs)
			if err != nil || got != tt.want {
				t.Errorf("MemoryLimit = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	if _, err := MemoryLimit(fstest.MapFS{}); err == nil {
		t.Error("MemoryLimit without /proc/self/cgroup: no error")
	}
	if _, err := MemoryLimit(fstest.MapFS{
		"proc/self/cgroup":         file("0::/\n"),
		"sys/fs/cgroup/memory.max": file("lots\n"),
	}); err == nil {
		t.Error("MemoryLimit of a garbled memory.max: no error")
	}
}

// TestThisMachine reads the real limits, as the commands do at start.
func TestThisMachine(t *testing.T) {
	mem, err := MemoryLimit(Root())
	if err != nil {
		t.Fatalf("MemoryLimit: %v", err)
	}
	fds, err := FileLimit()
	if err != nil {
		t.Fatalf("FileLimit: %v", err)
	}
	t.Logf("memory limit %d, file limit %d: %+v", mem, fds, Decide(mem, fds))
}
