// Package panics turns a panic on one connection's goroutine into an error
// of that connection.
//
// The dataplane serves every tenant from one process, and every byte it
// parses comes from the network. A bug that one client's bytes reach (in a
// sniffer, a forwarder, a tunnel relay, a library they call) must end that
// client's connection, logged and counted, not the process and with it
// everyone else's connections. Each goroutine that serves a connection
// defers Capture and hands the error on to whoever reports the
// connection, which counts it as a panic (see Is).
package panics

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// Error is a panic recovered on a connection's goroutine.
type Error struct {
	// Value is what was passed to panic.
	Value any
	// Stack is the panicking goroutine's stack, for the log.
	Stack []byte
}

func (e *Error) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Capture recovers a panic of its goroutine, when deferred, and stores it
// in *err as an *Error, replacing what was there. It must be deferred
// directly (defer panics.Capture(&err)): recover only works in the
// deferred call itself.
func Capture(err *error) {
	if v := recover(); v != nil {
		*err = &Error{Value: v, Stack: debug.Stack()}
	}
}

// Run calls f and returns its error, or the panic it raised as an *Error.
func Run(f func() error) (err error) {
	defer Capture(&err)
	return f()
}

// Is returns the recovered panic in err's chain, or nil.
func Is(err error) *Error {
	if err == nil {
		return nil // no allocation for the common case: every connection's end asks
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
