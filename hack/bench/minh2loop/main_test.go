package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Requests of one h2c connection reach the backend with the client's
// fields, its Host and X-Forwarded-For, and come back with the backend's
// status, fields and body, whichever loop carries them.
func TestProxiesH2CToTheBackend(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "yes")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, r.Method+" "+r.Host+r.URL.Path+" "+r.Header.Get("X-Forwarded-For")+" "+r.Header.Get("X-Client"))
	}))
	t.Cleanup(backend.Close)
	addr, err := start("127.0.0.1:0", strings.TrimPrefix(backend.URL, "http://"), 2)
	if err != nil {
		t.Fatal(err)
	}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &h2c}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	for _, path := range []string{"/a", "/b/c", "/a"} {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr.String()+path, nil)
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
		want := "GET " + addr.String() + path + " 127.0.0.1 me"
		if resp.StatusCode != http.StatusTeapot || string(body) != want || resp.ProtoMajor != 2 || resp.Header.Get("X-Backend") != "yes" {
			t.Errorf("GET %s: HTTP/%d %d %q, X-Backend %q; want HTTP/2 418 %q and the backend's field",
				path, resp.ProtoMajor, resp.StatusCode, body, resp.Header.Get("X-Backend"), want)
		}
	}
}
