//go:build !linux

package h2_test

import (
	"testing"

	"github.com/portmux/portmux/dataplane/h2"
)

func serveOnLoops(t *testing.T, _ *h2.Server) *served {
	t.Skip("relay loops need Linux")
	return nil
}
