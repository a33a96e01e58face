package peers

import (
	"net"
	"strconv"
	"testing"
)

// Host is a local address that peers bind.
type Host string

// Loopback is 127.0.0.1, where the package-level helpers (SSHD,
// OpenSSLServer, NewTCPServer, ...) bind.
const Loopback Host = "127.0.0.1"

// Addr is host:port.
func (h Host) Addr(port int) string { return net.JoinHostPort(string(h), strconv.Itoa(port)) }

// Listen returns a TCP listener on a port the kernel picks, closed by
// t.Cleanup.
func (h Host) Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", h.Addr(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// FreePort returns a TCP port on h that was free a moment ago, for
// programs and configurations that name their port up front (sshd,
// OpenVPN, a PortMux listener) instead of binding port 0. Another process
// may take it in between: a start that can say so retries.
func (h Host) FreePort(t testing.TB) int {
	t.Helper()
	return h.FreePorts(t, 1)[0]
}

// FreePorts returns n distinct TCP ports on h that were free a moment ago
// (all held at once while choosing, so none repeats).
func (h Host) FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", h.Addr(0))
		if err != nil {
			t.Fatalf("pick a port on %s: %v", h, err)
		}
		defer func() { _ = ln.Close() }()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// FreePort is Loopback.FreePort.
func FreePort(t testing.TB) int {
	t.Helper()
	return Loopback.FreePort(t)
}
