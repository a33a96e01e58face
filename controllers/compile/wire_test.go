package compile_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/snapshot/snapshottest"
)

// What compile produces crosses the control socket whole: every golden
// case's snapshot (certificates of several key types, regexps, tunnels,
// PROXY trust lists, port conflicts) decodes from its encoding equal to
// itself, and passes the decoder's checks.
func TestGoldenSnapshotsCrossTheWire(t *testing.T) {
	ins, err := filepath.Glob(filepath.Join("testdata", "*.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, inPath := range ins {
		t.Run(strings.TrimSuffix(filepath.Base(inPath), ".in.yaml"), func(t *testing.T) {
			t.Parallel()
			snap := compile.Compile(loadGoldenCase(t, inPath).in).Snapshot
			wire, err := snapshot.Encode(snap)
			if err != nil {
				t.Fatal(err)
			}
			got, err := snapshot.Decode(wire)
			if err != nil {
				t.Fatalf("Decode(Encode(compiled)): %v", err)
			}
			if err := snapshottest.Equal(snap, got); err != nil {
				t.Error(err)
			}
		})
	}
}
