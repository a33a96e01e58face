//go:build linux

package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portmux/portmux/test/peers"
)

// Requests of one connection, h2c or h2 over TLS, reach the backend with
// the client's fields, its Host and X-Forwarded-For, and come back with
// the backend's status, fields and body, whichever loop carries them.
func TestProxiesToTheBackend(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "yes")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, r.Method+" "+r.Host+r.URL.Path+" "+r.Header.Get("X-Forwarded-For")+" "+r.Header.Get("X-Client"))
	}))
	t.Cleanup(backend.Close)
	loops, addr, err := start("127.0.0.1:0", strings.TrimPrefix(backend.URL, "http://"), 2)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tl.Close() })
	cert := peers.CertPair(t, "127.0.0.1")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	go func() { _ = serveTLS(tl, *cert.TLS, loops) }()

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	for _, tc := range []struct {
		name string
		base string
		tr   *http.Transport
	}{
		{"h2c", "http://" + addr.String(), &http.Transport{Protocols: &h2c}},
		{"h2", "https://" + tl.Addr().String(), &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(tc.tr.CloseIdleConnections)
			client := &http.Client{Transport: tc.tr}
			host := strings.TrimPrefix(strings.TrimPrefix(tc.base, "http://"), "https://")
			for _, path := range []string{"/a", "/b/c", "/a"} {
				req, err := http.NewRequest(http.MethodGet, tc.base+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("X-Client", "me")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				want := "GET " + host + path + " 127.0.0.1 me"
				if resp.StatusCode != http.StatusTeapot || string(body) != want || resp.ProtoMajor != 2 || resp.Header.Get("X-Backend") != "yes" {
					t.Errorf("GET %s: HTTP/%d %d %q, X-Backend %q; want HTTP/2 418 %q and the backend's field",
						path, resp.ProtoMajor, resp.StatusCode, body, resp.Header.Get("X-Backend"), want)
				}
			}
		})
	}
}
