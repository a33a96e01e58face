package h2_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// connection's reader, writer and handlers must end with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
