package h2_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/h2"
)

// findH2spec returns the h2spec binary `make h2spec` installs (or
// $H2SPEC), or why there is none.
func findH2spec() (string, string) {
	if p := os.Getenv("H2SPEC"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", "H2SPEC=" + p + " is missing: run make h2spec"
		}
		return p, ""
	}
	matches, _ := filepath.Glob("../../bin/h2spec-*")
	if len(matches) == 0 {
		return "", "no h2spec: run make h2spec (or set H2SPEC)"
	}
	return matches[len(matches)-1], ""
}

// TestH2spec runs h2spec, the HTTP/2 conformance client (RFC 7540/9113
// and RFC 7541, 145 cases: framing, stream states, flow control,
// settings, HPACK, malformed requests), against a Server; every case
// must pass. (net/http's server fails three of them: it answers a
// request with a connection-specific field or "te: gzip" with 400
// instead of a stream error, and it closes the connection on repeated
// SETTINGS_INITIAL_WINDOW_SIZE values.)
func TestH2spec(t *testing.T) {
	t.Parallel()
	bin, why := findH2spec()
	if bin == "" {
		t.Skip(why)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "h2spec wants a body of a few bytes\n")
	})
	s := serve(t, &h2.Server{Handler: h}, nil)
	host, port, _ := net.SplitHostPort(s.addr)
	out, err := exec.CommandContext(t.Context(), bin, "-h", host, "-p", port, "-o", "2", "-j", filepath.Join(t.TempDir(), "junit.xml")).CombinedOutput()
	summary := string(out)
	if i := strings.LastIndex(summary, "\n\n"); i >= 0 {
		summary = summary[i:]
	}
	if err != nil || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("h2spec: %v\n%s", err, out[max(0, len(out)-8000):])
	}
	t.Logf("h2spec: %s", strings.TrimSpace(summary))
}
