package peers

import (
	"crypto/x509"
	"net"
	"strconv"
	"testing"
	"time"
)

// OpenVPNReady is what both ends print once the tunnel is up.
const OpenVPNReady = "Initialization Sequence Completed"

// OpenVPNConnectTimeout is how long a client may take to complete through
// a relay: the point-to-point server polls accept once a second, and the
// TLS exchange takes about two more.
const OpenVPNConnectTimeout = 30 * time.Second

// OpenVPNPKI is the files of a small PKI made with crypto/x509 (EC P-256):
// a CA (basicConstraints critical CA:TRUE), a server certificate with
// extendedKeyUsage serverAuth and a client one with clientAuth.
type OpenVPNPKI struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// NewOpenVPNPKI writes a fresh PKI into a temporary directory.
func NewOpenVPNPKI(t testing.TB) *OpenVPNPKI {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, "portmux test CA")
	caFile, _ := ca.WriteFiles(t, dir, "ca")
	pki := &OpenVPNPKI{CA: caFile}
	pki.ServerCert, pki.ServerKey = ca.Issue(t, "server", x509.ExtKeyUsageServerAuth).WriteFiles(t, dir, "server")
	pki.ClientCert, pki.ClientKey = ca.Issue(t, "client", x509.ExtKeyUsageClientAuth).WriteFiles(t, dir, "client")
	return pki
}

// OpenVPNServer is an OpenVPN point-to-point TLS server over TCP with
// --dev null (no tun device), on 127.0.0.1. It takes one client at a time:
// use one per test.
type OpenVPNServer struct {
	// Addr is 127.0.0.1:Port.
	Addr string
	Port int
	PKI  *OpenVPNPKI
	// Process is the server; wait on it for OpenVPNReady.
	Process *Process

	openvpn string
}

// OpenVPN makes a PKI and starts a server, waiting for it to listen. It
// skips the test when openvpn is not installed.
func OpenVPN(t testing.TB) *OpenVPNServer {
	t.Helper()
	return Loopback.OpenVPN(t)
}

// OpenVPN is the package's OpenVPN on host h (an address an
// EndpointSlice may hold, unlike loopback).
func (h Host) OpenVPN(t testing.TB) *OpenVPNServer {
	t.Helper()
	o := &OpenVPNServer{openvpn: LookPath(t, "openvpn"), PKI: NewOpenVPNPKI(t)}
	o.Process, o.Port = h.StartOnPort(t, func(port int) (*Process, error) {
		p := Start(t, "openvpn server", o.openvpn,
			"--dev", "null", "--proto", "tcp-server",
			"--local", string(h), "--port", strconv.Itoa(port),
			"--tls-server", "--ca", o.PKI.CA, "--cert", o.PKI.ServerCert, "--key", o.PKI.ServerKey,
			"--dh", "none", "--verb", "3")
		_, err := p.WaitFor("Listening for incoming TCP connection", ReadyTimeout)
		return p, err
	})
	o.Addr = net.JoinHostPort(string(h), strconv.Itoa(o.Port))
	return o
}

// Client starts an OpenVPN client that connects to addr (host:port, e.g.
// the mux) and checks the server's certificate (--remote-cert-tls server).
// It retries the connection on its own until stopped by t.Cleanup.
func (o *OpenVPNServer) Client(t testing.TB, addr string) *Process {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("openvpn client address %q: %v", addr, err)
	}
	return Start(t, "openvpn client", o.openvpn,
		"--dev", "null", "--proto", "tcp-client",
		"--remote", host, port, "--tls-client",
		"--ca", o.PKI.CA, "--cert", o.PKI.ClientCert, "--key", o.PKI.ClientKey,
		"--remote-cert-tls", "server", "--verb", "3")
}

// WaitConnected waits until both the server and client print
// OpenVPNReady, within OpenVPNConnectTimeout, and fails the test otherwise.
func (o *OpenVPNServer) WaitConnected(t testing.TB, client *Process) {
	t.Helper()
	deadline := time.Now().Add(OpenVPNConnectTimeout)
	client.MustWaitFor(t, OpenVPNReady, time.Until(deadline))
	o.Process.MustWaitFor(t, OpenVPNReady, max(time.Until(deadline), time.Second))
}
