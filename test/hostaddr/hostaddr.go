// Package hostaddr gives tests local IP addresses that Kubernetes accepts in
// EndpointSlices. The API server refuses loopback (127.0.0.0/8, ::1) and
// link-local endpoint addresses, so tests that point a Service at a backend
// on this machine need another local address.
//
// The addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmark
// networks: never routed anywhere), put on the host end of a veth pair that
// the tests create. Traffic to them is delivered locally and never leaves
// the machine.
package hostaddr

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Link is the veth pair's host end that carries the addresses.
const Link = "pmx-test0"

// Addresses are the local addresses tests can bind and name in
// EndpointSlices.
var Addresses = []string{"198.18.0.1", "198.18.0.2"}

var (
	once    sync.Once
	problem string
)

// Ensure makes Addresses local, once per process, and skips the test with a
// one-line reason when that is not possible (no iproute2, not root). It is
// idempotent across processes: test packages run in parallel.
func Ensure(t testing.TB) []string {
	t.Helper()
	once.Do(func() { problem = setup() })
	if problem != "" {
		t.Skip(problem)
	}
	return Addresses
}

func setup() string {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return "no ip command (iproute2): cannot create test addresses"
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(ip, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("link", "add", Link, "type", "veth", "peer", "name", Link+"p"); err != nil && !strings.Contains(out, "File exists") {
		return fmt.Sprintf("cannot create veth %s for test addresses: %s", Link, strings.TrimSpace(out))
	}
	for _, a := range Addresses {
		if out, err := run("addr", "add", a+"/32", "dev", Link); err != nil && !strings.Contains(out, "File exists") && !strings.Contains(out, "already assigned") {
			return fmt.Sprintf("cannot add %s to %s: %s", a, Link, strings.TrimSpace(out))
		}
	}
	if out, err := run("link", "set", Link, "up"); err != nil {
		return fmt.Sprintf("cannot bring %s up: %s", Link, strings.TrimSpace(out))
	}
	return ""
}
