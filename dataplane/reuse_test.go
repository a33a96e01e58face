package dataplane

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// TestApplyReusesListenersADeltaLeavesAlone: a snapshot patched with a
// delta keeps the compiled configuration (TLS configuration, route
// table, backend pools) of every listener the delta does not set, and
// compiles the one it sets; a snapshot decoded afresh compiles them all.
func TestApplyReusesListenersADeltaLeavesAlone(t *testing.T) {
	s := NewServer(Options{Log: logr.Discard()})
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	cert := peers.CertPair(t, "www.test").TLS
	listener := func(name, endpoint string) snapshot.Listener {
		return snapshot.Listener{
			Name: name, Address: "127.0.0.1:0", ProbeTimeout: time.Second, MaxProbeBytes: snapshot.DefaultMaxProbeBytes,
			TLS: &snapshot.TLSConfig{ALPN: []string{"http/1.1"}, Certificates: []snapshot.Certificate{{Source: "test", Certificate: cert}}},
			Routes: []snapshot.Route{{
				Name: "web", Match: snapshot.Match{Protocol: snapshot.HTTP},
				Backend: &snapshot.Backend{Name: "web", Mode: snapshot.ModeHTTP, Endpoints: []string{endpoint}, DialTimeout: time.Second},
			}},
		}
	}
	apply := func(snap *snapshot.Snapshot) *config {
		t.Helper()
		if errs := s.Apply(snap); len(errs) > 0 {
			t.Fatalf("Apply: %v", errs)
		}
		return s.cfg.Load()
	}
	base := &snapshot.Snapshot{Listeners: []snapshot.Listener{listener("a", "127.0.0.1:1"), listener("b", "127.0.0.1:2"), listener("c", "127.0.0.1:3")}}
	before := apply(base)
	after := apply(base.Patch(&snapshot.Delta{Set: []snapshot.Listener{listener("b", "127.0.0.1:4")}, Remove: []string{"c"}}))

	for _, name := range []string{"a", "b"} {
		old, cur := before.listeners[name], after.listeners[name]
		kept := name == "a"
		if same := cur.tls == old.tls; same != kept {
			t.Errorf("listener %s: TLS configuration kept = %v, want %v", name, same, kept)
		}
		if same := cur.routes[0].transport == old.routes[0].transport; same != kept {
			t.Errorf("listener %s: backend pool kept = %v, want %v", name, same, kept)
		}
		if same := cur == old; same != kept {
			t.Errorf("listener %s: compiled configuration kept = %v, want %v", name, same, kept)
		}
		// It holds a copy of its listener, not the snapshot's listeners,
		// so that an old snapshot can be collected.
		if cur.Listener == &after.snap.Listeners[indexOf(after.snap, name)] || cur.Listener == &before.snap.Listeners[indexOf(before.snap, name)] {
			t.Errorf("listener %s: its configuration points into a snapshot", name)
		}
	}
	if got := after.listeners["b"].routes[0].Backend.Endpoints; !reflect.DeepEqual(got, []string{"127.0.0.1:4"}) {
		t.Errorf("listener b routes to %v after the delta", got)
	}
	if after.listeners["c"] != nil {
		t.Error("removed listener c is still configured")
	}

	wire, err := snapshot.Encode(after.snap)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := snapshot.Decode(wire)
	if err != nil {
		t.Fatal(err)
	}
	fresh := apply(decoded)
	if fresh.listeners["a"].tls == after.listeners["a"].tls {
		t.Error("a decoded snapshot reused a compiled listener it cannot know is the same")
	}
}

func indexOf(snap *snapshot.Snapshot, name string) int {
	for i := range snap.Listeners {
		if snap.Listeners[i].Name == name {
			return i
		}
	}
	return -1
}

func TestSameListener(t *testing.T) {
	routes := []snapshot.Route{{Name: "r"}}
	tlsCfg, pp := &snapshot.TLSConfig{}, &snapshot.ProxyProtocol{}
	base := snapshot.Listener{Name: "l", Address: ":1", Routes: routes, TLS: tlsCfg, ProxyProtocol: pp}
	for _, tc := range []struct {
		name   string
		change func(l *snapshot.Listener)
		want   bool
	}{
		{"a copy", func(*snapshot.Listener) {}, true},
		{"equal routes, another array", func(l *snapshot.Listener) { l.Routes = []snapshot.Route{{Name: "r"}} }, false},
		{"fewer routes of the same array", func(l *snapshot.Listener) { l.Routes = l.Routes[:0] }, false},
		{"another TLS configuration", func(l *snapshot.Listener) { l.TLS = &snapshot.TLSConfig{} }, false},
		{"another PROXY setting", func(l *snapshot.Listener) { l.ProxyProtocol = nil }, false},
		{"another address", func(l *snapshot.Listener) { l.Address = ":2" }, false},
		{"another cap", func(l *snapshot.Listener) { l.MaxConnections = 1 }, false},
		{"another per-client cap", func(l *snapshot.Listener) { l.MaxConnectionsPerClient = 1 }, false},
		{"another per-client rate", func(l *snapshot.Listener) { l.MaxConnectionRatePerClient = 1 }, false},
		{"another probe timeout", func(l *snapshot.Listener) { l.ProbeTimeout = 1 }, false},
		{"another probe size", func(l *snapshot.Listener) { l.MaxProbeBytes = 1 }, false},
		{"another transport", func(l *snapshot.Listener) { l.Transport = snapshot.UDP }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := base
			tc.change(&l)
			if got := sameListener(&base, &l); got != tc.want {
				t.Errorf("sameListener = %v, want %v", got, tc.want)
			}
		})
	}
	// sameListener compares each field of Listener: a new one must be
	// compared too (and counted here).
	if n := reflect.TypeOf(snapshot.Listener{}).NumField(); n != 11 {
		t.Errorf("snapshot.Listener has %d fields; sameListener compares 11", n)
	}
}
