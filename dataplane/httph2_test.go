package dataplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/test/peers"
)

// TestHTTPModeHTTP2Bodies: bodies and trailers cross http mode's HTTP/2
// front end and the backend pool both ways, larger than the stream and
// connection windows: uploads with and without a declared length (the
// pool's net/http Transport), a 3 MiB download (the direct pool), and
// the backend's trailers.
func TestHTTPModeHTTP2Bodies(t *testing.T) {
	t.Parallel()
	backend := peers.HTTPHandler(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		if n, err := strconv.Atoi(r.URL.Query().Get("download")); err == nil {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(bytes.Repeat([]byte("d"), n))
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		w.Header().Set("Trailer", "X-Sum")
		_, _ = w.Write(body)
		w.Header().Set("X-Sum", hex.EncodeToString(sum[:]))
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	cc := h2Conn(t, m.addr("pub"), "")
	upload := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
	sum := sha256.Sum256(upload)
	for _, tc := range []struct {
		name     string
		body     io.Reader
		length   int64
		download int
	}{
		{name: "upload of 3 MiB, declared", body: bytes.NewReader(upload), length: int64(len(upload))},
		{name: "upload of 3 MiB, undeclared", body: io.MultiReader(bytes.NewReader(upload)), length: -1},
		{name: "download of 3 MiB", download: 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, url := http.MethodPost, "http://www.test/echo"
			if tc.download > 0 {
				method, url = http.MethodGet, "http://www.test/get?download="+strconv.Itoa(tc.download)
			}
			req, err := http.NewRequest(method, url, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.length
			res, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
				t.Fatalf("%d HTTP/%d, %v", res.StatusCode, res.ProtoMajor, err)
			}
			if tc.download > 0 {
				if len(got) != tc.download || bytes.Count(got, []byte("d")) != tc.download {
					t.Errorf("downloaded %d bytes, want %d", len(got), tc.download)
				}
				return
			}
			if !bytes.Equal(got, upload) {
				t.Errorf("echoed %d bytes, sent %d", len(got), len(upload))
			}
			if res.Trailer.Get("X-Sum") != hex.EncodeToString(sum[:]) {
				t.Errorf("trailers %v, want the backend's X-Sum", res.Trailer)
			}
		})
	}
}

// TestShutdownDrainsHTTP2Connections: Shutdown tells an HTTP/2 client to
// go (GOAWAY) rather than waiting out its idle timeout (60 s) or cutting
// it: a connection kept alive after a request ends at once, and Shutdown
// returns without having to cut anything.
func TestShutdownDrainsHTTP2Connections(t *testing.T) {
	t.Parallel()
	backend := peers.HTTPBackend(t, "web")
	m := newMux(t, dataplane.Options{})
	m.apply(snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	cc := h2Conn(t, m.addr("pub"), "")
	if status, _, err := h2Get(t, cc, "www.test", "http://www.test/"); err != nil || status != http.StatusOK {
		t.Fatalf("GET: %d, %v", status, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v: the idle HTTP/2 connection was not drained", err)
	}
	if _, _, err := h2Get(t, cc, "www.test", "http://www.test/"); err == nil {
		t.Error("a request after Shutdown was served")
	}
}

// TestReloadDroppedPortDrainsHTTP2: an HTTP/2 connection accepted on a
// port that a reload drops is told to go (GOAWAY) and ends, instead of
// living on under the routes of a port that no longer exists; the port
// that stays keeps its HTTP/2 connections.
func TestReloadDroppedPortDrainsHTTP2(t *testing.T) {
	t.Parallel()
	backend := peers.HTTPBackend(t, "web")
	keep := listenerOn("keep", httpRoute("web", backend.Addr))
	drop := listenerOn("drop", httpRoute("web", backend.Addr))
	m := startMux(t, snapshotOf(keep, drop))
	kept, dropped := h2Conn(t, m.addr("keep"), ""), h2Conn(t, m.addr("drop"), "")
	for _, cc := range []*http.ClientConn{kept, dropped} {
		if status, _, err := h2Get(t, cc, "www.test", "http://www.test/"); err != nil || status != http.StatusOK {
			t.Fatalf("GET before the reload: %d, %v", status, err)
		}
	}
	m.apply(snapshotOf(keep))
	peers.Until(t, ioTimeout, "the dropped port's HTTP/2 connection to end", func() bool {
		_, _, err := h2Get(t, dropped, "www.test", "http://www.test/")
		return err != nil
	})
	if status, _, err := h2Get(t, kept, "www.test", "http://www.test/"); err != nil || status != http.StatusOK {
		t.Errorf("GET on the kept port's connection after the reload: %d, %v", status, err)
	}
}
