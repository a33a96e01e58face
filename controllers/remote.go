package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Resyncer is a Dataplane whose state can change without an Apply: one in
// another process restarts, stops answering or answers again. After each
// receive from Resynced the programmer applies the current snapshot again,
// so that status tells what the dataplane serves now.
type Resyncer interface {
	Resynced() <-chan struct{}
}

// RemoteDataplane programs a dataplane in another process (`portmux
// dataplane`, in a container without Kubernetes credentials) over its
// control socket.
//
// It keeps the dataplane on the last snapshot it was given: Run asks the
// dataplane's state every Interval (every Retry while it does not answer)
// and sends the snapshot again at once to one that restarted or holds
// another. While the dataplane does not answer, Apply returns an
// unreachable error for every listener that binds, so that status says
// so, and Ready fails until the dataplane serves the current snapshot.
type RemoteDataplane struct {
	client *control.Client
	log    logr.Logger
	opt    RemoteOptions

	// sending is held for each exchange that may change the dataplane (a
	// check and what it sends, an Apply), so that they do not interleave.
	sending sync.Mutex

	mu sync.Mutex // guards what follows; never held while waiting for the dataplane
	// programmed is set by the first Apply: there is a snapshot to serve.
	programmed bool
	// current is the snapshot the dataplane must serve, as listeners by
	// name: ApplyDelta changes it without building the whole snapshot.
	current        map[string]snapshot.Listener
	maxConnections int
	// wire is current's encoding, nil when a delta changed current since:
	// it is built again only when the whole snapshot must be sent.
	wire []byte
	// version names current: control.Version(wire) after an Apply or a
	// whole send, control.DeltaVersion after a delta.
	version string
	state   control.State
	err     error  // why the last request got no answer; nil once one does
	refused string // a version the dataplane refused; Run does not send it again to the same process
	// inflight is set while a PUT is under way: a dataplane serving the
	// previous snapshot stays ready meanwhile.
	inflight bool

	resynced chan struct{}
	// encoder reuses the encoding of listeners that did not change.
	encoder snapshot.Encoder
	counts  sendCounts
}

// sendCounts are what a RemoteDataplane sent: deltas, whole snapshots,
// and the bytes of both; tests read them to tell a delta from a resync.
type sendCounts struct {
	deltas, wholes, deltaBytes, wholeBytes int64
}

// RemoteOptions bound a RemoteDataplane's waits; zero fields take the
// defaults.
type RemoteOptions struct {
	// Interval between state checks. Default 1s.
	Interval time.Duration
	// Retry is the interval while the dataplane does not answer, so that
	// it gets its snapshot as soon as it is back. Default 100ms.
	Retry time.Duration
	// ApplyTimeout bounds one PUT of a snapshot. Default 30s.
	ApplyTimeout time.Duration
	// StateTimeout bounds one state check. Default 2s.
	StateTimeout time.Duration
}

// NewRemoteDataplane programs the dataplane that client reaches. Run must
// run for it to follow the dataplane's restarts.
func NewRemoteDataplane(client *control.Client, log logr.Logger, opt RemoteOptions) *RemoteDataplane {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opt.Interval, time.Second)
	def(&opt.Retry, 100*time.Millisecond)
	def(&opt.ApplyTimeout, 30*time.Second)
	def(&opt.StateTimeout, 2*time.Second)
	return &RemoteDataplane{client: client, log: log, opt: opt, resynced: make(chan struct{}, 1)}
}

// Apply sends snap to the dataplane and returns its bind errors, or, when
// the dataplane does not answer or refuses the snapshot, that error for
// every listener that binds.
func (r *RemoteDataplane) Apply(snap *snapshot.Snapshot) map[string]error {
	wire, err := r.encoder.Encode(snap)
	if err != nil {
		// A bug, not the dataplane's doing: it keeps what it has.
		return forEach(boundListeners(snap.Listeners), fmt.Errorf("cannot encode the snapshot: %w", err))
	}
	r.sending.Lock()
	defer r.sending.Unlock()
	r.mu.Lock()
	r.programmed = true
	r.current = make(map[string]snapshot.Listener, len(snap.Listeners))
	for i := range snap.Listeners {
		r.current[snap.Listeners[i].Name] = snap.Listeners[i]
	}
	r.maxConnections = snap.MaxConnections
	r.wire, r.version = wire, control.Version(wire)
	r.mu.Unlock()
	return r.send(context.Background())
}

