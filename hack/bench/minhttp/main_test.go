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

// Requests reach the backend with the client's address in
// X-Forwarded-For and come back with the backend's status and body, over
// one kept-alive client connection, plain and after TLS.
func TestProxiesToTheBackend(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(backend.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := peers.CertPair(t, "127.0.0.1")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl = tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
	srv := newServer(strings.TrimPrefix(backend.URL, "http://"))
	go func() { _ = srv.Serve(l) }()
	go func() { _ = srv.Serve(tl) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for _, url := range []string{"http://" + l.Addr().String(), "https://" + tl.Addr().String()} {
		get(t, client, url)
	}
}

func get(t *testing.T, client *http.Client, base string) {
	t.Helper()
	for _, path := range []string{"/a", "/b/c"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if want := "GET " + path + " 127.0.0.1"; resp.StatusCode != http.StatusTeapot || string(body) != want {
			t.Errorf("GET %s%s: %d %q, want 418 %q", base, path, resp.StatusCode, body, want)
		}
	}
}
