package tunnel_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" {
			_ = os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// portmuxBinary builds cmd/portmux once per test run, for tests that need
// the real command (ssh's ProxyCommand runs it).
func portmuxBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "portmux-tunnel-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "portmux")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/portmux/portmux/cmd/portmux")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = err
			binErr = &buildError{err: err, out: string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("build portmux: %v", binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
