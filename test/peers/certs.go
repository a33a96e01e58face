package peers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Cert is a key pair (EC P-256 unless made by RSACert) with its
// certificate, in the forms tests hand to programs (PEM) and to Go
// (tls.Certificate, Leaf set).
type Cert struct {
	CertPEM []byte
	KeyPEM  []byte
	TLS     *tls.Certificate
	Leaf    *x509.Certificate

	key crypto.Signer
}

// CA is a certificate authority that issues Certs.
type CA struct {
	Cert
}

// certTemplate is what every certificate here shares: valid from an hour
// ago (clock skew) for a day.
func certTemplate(cn string, names []string) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return tmpl
}

// sign creates the certificate tmpl for a new EC P-256 key, signed by
// parent (nil: self-signed).
func sign(t testing.TB, tmpl *x509.Certificate, parent *Cert) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signKey(t, tmpl, key, parent)
}

// signKey creates the certificate tmpl for key, signed by parent (nil:
// self-signed).
func signKey(t testing.TB, tmpl *x509.Certificate, key crypto.Signer, parent *Cert) *Cert {
	t.Helper()
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.Leaf, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Leaf:    leaf,
		key:     key,
	}
	c.TLS = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return c
}

// CertPair returns a self-signed server certificate whose subject CN is
// names[0] and whose SANs are all names (IP literals as IP SANs), for
// TLS-terminating listeners and s_server.
func CertPair(t testing.TB, names ...string) *Cert {
	t.Helper()
	if len(names) == 0 {
		t.Fatal("CertPair needs at least one name")
	}
	tmpl := certTemplate(names[0], names)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return sign(t, tmpl, nil)
}

// RSACert returns a self-signed RSA 2048 server certificate for cn and
// names, for listeners that must serve an RSA and an ECDSA certificate.
func RSACert(t testing.TB, cn string, names ...string) *Cert {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := certTemplate(cn, names)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return signKey(t, tmpl, key, nil)
}

// NewCA returns a CA certificate: basicConstraints CA:TRUE (crypto/x509
// always marks it critical), keyUsage keyCertSign and cRLSign.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	tmpl := certTemplate(cn, nil)
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return &CA{Cert: *sign(t, tmpl, nil)}
}

// Issue signs a leaf certificate for cn with one extended key usage
// (x509.ExtKeyUsageServerAuth or x509.ExtKeyUsageClientAuth) and the given
// SANs.
func (ca *CA) Issue(t testing.TB, cn string, eku x509.ExtKeyUsage, names ...string) *Cert {
	t.Helper()
	tmpl := certTemplate(cn, names)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{eku}
	return sign(t, tmpl, &ca.Cert)
}

// WriteFiles writes the certificate and key as base.crt and base.key in
// dir (the key mode 0600) and returns their paths.
func (c *Cert) WriteFiles(t testing.TB, dir, base string) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, base+".crt")
	keyFile = filepath.Join(dir, base+".key")
	if err := os.WriteFile(certFile, c.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// KeyPair returns a certificate for names with a new key of kind (ecdsa,
// ed25519, or rsa: one RSA key per process, slow to make), signed by
// parent (nil: self-signed) and able to sign others, its chain the leaf
// then parent's chain: the forms a snapshot carries, for tests of the
// snapshot's encoding and benchmarks of many tenants.
func KeyPair(t testing.TB, kind string, parent *tls.Certificate, names ...string) *tls.Certificate {
	t.Helper()
	var key crypto.Signer
	var err error
	switch kind {
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		key = sharedRSAKey(t)
	default:
		t.Fatalf("key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	tmpl := certTemplate(names[0], names)
	tmpl.IsCA, tmpl.BasicConstraintsValid = parent == nil, true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
	var issuer *Cert
	if parent != nil {
		issuer = &Cert{Leaf: parent.Leaf, key: parent.PrivateKey.(crypto.Signer)}
	}
	c := signKey(t, tmpl, key, issuer).TLS
	if parent != nil {
		c.Certificate = append(c.Certificate, parent.Certificate...)
	}
	return c
}

// rsaKey is the one RSA key of KeyPair's RSA certificates: generating one
// takes a good part of a second, and what tests measure is parsing it.
var rsaKey struct {
	once sync.Once
	key  *rsa.PrivateKey
	err  error
}

func sharedRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaKey.once.Do(func() { rsaKey.key, rsaKey.err = rsa.GenerateKey(rand.Reader, 2048) })
	if rsaKey.err != nil {
		t.Fatal(rsaKey.err)
	}
	return rsaKey.key
}
