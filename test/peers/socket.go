package peers

import (
	"os"
	"path/filepath"
	"testing"
)

// SocketPath is a fresh path for a Unix socket, removed when the test
// ends. Unix socket paths are short (108 bytes), so it is not under the
// test's long temporary directory; prefix names the directory.
func SocketPath(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "dp.sock")
}
