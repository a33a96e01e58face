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
