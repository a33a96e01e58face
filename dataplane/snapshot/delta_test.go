package snapshot_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// Patch replaces, adds and removes listeners by name, keeps them sorted,
// takes the delta's MaxConnections and leaves the snapshot it patches
// alone.
func TestPatch(t *testing.T) {
	l := func(name, addr string) snapshot.Listener { return snapshot.Listener{Name: name, Address: addr} }
	base := &snapshot.Snapshot{MaxConnections: 5, Listeners: []snapshot.Listener{l("a", "1"), l("c", "1"), l("e", "1")}}
	for _, tc := range []struct {
		name  string
		delta snapshot.Delta
		want  string
	}{
		{"nothing", snapshot.Delta{MaxConnections: 5}, "a=1 c=1 e=1 max=5"},
		{"replace", snapshot.Delta{MaxConnections: 5, Set: []snapshot.Listener{l("c", "2")}}, "a=1 c=2 e=1 max=5"},
		{"add in order", snapshot.Delta{MaxConnections: 5, Set: []snapshot.Listener{l("f", "2"), l("b", "2")}}, "a=1 b=2 c=1 e=1 f=2 max=5"},
		{"remove", snapshot.Delta{MaxConnections: 5, Remove: []string{"a", "e", "zz"}}, "c=1 max=5"},
		{"set wins over remove", snapshot.Delta{MaxConnections: 5, Set: []snapshot.Listener{l("a", "3")}, Remove: []string{"a"}}, "a=3 c=1 e=1 max=5"},
		{"max connections", snapshot.Delta{MaxConnections: 9}, "a=1 c=1 e=1 max=9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := base.Patch(&tc.delta)
			var b strings.Builder
			for _, l := range got.Listeners {
				b.WriteString(l.Name + "=" + l.Address + " ")
			}
			if s := b.String() + "max=" + strconv.Itoa(got.MaxConnections); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
			if len(base.Listeners) != 3 || base.Listeners[1].Address != "1" || base.MaxConnections != 5 {
				t.Errorf("the patched snapshot changed: %+v", base)
			}
		})
	}
}

