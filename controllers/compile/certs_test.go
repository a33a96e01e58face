package compile_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The golden inputs embed these certificates as PEM in their Secrets. They
// were generated once, valid from 2025 for 100 years, so every run reads the
// same bytes; regenerate them only if that ever runs out:
//
//	go test ./controllers/compile -run TestGenerateCertificates -gencerts
//
// then paste testdata/certs/*.pem into the Secrets of testdata/*.in.yaml.
// The golden output prints only a certificate's Secret and its names, never
// key material.
var genCerts = flag.Bool("gencerts", false, "write new test certificates into testdata/certs")

func TestGenerateCertificates(t *testing.T) {
	if !*genCerts {
		t.Skip("run with -gencerts to write testdata/certs")
	}
	notBefore := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, c := range []struct {
		file string
		cn   string
		dns  []string
	}{
		{"example.com", "www.example.com", []string{"www.example.com", "*.example.com"}},
		{"example.org", "example.org", []string{"example.org", "*.example.org"}},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(int64(i + 1)),
			Subject:               pkix.Name{CommonName: c.cn, Organization: []string{"PortMux tests"}},
			DNSNames:              c.dns,
			NotBefore:             notBefore,
			NotAfter:              notBefore.AddDate(100, 0, 0),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("testdata", "certs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name, typ string, der []byte) {
			if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(c.file+".crt.pem", "CERTIFICATE", der)
		write(c.file+".key.pem", "PRIVATE KEY", keyDER)
	}
}
