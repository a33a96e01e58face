// Package snapshottest helps tests of snapshots: Equal compares two, equal
// when the dataplane would serve them alike, which reflect.DeepEqual
// cannot say of parsed keys (their internal caches differ) nor of compiled
// regexps; KeyPair and Tenants make certificates and big snapshots.
package snapshottest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// Equal reports how got differs from want, or nil. Key pairs are equal when
// their DER chains and PKCS #8 keys are, and got's Leaf is parsed from its
// chain; regexps are equal when their sources are; every other field is
// compared with reflect.DeepEqual, so nil and empty lists differ.
func Equal(want, got *snapshot.Snapshot) error {
	if (want == nil) != (got == nil) {
		return fmt.Errorf("snapshot %v, want %v", got, want)
	}
	if want == nil {
		return nil
	}
	canon, err := withParsed(want, got)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(canon, got) {
		return fmt.Errorf("snapshots differ:\n got %#v\nwant %#v", got, canon)
	}
	return nil
}

// withParsed checks got's key pairs and regexps against want's and returns
// a copy of want holding got's, so that DeepEqual compares the rest.
func withParsed(want, got *snapshot.Snapshot) (*snapshot.Snapshot, error) {
	if len(got.Listeners) != len(want.Listeners) {
		return nil, fmt.Errorf("%d listeners, want %d", len(got.Listeners), len(want.Listeners))
	}
	out := *want
	out.Listeners = slices.Clone(want.Listeners)
	for i := range out.Listeners {
		wl, gl := &out.Listeners[i], &got.Listeners[i]
		if wl.TLS != nil && gl.TLS != nil && len(wl.TLS.Certificates) == len(gl.TLS.Certificates) {
			tc := *wl.TLS
			tc.Certificates = slices.Clone(wl.TLS.Certificates)
			for j := range tc.Certificates {
				if err := sameKeyPair(tc.Certificates[j].Certificate, gl.TLS.Certificates[j].Certificate); err != nil {
					return nil, fmt.Errorf("listener %s certificate %s: %w", wl.Name, tc.Certificates[j].Source, err)
				}
				tc.Certificates[j].Certificate = gl.TLS.Certificates[j].Certificate
			}
			wl.TLS = &tc
		}
		if len(wl.Routes) == len(gl.Routes) {
			wl.Routes = slices.Clone(wl.Routes)
			for j := range wl.Routes {
				wr, gr := wl.Routes[j].Match.Regex, gl.Routes[j].Match.Regex
				if (wr == nil) != (gr == nil) || (wr != nil && wr.String() != gr.String()) {
					return nil, fmt.Errorf("listener %s route %s: regexp %v, want %v", wl.Name, wl.Routes[j].Name, gr, wr)
				}
				wl.Routes[j].Match.Regex = gr
			}
		}
	}
	return &out, nil
}

func sameKeyPair(want, got *tls.Certificate) error {
	if want == nil || got == nil {
		if want != got {
			return fmt.Errorf("key pair %v, want %v", got, want)
		}
		return nil
	}
	wk, err := x509.MarshalPKCS8PrivateKey(want.PrivateKey)
	if err != nil {
		return err
	}
	gk, err := x509.MarshalPKCS8PrivateKey(got.PrivateKey)
	if err != nil {
		return err
	}
	switch {
	case !reflect.DeepEqual(got.Certificate, want.Certificate):
		return errors.New("the chain's DER differs")
	case !bytes.Equal(gk, wk):
		return errors.New("the private key differs")
	case reflect.TypeOf(got.PrivateKey) != reflect.TypeOf(want.PrivateKey):
		return fmt.Errorf("private key of type %T, want %T", got.PrivateKey, want.PrivateKey)
	case got.Leaf == nil || len(got.Certificate) == 0 || !bytes.Equal(got.Leaf.Raw, got.Certificate[0]):
		return errors.New("the leaf is not parsed from the chain")
	case !reflect.DeepEqual(got.OCSPStaple, want.OCSPStaple) || !reflect.DeepEqual(got.SignedCertificateTimestamps, want.SignedCertificateTimestamps) ||
		!reflect.DeepEqual(got.SupportedSignatureAlgorithms, want.SupportedSignatureAlgorithms):
		return errors.New("OCSP staple, SCTs or signature algorithms differ")
	}
	return nil
}
