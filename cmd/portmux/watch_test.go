package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReloadsKeepOnlyTheNewestRequest(t *testing.T) {
	r := newReloads()
	if _, ok := r.take(); ok {
		t.Fatal("a request was pending before any was put")
	}
	r.put(reloadRequest{why: "file changed", files: []fileData{{path: "a", data: []byte("old")}}})
	r.put(reloadRequest{why: "SIGHUP"})
	select {
	case <-r.ready:
	default:
		t.Fatal("no token after put")
	}
	req, ok := r.take()
	if !ok || req.why != "SIGHUP" || req.files != nil {
		t.Fatalf("take = %+v, %v; want the newer SIGHUP request", req, ok)
	}
	if _, ok := r.take(); ok {
		t.Fatal("a request was taken twice")
	}
}

func TestSameStates(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pm.yaml")
	write := func(content string, mtime time.Time) []fileState {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return readStates([]string{file})
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := write("spec: a\n", t0)
	for _, tc := range []struct {
		name string
		next []fileState
		want bool
	}{
		{"unchanged", write("spec: a\n", t0), true},
		{"same size and time, other content", write("spec: b\n", t0), false},
		{"same content, touched", write("spec: a\n", t0.Add(time.Second)), false},
		{"grown", write("spec: a\nmore: 1\n", t0), false},
		{"deleted", func() []fileState { _ = os.Remove(file); return readStates([]string{file}) }(), false},
	} {
		if got := sameStates(base, tc.next); got != tc.want {
			t.Errorf("%s: sameStates = %v, want %v", tc.name, got, tc.want)
		}
	}
	gone := readStates([]string{filepath.Join(dir, "gone.yaml")})
	if !sameStates(gone, readStates([]string{filepath.Join(dir, "gone.yaml")})) {
		t.Error("a file missing twice in a row is not the same state: a deleted file would never settle")
	}
	if req := settledRequest(gone); req.err == nil || req.files != nil {
		t.Errorf("settledRequest of a missing file = %+v; want its error and no contents", req)
	}
}
