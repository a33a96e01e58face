package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// TestFailureOutcome: whose fault a request's failure was, whatever else
// its error carries. A reset HTTP/2 stream fails both its context and its
// body's read, and the proxy sees either first: both are the client
// leaving (the CI run that counted one as bad_request is why this
// exists).
func TestFailureOutcome(t *testing.T) {
	s := NewServer(Options{Log: logr.Discard()})
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	h := &httpConn{s: s, c: &conn{}}
	rc := &routeConfig{Route: &snapshot.Route{Name: "web", Backend: &snapshot.Backend{Name: "web"}}}
	bodyErr := fmt.Errorf("%w: http2: stream reset", errClientBody)
	for _, tc := range []struct {
		name    string
		err     error
		status  int
		outcome string
	}{
		{"no slot", errNoBackendSlot, http.StatusServiceUnavailable, RequestUnavailable},
		{"malformed body", bodyErr, http.StatusBadRequest, RequestBadRequest},
		{"loops: malformed body", fmt.Errorf("%w: bad chunk", relayloop.ErrRequestBody), http.StatusBadRequest, RequestBadRequest},
		{"stream reset, seen as its context", context.Canceled, statusClientClosedRequest, RequestClientGone},
		{"stream reset, seen as its body", fmt.Errorf("%w: %w", context.Canceled, bodyErr), statusClientClosedRequest, RequestClientGone},
		{"hung up", errClientGone, statusClientClosedRequest, RequestClientGone},
		{"loops: client left", relayloop.ErrClientLeft, statusClientClosedRequest, RequestClientGone},
		{"backend", errors.New("connection refused"), http.StatusBadGateway, RequestBadGateway},
	} {
		status, outcome := h.failure(rc, tc.err)
		if status != tc.status || outcome != tc.outcome {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, outcome, tc.status, tc.outcome)
		}
	}
}
