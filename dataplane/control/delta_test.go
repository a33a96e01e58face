package control_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/snapshot"
)

func encodeDelta(t *testing.T, d *snapshot.Delta) []byte { return encoded(t, snapshot.EncodeDelta, d) }

// A delta applies to the snapshot it names and to no other: before any
// snapshot and for another version the dataplane answers 409 (the
// controller then sends the whole snapshot); one that does not decode,
// or makes a snapshot that does not hold together, is refused with 400.
// Refused or not, the dataplane keeps serving what it had.
func TestDelta(t *testing.T) {
	dp := &fakeDataplane{}
	c, _, _ := serve(t, dp, nil)
	second := snapshot.Listener{Name: "ns/pm/second", Address: "127.0.0.1:0",
		Routes: []snapshot.Route{{Name: "ns/pm/any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "c"}}}}
	add := encodeDelta(t, &snapshot.Delta{Set: []snapshot.Listener{second}})
	if _, err := c.ApplyDelta(ctx(t), "", add); !control.IsBaseMismatch(err) {
		t.Fatalf("a delta before any snapshot: %v, want 409", err)
	}
	first := encode(t, oneListener)
	if _, err := c.Apply(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	base := control.Version(first)
	for _, tc := range []struct {
		name, base, want string
		body             []byte
		code             int
	}{
		{"another version", "sha256:other", "serves version", add, http.StatusConflict},
		{"not JSON", base, "decode delta", []byte("{"), http.StatusBadRequest},
		{"an unknown field", base, `unknown field "Extra"`, []byte(`{"format":1,"delta":{"Extra":1}}`), http.StatusBadRequest},
		{"streams handed to a bound listener", base, "a route hands streams to internal listeners only", encodeDelta(t, &snapshot.Delta{Set: []snapshot.Listener{{
			Name: "ns/pm/other", Address: "127.0.0.1:0",
			Routes: []snapshot.Route{{Name: "ns/pm/tls", Match: snapshot.Match{Protocol: snapshot.TLS}, Listener: "ns/pm/public"}},
		}}}), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ApplyDelta(ctx(t), tc.base, tc.body)
			var se *control.StatusError
			if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(se.Message, tc.want) {
				t.Fatalf("PUT /delta: %v; want %d mentioning %q", err, tc.code, tc.want)
			}
			st, err := c.State(ctx(t))
			if err != nil || st.Version != base || dp.count() != 1 {
				t.Errorf("after a refused delta: state %+v (%v), %d applied; want the first still", st, err, dp.count())
			}
		})
	}

	st, err := c.ApplyDelta(ctx(t), base, add)
	if err != nil {
		t.Fatal(err)
	}
	if want := control.DeltaVersion(base, add); st.Version != want {
		t.Errorf("version after the delta %q, want %q", st.Version, want)
	}
	drop := encodeDelta(t, &snapshot.Delta{Remove: []string{"ns/pm/public"}})
	if _, err := c.ApplyDelta(ctx(t), st.Version, drop); err != nil {
		t.Fatal(err)
	}
	if n := dp.count(); n != 3 {
		t.Fatalf("%d snapshots applied, want 3", n)
	}
	var names [][]string
	for _, s := range dp.applied {
		var ns []string
		for _, l := range s.Listeners {
			ns = append(ns, l.Name)
		}
		names = append(names, ns)
	}
	if got := strings.Join(names[1], ",") + " then " + strings.Join(names[2], ","); got != "ns/pm/public,ns/pm/second then ns/pm/second" {
		t.Errorf("the dataplane served %s", got)
	}
}
