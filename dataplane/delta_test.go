package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// TestDeltasRouteAsWholeSnapshots applies a random sequence of deltas to
// one dataplane, which reuses the compiled listeners a delta leaves alone,
// and the same snapshots, decoded afresh, to another, which compiles every
// listener: a new connection to each listener reaches the same backend on
// both, and a connection open across a delta keeps flowing.
func TestDeltasRouteAsWholeSnapshots(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 19))
	var backends []*peers.TCPServer
	for i := range 4 {
		backends = append(backends, greetingEchoBackend(t, fmt.Sprintf("backend-%d\n", i)))
	}
	var webs []*peers.HTTPServer
	for i := range len(backends) {
		webs = append(webs, peers.HTTPBackend(t, fmt.Sprintf("web-%d", i)))
	}
	// l* listeners forward streams; h* ones serve http mode, from pools
	// of backend connections that a reused listener keeps.
	names := []string{"l0", "l1", "l2", "l3", "h0", "h1", "h2"}
	// to returns a listener whose connections reach backends[b] (or
	// webs[b]).
	to := func(name string, b int) snapshot.Listener {
		if name[0] == 'h' {
			return listenerOn(name, httpModeRoute(webs[b].Addr))
		}
		if rnd.IntN(2) == 0 {
			return listenerOn(name, routeTo("ssh", snapshot.SSH, backends[(b+1)%len(backends)].Addr), routeTo("any", snapshot.Any, backends[b].Addr))
		}
		return listenerOn(name, routeTo("any", snapshot.Any, backends[b].Addr))
	}
	want := map[string]int{} // listener: the backend it reaches
	cur := &snapshot.Snapshot{}
	byDelta := newMux(t, dataplane.Options{})
	whole := newMux(t, dataplane.Options{})
	for step := range 25 {
		var d snapshot.Delta
		for _, i := range rnd.Perm(len(names))[:1+rnd.IntN(2)] {
			d.Set = append(d.Set, to(names[i], rnd.IntN(len(backends))))
		}
		if name := names[rnd.IntN(len(names))]; rnd.IntN(3) == 0 {
			d.Remove = append(d.Remove, name)
		}
		// One connection open across the delta, on a listener it may
		// leave alone or change.
		var open *openConn
		for name := range want {
			if name[0] == 'l' {
				open = dialOpen(t, byDelta.addr(name), want[name])
				break
			}
		}

		cur = cur.Patch(&d)
		want = map[string]int{}
		for i := range cur.Listeners {
			l := &cur.Listeners[i]
			for _, r := range l.Routes {
				for b := range backends {
					if r.Name == "any" && backends[b].Addr == r.Backend.Endpoints[0] ||
						r.Name == "web" && webs[b].Addr == r.Backend.Endpoints[0] {
						want[l.Name] = b
					}
				}
			}
		}
		byDelta.apply(cur)
		wire, err := snapshot.Encode(cur)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := snapshot.Decode(wire)
		if err != nil {
			t.Fatal(err)
		}
		whole.apply(fresh)

		for _, name := range names {
			b, served := want[name]
			for _, m := range []*testMux{byDelta, whole} {
				if !served {
					if a := m.Addr(name); a != nil {
						t.Fatalf("step %d: removed listener %s still bound at %s", step, name, a)
					}
					continue
				}
				if name[0] == 'h' {
					if resp, w := getOnce(t, m.addr(name), "www.test", "/"), fmt.Sprintf("web-%d GET /\n", b); !strings.HasSuffix(resp, w) {
						t.Fatalf("step %d: %s answered %q, want a body %q", step, name, resp, w)
					}
					continue
				}
				expectGreeting(t, m.addr(name), fmt.Sprintf("backend-%d\n", b))
			}
		}
		if open != nil {
			open.echo(t, fmt.Sprintf("step %d\n", step))
		}
	}
}

// openConn is a connection that a backend has greeted, kept open.
type openConn struct {
	c  net.Conn
	br *bufio.Reader
}

// dialOpen connects to addr and checks that backend-b greets it.
func dialOpen(t *testing.T, addr string, b int) *openConn {
	t.Helper()
	c := dial(t, addr)
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, "PROBE\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if got, want := readLine(t, br, c), fmt.Sprintf("backend-%d\n", b); got != want {
		t.Fatalf("connection to %s answered by %q, want %q", addr, got, want)
	}
	if got := readLine(t, br, c); got != "PROBE\n" {
		t.Fatalf("echo = %q", got)
	}
	return &openConn{c: c, br: br}
}

// echo checks that a line still makes the round trip, then closes.
func (o *openConn) echo(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(o.c, line); err != nil {
		t.Fatalf("connection open across a delta: %v", err)
	}
	if got := readLine(t, o.br, o.c); got != line {
		t.Fatalf("connection open across a delta echoed %q, want %q", got, line)
	}
	_ = o.c.Close()
}

// TestDeltaKeepsPooledHTTPConnectionsOfListenersItLeavesAlone: a delta
// that changes another listener does not retire the backend connections
// an http mode listener pools; its next request reuses one.
func TestDeltaKeepsPooledHTTPConnectionsOfListenersItLeavesAlone(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	other := greetingEchoBackend(t, "other\n")
	snap := snapshotOf(listenerOn("other", routeTo("any", snapshot.Any, other.Addr)), listenerOn("pub", httpModeRoute(web.Addr)))
	m := startMux(t, snap)
	if resp := getOnce(t, m.addr("pub"), "www.test", "/one"); !strings.HasSuffix(resp, "web GET /one\n") {
		t.Fatalf("response %q", resp)
	}
	m.apply(snap.Patch(&snapshot.Delta{Set: []snapshot.Listener{listenerOn("other", routeTo("ssh", snapshot.SSH, other.Addr))}}))
	if resp := getOnce(t, m.addr("pub"), "www.test", "/two"); !strings.HasSuffix(resp, "web GET /two\n") {
		t.Fatalf("response %q", resp)
	}
	reqs := web.Requests()
	if len(reqs) != 2 || reqs[0].RemoteAddr != reqs[1].RemoteAddr {
		t.Fatalf("requests came from %v: want both on the one pooled backend connection", reqs)
	}
}
