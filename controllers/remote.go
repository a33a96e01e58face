package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"

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

	mu      sync.Mutex // guards what follows; never held while waiting for the dataplane
	wire    []byte     // the current snapshot's encoding; nil before the first Apply
	version string     // control.Version(wire)
	bound   []string   // the current snapshot's listeners that bind a port
	state   control.State
	err     error  // why the last request got no answer; nil once one does
	refused string // a version the dataplane refused; Run does not send it again to the same process
	// inflight is set while a PUT is under way: a dataplane serving the
	// previous snapshot stays ready meanwhile.
	inflight bool

	resynced chan struct{}
	// encoder reuses the encoding of listeners that did not change.
	encoder snapshot.Encoder
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
		return forEach(boundListeners(snap), fmt.Errorf("cannot encode the snapshot: %w", err))
	}
	r.sending.Lock()
	defer r.sending.Unlock()
	r.mu.Lock()
	r.wire, r.version, r.bound = wire, control.Version(wire), boundListeners(snap)
	r.mu.Unlock()
	return r.send(context.Background())
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
	case r.wire == nil:
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
	case r.wire == nil || st.Version == r.version:
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
	wire, version, bound := r.wire, r.version, r.bound
	r.inflight = true
	r.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, r.opt.ApplyTimeout)
	defer cancel()
	started := time.Now()
	st, err := r.client.Apply(actx, wire)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight = false
	var se *control.StatusError
	switch {
	case errors.As(err, &se):
		r.err, r.refused = nil, version
		r.log.Error(err, "the dataplane refused the snapshot; it keeps serving the previous one", "version", version)
		return forEach(bound, &dataplaneError{reason: compile.ReasonDataplaneRefused, err: err})
	case err != nil:
		r.lostLocked(err)
		return forEach(bound, &dataplaneError{reason: compile.ReasonDataplaneUnreachable, err: err})
	}
	r.err, r.state, r.refused = nil, st, ""
	r.log.V(1).Info("snapshot sent", "version", version, "bytes", len(wire), "took", time.Since(started), "bindErrors", len(st.BindErrors))
	errs := make(map[string]error, len(st.BindErrors))
	for name, msg := range st.BindErrors {
		errs[name] = errors.New(msg)
	}
	return errs
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

func boundListeners(snap *snapshot.Snapshot) []string {
	var names []string
	for i := range snap.Listeners {
		if !snap.Listeners[i].Internal() {
			names = append(names, snap.Listeners[i].Name)
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
