package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// Requests reach the backend with the client's address in
// X-Forwarded-For and come back with the backend's status and body, over
// one kept-alive client connection: HTTP/1.1 and h2c in clear, HTTP/1.1
// and h2 after TLS.
func TestProxiesToTheBackend(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "yes")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(backend.Close)
	p := newProxy(strings.TrimPrefix(backend.URL, "http://"))
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	l := listen()
	cert := peers.CertPair(t, "127.0.0.1")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	tl := tls.NewListener(listen(), tlsConfig(*cert.TLS))
	go func() { _ = p.serve(l) }()
	go func() { _ = p.serve(tl) }()

	var h1, h2c http.Protocols
	h1.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	for _, tc := range []struct {
		name  string
		url   string
		proto http.Protocols
		major int
	}{
		{"HTTP/1.1", "http://" + l.Addr().String(), h1, 1},
		{"h2c", "http://" + l.Addr().String(), h2c, 2},
		{"HTTP/1.1 over TLS", "https://" + tl.Addr().String(), h1, 1},
		{"h2", "https://" + tl.Addr().String(), http.Protocols{}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
			if tc.proto != (http.Protocols{}) {
				tr.Protocols = &tc.proto
			}
			t.Cleanup(tr.CloseIdleConnections)
			get(t, &http.Client{Transport: tr}, tc.url, tc.major)
		})
	}
}

// A request shorter than HTTP/2's preface is answered, not held waiting
// for the preface's 24 bytes. (Without a Host, the floor's backend
// client refuses it: a 502, from the proxy, is the answer.)
func TestShortHTTP10Request(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "short")
	}))
	t.Cleanup(backend.Close)
	p := newProxy(strings.TrimPrefix(backend.URL, "http://"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() { _ = p.serve(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want the proxy's 502", resp.StatusCode)
	}
}

func get(t *testing.T, client *http.Client, base string, major int) {
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
		if resp.ProtoMajor != major || resp.Header.Get("X-Backend") != "yes" {
			t.Errorf("GET %s%s: HTTP/%d, X-Backend %q; want HTTP/%d and the backend's field", base, path, resp.ProtoMajor, resp.Header.Get("X-Backend"), major)
		}
	}
}
