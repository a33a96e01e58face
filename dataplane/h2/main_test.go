package h2_test

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

// onLoops serves the tests' connections on relay loops, as h2.Conns
// (serveOnLoops), instead of ServeConn.
var onLoops = flag.Bool("relay-loops", false, "serve the tests' connections as h2.Conns on relay loops")

// TestMain fails the package if a test leaves a goroutine behind: every
// connection's reader, writer and handlers must end with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