// A delta crosses the wire as it was; what is not a delta of this format
// is refused.
func TestDeltaWire(t *testing.T) {
	d := &snapshot.Delta{MaxConnections: 3, Set: []snapshot.Listener{{Name: "a", Address: "127.0.0.1:1"}}, Remove: []string{"b"}}
	b, err := snapshot.EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := snapshot.DecodeDelta(b)
	if err != nil || got.MaxConnections != 3 || len(got.Set) != 1 || got.Set[0].Address != "127.0.0.1:1" || len(got.Remove) != 1 || got.Remove[0] != "b" {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	for body, want := range map[string]string{
		`{"format":99,"delta":{}}`:     "wire format 99",
		`{"format":1}`:                 "no delta",
		`{"format":1,"delta":{"X":1}}`: `unknown field "X"`,
		`{"format":1,"delta":{}} {}`:   "data after the delta",
	} {
		if _, err := snapshot.DecodeDelta([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}

// PatchValid refuses exactly the deltas whose patched snapshot fails
// Validate.
func TestPatchValidAgreesWithValidate(t *testing.T) {
	fwd := func(name string) snapshot.Route {
		return snapshot.Route{Name: name, Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: name, Endpoints: []string{"127.0.0.1:1"}}}
	}
	hand := func(to string) snapshot.Route {
		return snapshot.Route{Name: "to-" + to, Match: snapshot.Match{Protocol: snapshot.TLS}, Listener: to}
	}
	l := func(name, addr string, routes ...snapshot.Route) snapshot.Listener {
		return snapshot.Listener{Name: name, Address: addr, Routes: routes}
	}
	base := &snapshot.Snapshot{Listeners: []snapshot.Listener{
		l("in", "", fwd("web")), l("other", ":2", fwd("x")), l("pub", ":1", hand("in"), fwd("ssh")),
	}}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		delta snapshot.Delta
		valid bool
	}{
		{"a route changes", snapshot.Delta{Set: []snapshot.Listener{l("other", ":2", fwd("y"))}}, true},
		{"a new listener hands to the internal one", snapshot.Delta{Set: []snapshot.Listener{l("new", ":3", hand("in"))}}, true},
		{"a new listener hands to a bound one", snapshot.Delta{Set: []snapshot.Listener{l("new", ":3", hand("other"))}}, false},
		{"a new listener hands to one of the delta that binds", snapshot.Delta{Set: []snapshot.Listener{l("new", ":3", hand("b")), l("b", ":4", fwd("b"))}}, false},
		{"a new listener hands to one of the delta that is internal", snapshot.Delta{Set: []snapshot.Listener{l("new", ":3", hand("b")), l("b", "", fwd("b"))}}, true},
		{"the internal listener binds, a listener left alone hands to it", snapshot.Delta{Set: []snapshot.Listener{l("in", ":5", fwd("web"))}}, false},
		{"the internal listener is removed", snapshot.Delta{Remove: []string{"in"}}, true},
		{"a listener without a name", snapshot.Delta{Set: []snapshot.Listener{l("", ":3", fwd("a"))}}, false},
		{"a listener set twice", snapshot.Delta{Set: []snapshot.Listener{l("new", ":3", fwd("a")), l("new", ":4", fwd("a"))}}, false},
		{"a bad address", snapshot.Delta{Set: []snapshot.Listener{l("other", "nope", fwd("a"))}}, false},
		{"a route with no action", snapshot.Delta{Set: []snapshot.Listener{l("other", ":2", snapshot.Route{Name: "none", Match: snapshot.Match{Protocol: snapshot.Any}})}}, false},
		{"negative maxConnections", snapshot.Delta{MaxConnections: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := base.Patch(&tc.delta).Validate(); (err == nil) != tc.valid {
				t.Fatalf("the table is wrong: Validate = %v", err)
			}
			next, err := base.PatchValid(&tc.delta)
			if (err == nil) != tc.valid {
				t.Fatalf("PatchValid = %v, want valid %v", err, tc.valid)
			}
			if err == nil && len(next.Listeners) != len(base.Patch(&tc.delta).Listeners) {
				t.Fatalf("PatchValid's snapshot has %d listeners", len(next.Listeners))
			}
		})
	}
}

// ValidateExcept takes the listeners it is told were checked on trust,
// but not the listeners they hand streams to, which may have changed.
func TestValidateExcept(t *testing.T) {
	hand := snapshot.Route{Name: "to-in", Match: snapshot.Match{Protocol: snapshot.TLS}, Listener: "in"}
	trusted := snapshot.Listener{Name: "pub", Address: "not an address", Routes: []snapshot.Route{hand}}
	fwd := snapshot.Route{Name: "web", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "web", Endpoints: []string{"127.0.0.1:1"}}}
	onTrust := func(l *snapshot.Listener) bool { return l.Name == "pub" }
	for _, tc := range []struct {
		name  string
		in    snapshot.Listener
		valid bool
	}{
		{"the listener handed to is internal", snapshot.Listener{Name: "in", Routes: []snapshot.Route{fwd}}, true},
		{"the listener handed to binds", snapshot.Listener{Name: "in", Address: ":1", Routes: []snapshot.Route{fwd}}, false},
		{"the listener handed to is checked", snapshot.Listener{Name: "in", Routes: []snapshot.Route{{Name: "none"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &snapshot.Snapshot{Listeners: []snapshot.Listener{tc.in, trusted}}
			if err := snap.ValidateExcept(onTrust); (err == nil) != tc.valid {
				t.Fatalf("ValidateExcept = %v, want valid %v", err, tc.valid)
			}
			if err := snap.Validate(); err == nil {
				t.Fatal("Validate took the listener with a bad address")
			}
		})
	}
}

// Validate finds a missing or repeated name and a hand-off to a bound
// listener whether the listeners are sorted by name or not.
func TestValidateNamesSortedOrNot(t *testing.T) {
	fwd := snapshot.Route{Name: "web", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "web", Endpoints: []string{"127.0.0.1:1"}}}
	hand := func(to string) snapshot.Route {
		return snapshot.Route{Name: "to", Match: snapshot.Match{Protocol: snapshot.TLS}, Listener: to}
	}
	l := func(name, addr string, r snapshot.Route) snapshot.Listener {
		return snapshot.Listener{Name: name, Address: addr, Routes: []snapshot.Route{r}}
	}
	for _, tc := range []struct {
		name      string
		listeners []snapshot.Listener
		want      string
	}{
		{"sorted", []snapshot.Listener{l("a", ":1", hand("b")), l("b", "", fwd)}, ""},
		{"unsorted", []snapshot.Listener{l("b", "", fwd), l("a", ":1", hand("b"))}, ""},
		{"sorted, a name twice", []snapshot.Listener{l("a", ":1", fwd), l("a", ":2", fwd)}, "declared twice"},
		{"unsorted, a name twice", []snapshot.Listener{l("a", ":1", fwd), l("b", ":2", fwd), l("a", ":3", fwd)}, "declared twice"},
		{"sorted, no name", []snapshot.Listener{l("", ":1", fwd), l("a", ":2", fwd)}, "has no name"},
		{"unsorted, no name", []snapshot.Listener{l("a", ":1", fwd), l("", ":2", fwd)}, "has no name"},
		{"sorted, hand-off to a bound listener", []snapshot.Listener{l("a", ":1", hand("b")), l("b", ":2", fwd)}, "binds a port"},
		{"unsorted, hand-off to a bound listener", []snapshot.Listener{l("b", ":2", fwd), l("a", ":1", hand("b"))}, "binds a port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&snapshot.Snapshot{Listeners: tc.listeners}).Validate()
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
