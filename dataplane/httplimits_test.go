package dataplane_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/test/peers"
)

// http mode is bounded: headers, header and idle time, HTTP/2 streams.

// TestHTTPModeHeaderBlockCap: past the sniffed first request, a request's
// header block is capped at 64 KiB (net/http's default is 1 MiB); the
// client gets 431 and the backend never sees the request.
func TestHTTPModeHeaderBlockCap(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	withHeader := func(path string, n int) string {
		return "GET " + path + " HTTP/1.1\r\nHost: www.test\r\nX-Big: " + strings.Repeat("a", n) + "\r\n\r\n"
	}
	if status, _ := exchange(t, c, br, withHeader("/small", 10)); status != 200 {
		t.Fatalf("small header block: %d", status)
	}
	if status, _ := exchange(t, c, br, withHeader("/60k", 60<<10)); status != 200 {
		t.Fatalf("60 KiB header block: %d, want 200 (under the cap)", status)
	}
	// The dataplane hangs up after a 431: only its head is read.
	if res := send(t, c, br, withHeader("/100k", 100<<10)); res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header block: %d, want 431", res.StatusCode)
	}
	_ = c.Close()
	m.waitIdle()
	if got := paths(web.Requests()); len(got) != 2 || got[1] != "/60k" {
		t.Fatalf("backend saw %q, want /small and /60k", got)
	}
}

// TestHTTPModeHTTP2Settings reads what the dataplane's HTTP/2 server
// advertises to a client: 100 streams at once (not net/http's 250), a
// header list of 64 KiB (and HTTP/2's per-field overhead, not 1 MiB), and
// frames of 16 KiB (not 1 MiB).
func TestHTTPModeHTTP2Settings(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	got := map[http2.SettingID]uint32{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = sf.ForeachSetting(func(s http2.Setting) error { got[s.ID] = s.Val; return nil })
			break
		}
	}
	_ = c.Close()
	m.waitIdle()
	if v := got[http2.SettingMaxConcurrentStreams]; v != 100 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 100", v)
	}
	// net/http pads the header list size by 32 bytes for each of ten
	// fields (HTTP/2 counts 32 bytes per field, RFC 9113 §6.5.2).
	if v, ok := got[http2.SettingMaxHeaderListSize]; !ok || v < 64<<10 || v > 64<<10+320 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d (sent %v), want 64 KiB and at most 320 more", v, ok)
	}
	if v, ok := got[http2.SettingMaxFrameSize]; ok && v != 16<<10 {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want 16 KiB", v)
	}
}

// TestHTTPModeTimeouts: a kept-alive connection with no request is closed
// after the idle timeout (it used to stay open forever), and so is one
// whose next header block does not arrive within the header timeout.
func TestHTTPModeTimeouts(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := newMux(t, dataplane.Options{HTTP: dataplane.HTTPLimits{
		IdleTimeout:       200 * time.Millisecond,
		ReadHeaderTimeout: 200 * time.Millisecond,
	}})
	m.apply(snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	for _, tc := range []struct{ name, then string }{
		{"idle after a response", ""},
		{"a header block that stops half way", "GET /next HTTP/1.1\r\nHost: www"},
	} {
		c := dial(t, m.addr("pub"))
		if status, _ := exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 {
			t.Fatalf("%s: first request: %d", tc.name, status)
		}
		if _, err := io.WriteString(c, tc.then); err != nil {
			t.Fatal(err)
		}
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		_ = c.Close()
	}
	m.waitIdle()
	if got := paths(web.Requests()); len(got) != 2 {
		t.Errorf("backend saw %q, want the two first requests only", got)
	}
}
