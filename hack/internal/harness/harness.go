// Package harness holds what the programs under hack/ that load or attack a
// mux on this machine share: a self-signed certificate for their TLS
// backends, the check that keeps their load on loopback, byte sizes and
// nearest-rank percentiles.
package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Command is a subcommand of a program: its name and what it runs with the
// arguments after the name.
type Command struct {
	Name string
	Run  func(args []string) error
}

// Main runs the command os.Args[1] names with the arguments after it; it
// exits 2 without a command, 1 for an unknown one or one that failed.
func Main(program string, commands ...Command) {
	var names []string
	for _, c := range commands {
		names = append(names, c.Name)
	}
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s %s [flags]\n", program, strings.Join(names, "|"))
		os.Exit(2)
	}
	for _, c := range commands {
		if c.Name == os.Args[1] {
			if err := c.Run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
				os.Exit(1)
			}
			return
		}
	}
	last := len(names) - 1
	fmt.Fprintf(os.Stderr, "%s: unknown command %q: %s or %s\n", program, os.Args[1], strings.Join(names[:last], ", "), names[last])
	os.Exit(1)
}

// SelfSigned makes an ECDSA P-256 server certificate for names (the first
// is also its common name), valid for a day, and a pool that trusts it.
func SelfSigned(names ...string) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots, nil
}

// Loopback refuses any address that is not a loopback IP literal and a
// port: the load is meant for this machine, and a name could resolve
// elsewhere.
func Loopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want a loopback IP and port: %w", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("address %s: only loopback addresses are allowed", addr)
	}
	return nil
}

// sizeUnits are the suffixes ParseSize reads, longest first where one
// ends another.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9},
}

// ParseSize reads a positive number of bytes with an optional suffix:
// KiB, MiB, GiB or, as Kubernetes writes them, Ki, Mi, Gi, K, M, G.
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("%d: must be positive", n)
	}
	return n * mult, nil
}

// Percentile is the nearest-rank percentile p (0 < p <= 100) of sorted
// samples: the smallest sample that at least p % of them do not exceed.
// Nearest rank never invents a value between two samples, so a p99 is a
// latency some connection really had. Zero for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
