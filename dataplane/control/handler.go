package control

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// Dataplane is what the handler programs: a *dataplane.Server, or one that
// first adjusts the snapshot to the process's own settings.
type Dataplane interface {
	// Apply serves snap and returns bind errors by listener name.
	Apply(snap *snapshot.Snapshot) map[string]error
}

// Handler serves the control protocol for one dataplane process.
type Handler struct {
	mux      *http.ServeMux
	dp       Dataplane
	log      logr.Logger
	stopping atomic.Bool

	mu    sync.Mutex // one apply at a time; guards state and snap
	state State
	// snap is the snapshot applied last, which PUT /delta changes.
	snap *snapshot.Snapshot
}

// NewHandler serves dp, and metrics from g, under a new boot id.
func NewHandler(dp Dataplane, g prometheus.Gatherer, log logr.Logger) *Handler {
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	h := &Handler{mux: http.NewServeMux(), dp: dp, log: log, state: State{BootID: hex.EncodeToString(id[:])}}
	h.mux.HandleFunc("PUT "+PathSnapshot, h.putSnapshot)
	h.mux.HandleFunc("PUT "+PathDelta, h.putDelta)
	h.mux.HandleFunc("GET "+PathState, h.getState)
	h.mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errorLog{log}}))
	h.mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	h.mux.HandleFunc("GET "+PathReadyz, h.getReadyz)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Stopping makes /readyz fail and PUT /snapshot refuse from now on: the
// process is draining.
func (h *Handler) Stopping() { h.stopping.Store(true) }

// State returns what GET /state answers.
func (h *Handler) State() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

func (h *Handler) putSnapshot(w http.ResponseWriter, r *http.Request) {
	body, ok := h.readBody(w, r, "snapshot")
	if !ok {
		return
	}
	snap, err := snapshot.Decode(body)
	if err != nil {
		h.refuse(w, err, "snapshot")
		return
	}
	version := Version(body)
	h.mu.Lock()
	st := h.applyLocked(snap, version)
	h.mu.Unlock()
	h.log.Info("snapshot applied", "version", version, "listeners", len(snap.Listeners), "bindErrors", len(st.BindErrors))
	writeJSON(w, st)
}

// putDelta applies a change of the snapshot applied last, when it is the
// one the change was made for.
func (h *Handler) putDelta(w http.ResponseWriter, r *http.Request) {
	body, ok := h.readBody(w, r, "delta")
	if !ok {
		return
	}
	d, err := snapshot.DecodeDelta(body)
	if err != nil {
		h.refuse(w, err, "delta")
		return
	}
	base := r.Header.Get(BaseVersionHeader)
	version := DeltaVersion(base, body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.snap == nil || h.state.Version != base {
		// Lost, late or for another process: the controller sends the
		// whole snapshot.
		h.log.V(1).Info("delta for another snapshot; asking for the whole one", "base", base, "version", h.state.Version)
		http.Error(w, "this dataplane serves version "+h.state.Version+", not "+base, http.StatusConflict)
		return
	}
	next, err := h.snap.PatchValid(d)
	if err != nil {
		h.refuse(w, fmt.Errorf("decode delta: %w", err), "delta")
		return
	}
	st := h.applyLocked(next, version)
	h.log.V(1).Info("delta applied", "version", version, "set", len(d.Set), "removed", len(d.Remove), "bindErrors", len(st.BindErrors))
	writeJSON(w, st)
}

// refuse answers 400 to a snapshot or delta that cannot be served.
func (h *Handler) refuse(w http.ResponseWriter, err error, what string) {
	h.log.Error(err, "refused a "+what+"; still serving the previous snapshot")
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// readBody reads a PUT's body within MaxSnapshotBytes, or answers the
// error.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, what string) ([]byte, bool) {
	if h.stopping.Load() {
		http.Error(w, "draining: no "+what+" applies any more", http.StatusServiceUnavailable)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSnapshotBytes))
	if err != nil {
		code := http.StatusBadRequest
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "reading the "+what+": "+err.Error(), code)
		return nil, false
	}
	return body, true
}

// applyLocked serves snap as version and returns the new state. The
// caller holds mu.
func (h *Handler) applyLocked(snap *snapshot.Snapshot, version string) State {
	errs := h.dp.Apply(snap)
	h.snap = snap
	h.state.Applied, h.state.Version, h.state.BindErrors = true, version, nil
	for name, err := range errs {
		if h.state.BindErrors == nil {
			h.state.BindErrors = make(map[string]string, len(errs))
		}
		h.state.BindErrors[name] = err.Error()
	}
	return h.state
}

func (h *Handler) getState(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.State()) }

func (h *Handler) getReadyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case h.stopping.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case !h.State().Applied:
		http.Error(w, "no snapshot applied yet", http.StatusServiceUnavailable)
	default:
		_, _ = io.WriteString(w, "ok\n")
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// errorLog sends promhttp's errors to the log.
type errorLog struct{ log logr.Logger }

func (e errorLog) Println(v ...any) { e.log.Error(nil, "serving metrics", "error", v) }
