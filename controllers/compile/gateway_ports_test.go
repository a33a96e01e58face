package compile

import (
	"regexp"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// Allocation keeps what Services record, never hands one port out twice,
// and is decided by the requests alone: the same requests give the same
// ports, whichever Gateways came and went.
func TestAllocatePorts(t *testing.T) {
	small := PortRange{From: 20000, To: 20002}
	fresh := func(keys ...string) []portRequest {
		var rs []portRequest
		for _, k := range keys {
			rs = append(rs, portRequest{key: k})
		}
		return rs
	}
	tests := []struct {
		name string
		r    PortRange
		reqs []portRequest
		// check the result against the requests.
		check func(t *testing.T, got []int32)
	}{
		{
			name: "previous ports are kept",
			r:    small,
			reqs: []portRequest{{key: "a", previous: 20002}, {key: "b", previous: 20000}},
			check: func(t *testing.T, got []int32) {
				if !slices.Equal(got, []int32{20002, 20000}) {
					t.Errorf("got %v, want [20002 20000]", got)
				}
			},
		},
		{
			name: "a previous port taken by an earlier request is reallocated",
			r:    small,
			reqs: []portRequest{{key: "a", previous: 20001}, {key: "b", previous: 20001}},
			check: func(t *testing.T, got []int32) {
				if got[0] != 20001 || got[1] == 20001 || got[1] == 0 {
					t.Errorf("got %v, want the first to keep 20001 and the second another", got)
				}
			},
		},
		{
			name: "a new request never takes a port a later request keeps",
			r:    small,
			reqs: []portRequest{{key: "new-1"}, {key: "new-2"}, {key: "old", previous: 20000}},
			check: func(t *testing.T, got []int32) {
				if got[2] != 20000 || slices.Contains(got[:2], 20000) {
					t.Errorf("got %v, want 20000 for the last only", got)
				}
			},
		},
		{
			name: "a previous port out of the range is not kept",
			r:    small,
			reqs: []portRequest{{key: "a", previous: 443}},
			check: func(t *testing.T, got []int32) {
				if got[0] < small.From || got[0] > small.To {
					t.Errorf("got %v, want a port of the range", got)
				}
			},
		},
		{
			name: "an exhausted range gives 0 to the requests beyond it",
			r:    small,
			reqs: fresh("a", "b", "c", "d"),
			check: func(t *testing.T, got []int32) {
				if got[3] != 0 || slices.Contains(got[:3], 0) {
					t.Errorf("got %v, want three ports then 0", got)
				}
				if s := slices.Sorted(slices.Values(got[:3])); !slices.Equal(s, []int32{20000, 20001, 20002}) {
					t.Errorf("got %v, want each port of the range once", got)
				}
			},
		},
		{
			name: "a lone request gets the port its key hashes to, whatever else exists",
			r:    PortRange{From: 20000, To: 20999},
			reqs: fresh("x/y/TCP/80"),
			check: func(t *testing.T, got []int32) {
				again := allocatePorts(PortRange{From: 20000, To: 20999}, fresh("other/TCP/1", "x/y/TCP/80"))
				if again[1] != got[0] && again[0] != got[0] {
					t.Errorf("got %d alone and %v with another request: allocation depends on others though no collision", got[0], again)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := allocatePorts(tt.r, tt.reqs)
			if len(got) != len(tt.reqs) {
				t.Fatalf("got %d ports for %d requests", len(got), len(tt.reqs))
			}
			tt.check(t, got)
			if again := allocatePorts(tt.r, tt.reqs); !slices.Equal(again, got) {
				t.Errorf("not deterministic: %v then %v", got, again)
			}
		})
	}
}

// Service names are DNS labels, distinct where namespace/name differ.
func TestGatewayServiceName(t *testing.T) {
	label := regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	long := types.NamespacedName{Namespace: "a-very-long-namespace-name-for-a-team-that-likes-long-names", Name: "gateway.with.dots.and-a-long-name-too"}
	cases := []types.NamespacedName{
		{Namespace: "a-b", Name: "c"}, {Namespace: "a", Name: "b-c"}, long,
		{Namespace: long.Namespace, Name: long.Name + "x"}, {Namespace: "infra", Name: "same-namespace"},
	}
	seen := map[string]types.NamespacedName{}
	for _, c := range cases {
		n := GatewayServiceName(c)
		if !label.MatchString(n) {
			t.Errorf("%s: %q is not a DNS label", c, n)
		}
		if o, dup := seen[n]; dup {
			t.Errorf("%s and %s share the name %q", o, c, n)
		}
		seen[n] = c
	}
}
