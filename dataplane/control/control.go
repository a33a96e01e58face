// Package control is the protocol between the controller and a dataplane
// in another process: HTTP on a Unix socket that only the pod's user can
// reach, in a directory both containers mount.
//
// The dataplane serves (Handler):
//
//	PUT /snapshot  an encoded snapshot (snapshot.Encode); applies it and
//	               answers the State, with the listeners that cannot bind
//	PUT /delta     an encoded change (snapshot.EncodeDelta) of the snapshot
//	               whose Version the BaseVersionHeader names; applies the
//	               snapshot it makes and answers as PUT /snapshot does, or
//	               409 Conflict when the dataplane serves another version
//	               (a delta lost, or sent out of order, or a restart): the
//	               controller then sends the whole snapshot
//	GET /state     which dataplane process this is (BootID), whether it
//	               ever applied a snapshot and which (Version)
//	GET /metrics   its Prometheus registry (portmux_*, go_*, process_*)
//	GET /healthz   200 while it serves
//	GET /readyz    200 once a snapshot is applied
//
// The controller calls it (Client), mirrors its metrics into its own
// endpoint (Collector), and sends the snapshot again when a restarted
// dataplane (a new BootID) or one that lacks it (another Version) answers.
// A snapshot's Version is the digest of its encoding, so both sides compute
// it and a manager that restarts recognises the snapshot the dataplane
// kept serving; a delta's is the digest of the version it applies to and
// its encoding (DeltaVersion), so a chain of deltas names the snapshot it
// ends in, and a dataplane that missed one is found out at the next.
//
// Nothing here imports Kubernetes: the dataplane process holds no client
// and no credentials.
package control

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
)

// The paths the dataplane serves.
const (
	PathSnapshot = "/snapshot"
	PathDelta    = "/delta"
	PathState    = "/state"
	PathMetrics  = "/metrics"
	PathHealthz  = "/healthz"
	PathReadyz   = "/readyz"
)

// Bounds on what either side reads from the other. A snapshot of a
// thousand tenants with their certificates encodes to a few MB; the rest
// are far smaller. The bounds keep a confused or compromised peer from
// making the other side read without end.
const (
	MaxSnapshotBytes = 256 << 20
	maxStateBytes    = 16 << 20
	maxMetricsBytes  = 64 << 20
	maxErrorBytes    = 64 << 10
)

// State is what a dataplane process says about itself.
type State struct {
	// BootID is random per process: a new one means the dataplane
	// restarted and serves no snapshot until it is sent one.
	BootID string `json:"bootID"`

	// Applied is true once a snapshot was applied in this process.
	Applied bool `json:"applied"`

	// Version of the snapshot applied last (see Version).
	Version string `json:"version,omitempty"`

	// BindErrors are the listeners of that snapshot that could not bind,
	// by listener name.
	BindErrors map[string]string `json:"bindErrors,omitempty"`
}

// Version names an encoded snapshot by its digest.
func Version(encoded []byte) string {
	sum := sha256.Sum256(encoded)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// BaseVersionHeader carries, on PUT /delta, the Version of the snapshot
// the delta changes.
const BaseVersionHeader = "Portmux-Base-Version"

// DeltaVersion names the snapshot a delta encoded as encoded makes of the
// snapshot of version base.
func DeltaVersion(base string, encoded []byte) string {
	h := sha256.New()
	h.Write([]byte(base))
	h.Write([]byte{0})
	h.Write(encoded)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// IsBaseMismatch reports whether err is a dataplane's answer to a delta
// for a snapshot it does not serve: the whole snapshot must be sent.
func IsBaseMismatch(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusConflict
}

// ErrUnreachable is what every error of a request that did not reach the
// dataplane matches with errors.Is: nothing listens on the socket, the
// dataplane hung up, or it did not answer in time.
var ErrUnreachable = errors.New("dataplane unreachable")

// unreachableError is a request that did not reach the dataplane.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string   { return "dataplane unreachable: " + e.err.Error() }
func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.err} }

// StatusError is a request the dataplane answered with an error, e.g. a
// snapshot it refused to decode.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("dataplane answered %d: %s", e.Code, e.Message)
}
