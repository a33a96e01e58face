package peers

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SClientTimeout bounds one s_client run.
const SClientTimeout = 20 * time.Second

// TLSServer is an `openssl s_server -www` on a Host.
type TLSServer struct {
	// Addr is Host:Port, as s_server reported it.
	Addr string
	Host Host
	Port int
	// Cert is the certificate it serves (CN and SAN: the cn it was started
	// with).
	Cert *Cert

	// Process is the running server.
	Process *Process
}

// OpenSSLServer starts s_server on Loopback with a new certificate for cn,
// answering every request with its status page (-www). alpn, when given,
// is the list of protocols it accepts, most preferred first. It binds port
// 0 and reads the port back from its ready line ("ACCEPT 127.0.0.1:P").
func OpenSSLServer(t testing.TB, cn string, alpn ...string) *TLSServer {
	t.Helper()
	return Loopback.OpenSSLServer(t, cn, alpn...)
}

// OpenSSLServer is OpenSSLServer on h.
func (h Host) OpenSSLServer(t testing.TB, cn string, alpn ...string) *TLSServer {
	t.Helper()
	openssl := LookPath(t, "openssl")
	// s_server's stdout is block-buffered; the ready line needs -oL.
	stdbuf := LookPath(t, "stdbuf")

	cert := CertPair(t, cn)
	certFile, keyFile := cert.WriteFiles(t, t.TempDir(), "server")
	argv := []string{stdbuf, "-oL", openssl, "s_server",
		"-accept", h.Addr(0), "-cert", certFile, "-key", keyFile, "-www"}
	if len(alpn) > 0 {
		argv = append(argv, "-alpn", strings.Join(alpn, ","))
	}
	p := Start(t, "s_server "+cn, argv...)
	line := p.MustWaitFor(t, "ACCEPT", ReadyTimeout)
	addr := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "ACCEPT"))
	_, portStr, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port == 0 {
		t.Fatalf("s_server ready line %q does not name a port", line)
	}
	return &TLSServer{
		Addr:    h.Addr(port),
		Host:    h,
		Port:    port,
		Cert:    cert,
		Process: p,
	}
}

// CN is the subject common name of the server's certificate.
func (s *TLSServer) CN() string { return s.Cert.Leaf.Subject.CommonName }

// SClientResult is what one s_client handshake showed.
type SClientResult struct {
	// CN is the subject common name of the certificate the server sent.
	CN string
	// ALPN is the negotiated protocol, "" when none.
	ALPN string
	// Output is s_client's standard output.
	Output string
}

// SClient connects with `openssl s_client -servername servername`
// (-noservername when servername is "", and -alpn when alpn is given) to
// addr, completes a handshake, closes, and returns the server
// certificate's subject CN and the negotiated ALPN. It fails the test when
// no certificate came back.
func SClient(t testing.TB, addr, servername string, alpn ...string) (cn, negotiated string) {
	t.Helper()
	r, err := SClientTry(t, addr, servername, alpn...)
	if err != nil {
		t.Fatal(err)
	}
	return r.CN, r.ALPN
}

// SClientTry is SClient that returns an error instead of failing, for
// handshakes that are expected to fail.
func SClientTry(t testing.TB, addr, servername string, alpn ...string) (SClientResult, error) {
	t.Helper()
	openssl := LookPath(t, "openssl")
	argv := []string{openssl, "s_client", "-connect", addr, "-servername", servername}
	if servername == "" {
		argv = []string{openssl, "s_client", "-connect", addr, "-noservername"}
	}
	if len(alpn) > 0 {
		argv = append(argv, "-alpn", strings.Join(alpn, ","))
	}
	// stdin at EOF: s_client handshakes, prints, and closes.
	out, errOut, runErr := Command{Timeout: SClientTimeout}.Output(argv...)
	r := SClientResult{Output: out}
	block, _ := pem.Decode([]byte(out[max(0, strings.Index(out, "-----BEGIN CERTIFICATE-----")):]))
	if block == nil {
		return r, fmt.Errorf("s_client %s (servername %s) got no certificate (%s)\nstdout:\n%s\nstderr:\n%s", addr, servername, fmt.Sprint(runErr), out, errOut)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return r, fmt.Errorf("s_client %s: parse server certificate: %w", addr, err)
	}
	r.CN = cert.Subject.CommonName
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "ALPN protocol: "); ok {
			r.ALPN = p
		}
	}
	return r, nil
}
