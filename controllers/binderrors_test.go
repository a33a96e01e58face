package controllers

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/portmux/portmux/controllers/compile"
)

func TestBindErrorOwners(t *testing.T) {
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}
	c := types.NamespacedName{Namespace: "ns", Name: "c"}
	results := map[types.NamespacedName]*compile.Result{
		a: {Listeners: []compile.ListenerResult{{Name: "public", Snapshot: "ns/a/public"}, {Name: "alt", Snapshot: "ns/a/alt"}}},
		b: {Listeners: []compile.ListenerResult{{Name: "public", Snapshot: "ns/b/public"}}},
		// c's listener is not served (a conflict): its name is never
		// a snapshot's.
		c: {Listeners: []compile.ListenerResult{{Name: "public", Snapshot: ""}}},
	}
	inUse := errors.New("bind 127.0.0.1:443: address already in use")
	denied := errors.New("bind 127.0.0.1:443: permission denied")
	for _, tc := range []struct {
		name          string
		before, after map[string]error
		want          []types.NamespacedName
	}{
		{"none before or after", nil, nil, nil},
		{"the same error stays: nobody", map[string]error{"ns/a/public": inUse}, map[string]error{"ns/a/public": inUse}, nil},
		{"an error comes", nil, map[string]error{"ns/b/public": inUse}, []types.NamespacedName{b}},
		{"an error goes", map[string]error{"ns/a/alt": inUse}, nil, []types.NamespacedName{a}},
		{"an error changes", map[string]error{"ns/a/public": inUse}, map[string]error{"ns/a/public": denied}, []types.NamespacedName{a}},
		{"one goes, another comes", map[string]error{"ns/a/public": inUse}, map[string]error{"ns/b/public": inUse}, []types.NamespacedName{a, b}},
		{"a listener nobody owns", nil, map[string]error{"gone/x/public": inUse}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slices.SortedFunc(maps.Keys(bindErrorOwners(results, tc.before, tc.after)), func(x, y types.NamespacedName) int {
				return strings.Compare(x.String(), y.String())
			})
			if !slices.Equal(got, tc.want) {
				t.Errorf("owners %v, want %v", got, tc.want)
			}
		})
	}
}