// ApplyDelta changes the current snapshot by d and sends the dataplane
// only d when it serves the snapshot d changes; the whole snapshot when
// it does not (it restarted, missed a change or refused one), or answers
// that it does not (409). It returns what Apply returns.
func (r *RemoteDataplane) ApplyDelta(d *snapshot.Delta) map[string]error {
	enc, err := snapshot.EncodeDelta(d)
	if err != nil {
		return forEach(boundListeners(d.Set), fmt.Errorf("cannot encode the snapshot: %w", err))
	}
	r.sending.Lock()
	defer r.sending.Unlock()
	r.mu.Lock()
	if r.current == nil {
		r.current = map[string]snapshot.Listener{}
	}
	r.programmed = true
	base := r.version
	for _, n := range d.Remove {
		delete(r.current, n)
	}
	for i := range d.Set {
		r.current[d.Set[i].Name] = d.Set[i]
	}
	r.maxConnections = d.MaxConnections
	r.wire, r.version = nil, control.DeltaVersion(base, enc)
	version := r.version
	delta := r.err == nil && r.state.Applied && r.state.Version == base
	if delta {
		r.inflight = true
	}
	r.mu.Unlock()
	if !delta {
		return r.send(context.Background())
	}
	actx, cancel := context.WithTimeout(context.Background(), r.opt.ApplyTimeout)
	defer cancel()
	st, err := r.client.ApplyDelta(actx, base, enc)
	if control.IsBaseMismatch(err) {
		r.log.V(1).Info("the dataplane serves another snapshot than the delta's; sending the whole one", "base", base)
		return r.send(context.Background())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.deltas++
	r.counts.deltaBytes += int64(len(enc))
	return r.answeredLocked(st, err, version, len(enc))
}

// updateDescs describe what the manager sent its dataplane, by kind:
// "delta", or "snapshot" (the first, and each resync after a restart, a
// lost delta or a change the incremental path cannot make). Many
// snapshots against deltas is a dataplane that keeps restarting or a
// cluster whose changes keep moving ports.
var (
	updatesDesc = prometheus.NewDesc("portmux_manager_dataplane_updates_total",
		"Updates the manager sent the dataplane process, by kind: delta, or the whole snapshot.", []string{"kind"}, nil)
	updateBytesDesc = prometheus.NewDesc("portmux_manager_dataplane_update_bytes_total",
		"Bytes of the updates the manager sent the dataplane process, by kind.", []string{"kind"}, nil)
)

// Describe implements prometheus.Collector.
func (r *RemoteDataplane) Describe(ch chan<- *prometheus.Desc) {
	ch <- updatesDesc
	ch <- updateBytesDesc
}

// Collect implements prometheus.Collector.
func (r *RemoteDataplane) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	c := r.counts
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(updatesDesc, prometheus.CounterValue, float64(c.deltas), "delta")
	ch <- prometheus.MustNewConstMetric(updatesDesc, prometheus.CounterValue, float64(c.wholes), "snapshot")
	ch <- prometheus.MustNewConstMetric(updateBytesDesc, prometheus.CounterValue, float64(c.deltaBytes), "delta")
	ch <- prometheus.MustNewConstMetric(updateBytesDesc, prometheus.CounterValue, float64(c.wholeBytes), "snapshot")
}

// SendCounts returns how many deltas and whole snapshots were sent, and
// their bytes.
func (r *RemoteDataplane) SendCounts() (deltas, wholes, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts.deltas, r.counts.wholes, r.counts.deltaBytes + r.counts.wholeBytes
}

// Resynced implements Resyncer.
func (r *RemoteDataplane) Resynced() <-chan struct{} { return r.resynced }

// Ready returns nil when the dataplane serves the current snapshot, or
// serves one and is being sent the current one: a readiness probe that
// runs while an update is under way must not take the pod out of its
// Services.
func (r *RemoteDataplane) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.programmed:
		return errors.New("no snapshot for the dataplane yet")
	case r.err != nil:
		return r.err
	case r.state.Version != r.version && (!r.inflight || !r.state.Applied):
		return errors.New("the dataplane does not serve the current snapshot yet")
	}
	return nil
}

