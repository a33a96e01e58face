package snapshot

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
)

// WireFormat is the version of the encoding Encode writes and Decode reads.
// Both ends of the control socket run the same image, so there is one
// version at a time; a change to the Snapshot types changes the encoding,
// and a change that an old decoder would misread bumps this.
const WireFormat = 1

// The wire format is JSON of the Snapshot types themselves, inside an
// envelope that names the format. Go's encoding carries what a snapshot
// holds without help: durations as integer nanoseconds, byte slices as
// base64, netip.Prefix and *regexp.Regexp as their text (a regexp as its
// source, compiled again when decoded). Only certificates need their own
// encoding (Certificate.MarshalJSON). Every field of every type is
// encoded, so a field added to a Snapshot type crosses the socket without
// a change here (TestWireCoversEveryField checks that the round-trip test
// sets it).
type wireEnvelope struct {
	Format   int       `json:"format"`
	Snapshot *Snapshot `json:"snapshot"`
}

// Encode returns snap in the wire format, for a dataplane in another
// process. It fails only for what cannot cross: a certificate without a key
// pair, or with fields the format does not carry.
func Encode(snap *Snapshot) ([]byte, error) {
	if snap == nil {
		return nil, errors.New("encode snapshot: nil")
	}
	return encodeEnvelope(wireEnvelope{Format: WireFormat, Snapshot: snap}, "snapshot")
}

// encodeEnvelope is the JSON of env, an envelope of what.
func encodeEnvelope(env any, what string) ([]byte, error) {
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", what, err)
	}
	return b, nil
}

// Decode parses what Encode wrote and checks what a decoder can: the
// format, unknown fields (an older dataplane must not drop a setting it
// does not know, such as a trust list, and serve without it), regexes that
// compile, certificates whose key matches, and the shape the dataplane
// relies on (unique listener names, one action per route, streams handed
// to internal listeners only, known protocols and modes, no negative
// limits).
func Decode(data []byte) (*Snapshot, error) {
	var env wireEnvelope
	if err := decodeStrict(data, &env, "snapshot"); err != nil {
		return nil, err
	}
	if err := checkFormat(env.Format, "snapshot"); err != nil {
		return nil, err
	}
	if env.Snapshot == nil {
		return nil, errors.New("decode snapshot: no snapshot")
	}
	if err := env.Snapshot.Validate(); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	return env.Snapshot, nil
}

// decodeStrict decodes data, one JSON value of what, into v: unknown
// fields and anything after the value are errors.
func decodeStrict(data []byte, v any, what string) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	if d.More() {
		return fmt.Errorf("decode %s: data after the %s", what, what)
	}
	return nil
}

// checkFormat refuses an envelope of another wire format.
func checkFormat(format int, what string) error {
	if format != WireFormat {
		return fmt.Errorf("decode %s: wire format %d, this dataplane reads %d", what, format, WireFormat)
	}
	return nil
}

// wireCertificate is a Certificate on the wire: the chain as DER, leaf
// first, and the private key as PKCS #8 DER.
type wireCertificate struct {
	Source string   `json:"source"`
	Chain  [][]byte `json:"chain"`
	Key    []byte   `json:"key"`
}

// MarshalJSON encodes the key pair as DER: the chain and a PKCS #8 key.
// The parsed leaf is not sent; the decoder parses it from the chain.
func (c Certificate) MarshalJSON() ([]byte, error) {
	tc := c.Certificate
	if tc == nil || len(tc.Certificate) == 0 || tc.PrivateKey == nil {
		return nil, fmt.Errorf("certificate %s: no key pair", c.Source)
	}
	if tc.OCSPStaple != nil || tc.SignedCertificateTimestamps != nil || tc.SupportedSignatureAlgorithms != nil {
		return nil, fmt.Errorf("certificate %s: OCSP staples, SCTs and signature algorithms are not carried", c.Source)
	}
	key, err := x509.MarshalPKCS8PrivateKey(tc.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", c.Source, err)
	}
	return json.Marshal(wireCertificate{Source: c.Source, Chain: tc.Certificate, Key: key})
}

// UnmarshalJSON parses the chain and the key and checks that they belong
// together, as tls.X509KeyPair does.
func (c *Certificate) UnmarshalJSON(data []byte) error {
	var w wireCertificate
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&w); err != nil {
		return err
	}
	tc, err := keyPair(w.Chain, w.Key)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", w.Source, err)
	}
	*c = Certificate{Source: w.Source, Certificate: tc}
	return nil
}

// keyPair builds a tls.Certificate from DER, with Leaf set.
func keyPair(chain [][]byte, keyDER []byte) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate in the chain")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	for i, der := range chain[1:] {
		if len(der) == 0 {
			return nil, fmt.Errorf("chain certificate %d is empty", i+1)
		}
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", key)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return nil, errors.New("private key does not match the leaf's public key")
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}
