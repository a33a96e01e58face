package dataplane_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// testsslFinding is one entry of testssl.sh's flat JSON output (--jsonfile).
type testsslFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
}

// testsslChecks are the testssl.sh checks that make sense offline against
// one loopback port: protocols (-p), cipher categories (-s), forward
// secrecy (-f), every vulnerability it knows (-U) and the ciphers of each
// protocol (-E). Certificate checks (-S) are left out: the test's
// certificates are self-signed on purpose, and PortMux serves whatever the
// user's Secret holds.
var testsslChecks = []string{"-p", "-s", "-f", "-U", "-E"}

// auditFindings are the findings of the audit that asked for Mozilla's
// intermediate profile: Go's TLS 1.2 defaults include ECDHE with AES-CBC,
// which testssl.sh reports as "Obsolete CBC ciphers offered" and as
// "potentially vulnerable" to LUCKY13. testssl.sh 3.0 rates both LOW, so
// they fail the test whatever their rating (cipherlist_OBSOLETED is the
// id newer versions give the first).
var auditFindings = []string{"cipherlist_AVERAGE", "cipherlist_OBSOLETED", "LUCKY13"}

// TestTLSScannerFindsNothingAboveLow runs testssl.sh against a terminating
// listener, with an ECDSA and an RSA certificate as a site would serve
// them, in front of an HTTP backend, and fails on every finding rated
// MEDIUM or worse (what an auditor reports) and on the audit's own
// findings. The scan takes about 30 s on a quiet 2-core machine.
func TestTLSScannerFindsNothingAboveLow(t *testing.T) {
	t.Parallel()
	bin := testsslBinary(t)
	rsaC := peers.RSACert(t, "rsa.scan.test", "scan.test")
	ecC := peers.CertPair(t, "ecdsa.scan.test", "scan.test")
	web := peers.HTTPBackend(t, "web")
	r := routeTo("web", snapshot.HTTP, web.Addr)
	r.Backend.Mode = snapshot.ModeHTTP
	m := startMux(t, snapshotOf(terminating("pub", tlsOf([]string{"h2", "http/1.1"}, ecC, rsaC), r)))

	findings, took := runTestssl(t, bin, m.addr("pub"))
	t.Logf("testssl.sh %s took %v", strings.Join(testsslChecks, " "), took.Round(time.Second))
	var ids []string
	for _, f := range findings {
		ids = append(ids, f.ID)
		switch {
		case f.Severity == "FATAL":
			t.Errorf("testssl.sh could not scan: %s: %s", f.ID, f.Finding)
		case slices.Contains([]string{"MEDIUM", "HIGH", "CRITICAL"}, f.Severity):
			t.Errorf("testssl.sh: %s %s: %s", f.Severity, f.ID, f.Finding)
		case slices.Contains(auditFindings, f.ID) && f.Severity != "OK" && f.Severity != "INFO":
			t.Errorf("testssl.sh, as in the audit: %s %s: %s", f.Severity, f.ID, f.Finding)
		}
	}
	// The scan ran: protocols, forward secrecy and the vulnerabilities
	// were looked at.
	for _, id := range []string{"TLS1_2", "TLS1_3", "cipherlist_STRONG", "PFS", "LUCKY13", "ROBOT"} {
		if !slices.Contains(ids, id) {
			t.Errorf("testssl.sh reported nothing for %s; the scan is incomplete: %v", id, ids)
		}
	}
	if t.Failed() {
		for _, f := range findings {
			t.Logf("%-8s %-22s %s", f.Severity, f.ID, f.Finding)
		}
	}
	m.waitIdle()
}

// testsslBinary is testssl.sh (Debian installs it as testssl), or skips.
func testsslBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"testssl.sh", "testssl"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("testssl.sh is not installed (apt-get install testssl.sh)")
	return ""
}

// runTestssl scans addr with testsslChecks and returns its findings and
// how long the scan took.
func runTestssl(t *testing.T, bin, addr string) ([]testsslFinding, time.Duration) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "testssl.json")
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	args := append([]string{"--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
		"--connect-timeout", "10", "--openssl-timeout", "10", "--jsonfile", out}, testsslChecks...)
	cmd := exec.CommandContext(ctx, bin, append(args, addr)...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	log, err := cmd.CombinedOutput()
	took := time.Since(start)
	data, rerr := os.ReadFile(out)
	if rerr != nil {
		t.Fatalf("testssl.sh wrote no JSON (%v): %v\n%s", err, rerr, log)
	}
	var findings []testsslFinding
	if err := json.Unmarshal(data, &findings); err != nil {
		t.Fatalf("testssl.sh JSON: %v\n%s", err, data)
	}
	if len(findings) == 0 {
		t.Fatalf("testssl.sh found nothing at all (%v):\n%s", err, log)
	}
	return findings, took
}