// Run checks the dataplane until ctx is done.
func (r *RemoteDataplane) Run(ctx context.Context) {
	for {
		wait := r.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// check asks the dataplane's state and sends it the current snapshot when
// it lacks it. It returns how long to wait before the next check.
func (r *RemoteDataplane) check(ctx context.Context) time.Duration {
	r.sending.Lock()
	defer r.sending.Unlock()
	sctx, cancel := context.WithTimeout(ctx, r.opt.StateTimeout)
	st, err := r.client.State(sctx)
	cancel()
	if err != nil {
		r.mu.Lock()
		r.lostLocked(err)
		r.mu.Unlock()
		return r.opt.Retry
	}
	if r.observe(st) {
		r.send(ctx)
		r.notify()
	}
	return r.opt.Interval
}

// observe records a state the dataplane reported and says whether it
// must be sent the current snapshot.
func (r *RemoteDataplane) observe(st control.State) (resend bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	back := r.err != nil
	if back {
		r.log.Info("the dataplane answers again", "socket", r.client.Socket(), "bootID", st.BootID)
	}
	if r.state.BootID != "" && st.BootID != r.state.BootID {
		r.log.Info("the dataplane restarted", "bootID", st.BootID, "applied", st.Applied)
		r.refused = ""
	}
	r.err, r.state = nil, st
	switch {
	case !r.programmed || st.Version == r.version:
		if back {
			r.notify() // status may still say unreachable
		}
		return false
	case r.version == r.refused:
		// This process refused it already: Apply tries again with the
		// next snapshot.
		return false
	}
	r.log.Info("sending the current snapshot again", "dataplaneVersion", st.Version, "version", r.version)
	return true
}

// send PUTs the current snapshot and returns the errors for status. The
// caller holds sending.
func (r *RemoteDataplane) send(ctx context.Context) map[string]error {
	r.mu.Lock()
	if r.wire == nil {
		// Deltas changed it since it was encoded last.
		snap := r.snapshotLocked()
		wire, err := r.encoder.Encode(snap)
		if err != nil {
			r.mu.Unlock()
			return forEach(boundListeners(snap.Listeners), fmt.Errorf("cannot encode the snapshot: %w", err))
		}
		r.wire, r.version = wire, control.Version(wire)
	}
	wire, version := r.wire, r.version
	r.inflight = true
	r.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, r.opt.ApplyTimeout)
	defer cancel()
	st, err := r.client.Apply(actx, wire)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.wholes++
	r.counts.wholeBytes += int64(len(wire))
	return r.answeredLocked(st, err, version, len(wire))
}

// answeredLocked records the dataplane's answer to a PUT of version and
// returns the errors for status. The caller holds mu.
func (r *RemoteDataplane) answeredLocked(st control.State, err error, version string, size int) map[string]error {
	r.inflight = false
	var se *control.StatusError
	switch {
	case errors.As(err, &se):
		r.err, r.refused = nil, version
		r.log.Error(err, "the dataplane refused the snapshot; it keeps serving the previous one", "version", version)
		return forEach(r.boundLocked(), &dataplaneError{reason: compile.ReasonDataplaneRefused, err: err})
	case err != nil:
		r.lostLocked(err)
		return forEach(r.boundLocked(), &dataplaneError{reason: compile.ReasonDataplaneUnreachable, err: err})
	}
	r.err, r.state, r.refused = nil, st, ""
	r.log.V(1).Info("snapshot sent", "version", version, "bytes", size, "bindErrors", len(st.BindErrors))
	errs := make(map[string]error, len(st.BindErrors))
	for name, msg := range st.BindErrors {
		errs[name] = errors.New(msg)
	}
	return errs
}

// snapshotLocked builds the current snapshot, listeners sorted by name.
func (r *RemoteDataplane) snapshotLocked() *snapshot.Snapshot {
	snap := &snapshot.Snapshot{MaxConnections: r.maxConnections, Listeners: make([]snapshot.Listener, 0, len(r.current))}
	for _, l := range r.current {
		snap.Listeners = append(snap.Listeners, l)
	}
	slices.SortFunc(snap.Listeners, func(a, b snapshot.Listener) int { return cmp.Compare(a.Name, b.Name) })
	return snap
}

// boundLocked lists the current snapshot's listeners that bind a port.
func (r *RemoteDataplane) boundLocked() []string {
	var names []string
	for name, l := range r.current {
		if !l.Internal() {
			names = append(names, name)
		}
	}
	return names
}

// lostLocked records that the dataplane did not answer.
func (r *RemoteDataplane) lostLocked(err error) {
	if r.err == nil {
		r.log.Info("the dataplane does not answer; it keeps serving what it has", "socket", r.client.Socket(), "error", err.Error())
		r.notify()
	}
	r.err = err
}

// notify tells the programmer, once however often it is called before the
// programmer looks.
func (r *RemoteDataplane) notify() {
	select {
	case r.resynced <- struct{}{}:
	default:
	}
}

// dataplaneError is what status shows for a listener the dataplane could
// not be told about, with its own condition reason.
type dataplaneError struct {
	reason string
	err    error
}

func (e *dataplaneError) Error() string  { return e.err.Error() }
func (e *dataplaneError) Unwrap() error  { return e.err }
func (e *dataplaneError) Reason() string { return e.reason }

func boundListeners(ls []snapshot.Listener) []string {
	var names []string
	for i := range ls {
		if !ls[i].Internal() {
			names = append(names, ls[i].Name)
		}
	}
	return names
}

func forEach(listeners []string, err error) map[string]error {
	errs := make(map[string]error, len(listeners))
	for _, l := range listeners {
		errs[l] = err
	}
	return errs
}
