package sniff

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the Go
// ClientHello capture runs a TLS client on a pipe).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
