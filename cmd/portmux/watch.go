package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// defaultSettle is how long the files must stay unchanged after the last
// change to one of them before serve applies them.
const defaultSettle = time.Second

// reloadRequest asks the serve loop to reload.
type reloadRequest struct {
	// why is logged with the outcome: "SIGHUP" or "file changed".
	why string
	// files are the contents the watcher saw settle, applied as they are;
	// nil: read the files now.
	files []fileData
	// err says why the settled files could not be read.
	err error
}

// reloads holds the one pending reload request. A newer request replaces
// one the serve loop has not taken yet, so the loop always applies the
// newest contents, and senders never block.
type reloads struct {
	mu      sync.Mutex
	pending *reloadRequest
	// ready holds a token while a request is pending.
	ready chan struct{}
}

func newReloads() *reloads { return &reloads{ready: make(chan struct{}, 1)} }

// put makes req the pending request.
func (r *reloads) put(req reloadRequest) {
	r.mu.Lock()
	r.pending = &req
	r.mu.Unlock()
	select {
	case r.ready <- struct{}{}:
	default: // a token is there already
	}
}

// take returns the pending request, if any, and clears it.
func (r *reloads) take() (reloadRequest, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		return reloadRequest{}, false
	}
	req := *r.pending
	r.pending = nil
	return req, true
}

// fileState is what tells that a file stopped changing: its size,
// modification time and content as read at one moment, or why it could not
// be read.
type fileState struct {
	path  string
	size  int64
	mtime time.Time
	sum   [sha256.Size]byte
	data  []byte
	err   string
}

// readStates reads every file's state.
func readStates(paths []string) []fileState {
	out := make([]fileState, len(paths))
	for i, p := range paths {
		out[i] = readState(p)
	}
	return out
}

func readState(path string) fileState {
	st := fileState{path: path}
	info, err := os.Stat(path)
	if err != nil {
		st.err = err.Error()
		return st
	}
	data, err := os.ReadFile(path)
	if err != nil {
		st.err = err.Error()
		return st
	}
	st.size, st.mtime, st.sum, st.data = info.Size(), info.ModTime(), sha256.Sum256(data), data
	return st
}

// sameStates reports whether two readings of the same files agree on
// everything: size, modification time, content and error.
func sameStates(a, b []fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.path != y.path || x.size != y.size || !x.mtime.Equal(y.mtime) || x.sum != y.sum || x.err != y.err {
			return false
		}
	}
	return true
}

// settledRequest is the reload request for files that settled in states.
func settledRequest(states []fileState) reloadRequest {
	req := reloadRequest{why: "file changed"}
	for _, st := range states {
		if st.err != "" {
			req.err = fmt.Errorf("%s", st.err)
			return req
		}
		req.files = append(req.files, fileData{path: st.path, data: st.data})
	}
	return req
}

// fileWatcher asks for a reload when the files have changed and then
// stayed the same for the settle period. An editor or a script writing a
// file in place writes it in pieces, and each piece is an event; a
// file is applied only once two readings half a settle period apart, with
// no event in between, agree, and then as read: a piece on its own is
// never applied (short of a writer that pauses longer than the settle
// period: renaming a complete file into place is what is safe).
type fileWatcher struct {
	log    logr.Logger
	paths  []string
	want   map[string]bool // absolute paths of the files
	settle time.Duration
	out    *reloads
	w      *fsnotify.Watcher
}

// watchFiles starts a fileWatcher on the files. It watches their
// directories, since editors and ConfigMap mounts replace files rather than
// write them in place. stop ends it and waits until it has.
func watchFiles(log logr.Logger, paths []string, settle time.Duration, out *reloads) (stop func(), err error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("file watch: %w", err)
	}
	fw := &fileWatcher{log: log, paths: paths, want: map[string]bool{}, settle: settle, out: out, w: w}
	dirs := map[string]bool{}
	for _, f := range paths {
		abs, err := filepath.Abs(f)
		if err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("file watch: %w", err)
		}
		fw.want[abs] = true
		dirs[filepath.Dir(abs)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("file watch %s: %w", d, err)
		}
	}
	done := make(chan struct{})
	go fw.run(done)
	return func() { _ = w.Close(); <-done }, nil
}

// run reads the files half a settle period after the last event, and again
// every half period, until two readings in a row agree; it then hands the
// contents read to the serve loop.
func (fw *fileWatcher) run(done chan<- struct{}) {
	defer close(done)
	check := time.NewTimer(time.Hour)
	check.Stop()
	defer check.Stop()
	var prev []fileState // the last reading since the last event
	for {
		select {
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if fw.want[ev.Name] && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
				prev = nil
				check.Reset(fw.settle / 2)
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			fw.log.Error(err, "file watch")
		case <-check.C:
			cur := readStates(fw.paths)
			if prev == nil || !sameStates(prev, cur) {
				prev = cur
				check.Reset(fw.settle / 2)
				continue
			}
			prev = nil
			fw.out.put(settledRequest(cur))
		}
	}
}
