package compile

import (
	"reflect"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestIntersect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		listener string
		route    []gwv1.Hostname
		want     []string
		ok       bool
	}{
		{"no listener hostname takes the route's", "", []gwv1.Hostname{"a.example.com", "*.example.org"}, []string{"a.example.com", "*.example.org"}, true},
		{"exact equal", "a.example.com", []gwv1.Hostname{"a.example.com"}, []string{"a.example.com"}, true},
		{"route wildcard narrowed to the listener's name", "a.example.com", []gwv1.Hostname{"*.example.com"}, []string{"a.example.com"}, true},
		{"route name inside the listener's wildcard", "*.example.com", []gwv1.Hostname{"a.example.com", "a.example.net"}, []string{"a.example.com"}, true},
		{"deeper route wildcard inside", "*.example.com", []gwv1.Hostname{"*.a.example.com"}, []string{"*.a.example.com"}, true},
		{"wildcards match several labels", "*.example.com", []gwv1.Hostname{"a.b.example.com"}, []string{"a.b.example.com"}, true},
		{"the wildcard's own suffix is not matched", "*.example.com", []gwv1.Hostname{"example.com"}, nil, false},
		{"disjoint", "a.example.com", []gwv1.Hostname{"b.example.com"}, nil, false},
		{"duplicates collapse", "a.example.com", []gwv1.Hostname{"a.example.com", "*.example.com"}, []string{"a.example.com"}, true},
		{"no hostnames: the listener's", "a.example.com", nil, []string{"a.example.com"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := intersect(tc.listener, tc.route, true)
			if ok != tc.ok || !slices.Equal(got, tc.want) {
				t.Errorf("intersect(%q, %q) = %q, %v; want %q, %v", tc.listener, tc.route, got, ok, tc.want, tc.ok)
			}
		})
	}
	if got, ok := intersect("a.example.com", []gwv1.Hostname{"b.example.com"}, false); !ok || got != nil {
		t.Errorf("routes other than TLSRoutes ignore hostnames; got %q, %v", got, ok)
	}
}

func TestSpecificityOrder(t *testing.T) {
	want := []string{"a.b.example.com", "x.com", "*.a.b.example.com", "*.b.example.com", "*.com", ""}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortStableFunc(got, func(a, b string) int { return specificity(b) - specificity(a) })
	// Exact names rank alike; among them the input order stays.
	if got[0] != "x.com" || got[1] != "a.b.example.com" || !slices.Equal(got[2:], want[2:]) {
		t.Errorf("order %q, want exact names, then longer wildcards, then none: %q", got, want)
	}
}

func TestSameMinor(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"v1.6.3", "v1.6.3", true},
		{"v1.6.0", "v1.6.3", true},
		{"v1.5.0", "v1.6.3", false},
		{"", "v1.6.3", false},
		{"v1", "v1.6.3", false},
	} {
		if got := sameMinor(tc.a, tc.b); got != tc.want {
			t.Errorf("sameMinor(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// RouteStatus updates PortMux's entries where they stand and leaves other
// controllers' alone, so that two controllers never reorder each other's.
func TestRouteStatusKeepsPlaces(t *testing.T) {
	ref := func(name string) gwv1.ParentReference { return gwv1.ParentReference{Name: gwv1.ObjectName(name)} }
	then := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	accepted := []metav1.Condition{
		{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: reasonAccepted, Message: "attached to the Gateway", ObservedGeneration: 2, LastTransitionTime: then},
		{Type: ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: reasonResolvedRefs, Message: "all backendRefs resolved", ObservedGeneration: 2, LastTransitionTime: then},
	}
	old := gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{
		{ParentRef: ref("a"), ControllerName: GatewayControllerName, Conditions: accepted},
		{ParentRef: ref("x"), ControllerName: "example.net/other", Conditions: accepted},
		{ParentRef: ref("b"), ControllerName: GatewayControllerName, Conditions: accepted},
	}}
	res := &RouteResult{Parents: []RouteParentResult{
		{Ref: ref("c"), Refused: Finding{reasonNotAllowedByListeners, "no"}},
		{Ref: ref("b")},
	}}
	got := RouteStatus(old, 2, GatewayControllerName, res, now)
	var order []string
	for _, p := range got.Parents {
		order = append(order, string(p.ParentRef.Name))
	}
	if !slices.Equal(order, []string{"x", "b", "c"}) {
		t.Fatalf("parents %q, want x (theirs, in place), b (ours, in place), c (new, at the end); a dropped", order)
	}
	if c := got.Parents[1].Conditions[0]; !c.LastTransitionTime.Equal(&then) {
		t.Errorf("an unchanged condition moved its lastTransitionTime to %v", c.LastTransitionTime)
	}
	if c := got.Parents[2].Conditions[0]; c.Status != metav1.ConditionFalse || c.Reason != reasonNotAllowedByListeners || !c.LastTransitionTime.Equal(&now) {
		t.Errorf("new entry's Accepted: %+v", c)
	}
	if again := RouteStatus(got, 2, GatewayControllerName, res, now); !reflect.DeepEqual(again, got) {
		t.Errorf("recomputing an unchanged status changed it:\n%+v\n%+v", got, again)
	}
}

// Weights reach the dataplane as repetition: each endpoint appears in
// proportion to its backend's weight divided among its endpoints.
func TestWeightedEndpoints(t *testing.T) {
	tests := []struct {
		name string
		in   []weightedBackend
		want []string
	}{
		{"one backend", []weightedBackend{{1, []string{"b:1", "a:1"}}}, []string{"a:1", "b:1"}},
		{"70/20/10", []weightedBackend{{70, []string{"a:1"}}, {20, []string{"b:1"}}, {10, []string{"c:1"}}},
			[]string{"a:1", "a:1", "a:1", "a:1", "a:1", "a:1", "a:1", "b:1", "b:1", "c:1"}},
		{"weight split among endpoints", []weightedBackend{{2, []string{"a:1", "a:2"}}, {1, []string{"b:1"}}},
			[]string{"a:1", "a:2", "b:1"}},
		{"weight 0 takes nothing", []weightedBackend{{0, []string{"a:1"}}, {5, []string{"b:1"}}}, []string{"b:1"}},
		{"an endpoint of two backends gets both shares", []weightedBackend{{1, []string{"a:1"}}, {1, []string{"a:1", "b:1"}}},
			[]string{"a:1", "a:1", "a:1", "b:1"}},
		{"no endpoints", []weightedBackend{{1, nil}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := weightedEndpoints(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	big := weightedEndpoints([]weightedBackend{{1_000_000, []string{"a:1"}}, {1, []string{"b:1"}}})
	if len(big) > maxWeightedEndpoints+1 || !slices.Contains(big, "b:1") {
		t.Errorf("extreme weights: %d endpoints, b kept %v", len(big), slices.Contains(big, "b:1"))
	}
}
