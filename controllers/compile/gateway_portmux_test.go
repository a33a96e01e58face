package compile_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// The listener conditions of PortMuxes attached to Gateway listeners (the
// golden output shows their top-level conditions): which Gateway listeners
// took them, on which port, and which routes' SNI names the Gateway keeps.
func TestPortMuxOnGatewayListenerStatus(t *testing.T) {
	load := func(name string) (*goldenCase, *compile.Output) {
		c := loadGatewayCase(t, filepath.Join("testdata", "gateway", name+".in.yaml"))
		return c, compile.Compile(c.in)
	}
	shared, sharedOut := load("portmux-on-gateway-listeners")
	own, ownOut := load("portmux-on-gateway-service")
	now := metav1.NewTime(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	type want struct {
		typ, status, reason string
		says                []string
	}
	for _, tc := range []struct {
		pm       string
		listener int
		port     int32 // 0: none
		attached int32
		want     []want
	}{
		{"team/tunnels", 0, 443, 5, []want{
			{compile.ConditionAccepted, "True", compile.ReasonAccepted, []string{"listener tls, tcp of Gateway infra/edge"}},
			{compile.ConditionConflicted, "True", compile.ReasonHostnameConflict, []string{
				"route steal: sni www.example.com is claimed by TLSRoute infra/site on listener tls of Gateway infra/edge",
				"route steal: sni *.sites.example.com is within hostname *.sites.example.com of listener sites of Gateway infra/edge",
			}},
			{compile.ConditionProgrammed, "True", compile.ReasonProgrammed, nil},
		}},
		{"team2/probes", 0, 443, 1, []want{
			{compile.ConditionAccepted, "True", compile.ReasonAccepted, []string{"listener tls of Gateway infra/edge"}},
			{compile.ConditionConflicted, "False", compile.ReasonNoConflicts, nil},
		}},
		{"other/outsider", 0, 0, 1, []want{
			{compile.ConditionAccepted, "False", compile.ReasonNotAllowedByListeners, []string{"Gateway infra/edge", "namespace other"}},
			{compile.ConditionProgrammed, "False", compile.ReasonNotAllowedByListeners, []string{"not attached to Gateway infra/edge"}},
		}},
		{"team/lost", 0, 0, 1, []want{
			{compile.ConditionAccepted, "False", compile.ReasonNoMatchingParent, []string{"Gateway infra/edge has no listener nope"}},
		}},
		{"team/nowhere", 0, 0, 1, []want{
			{compile.ConditionAccepted, "False", compile.ReasonNoMatchingParent, []string{"Gateway infra/gone is not found"}},
		}},
		// Per-Gateway Services: the status port is the Gateway
		// listener's, not the dataplane port it is bound on.
		{"ops/shell", 0, 443, 4, []want{
			{compile.ConditionAccepted, "True", compile.ReasonAccepted, []string{"listener passthrough of Gateway apps/edge"}},
			{compile.ConditionConflicted, "True", compile.ReasonHostnameConflict, []string{
				"route tls: sni admin.example.com (every name) is claimed by TLSRoute apps/everything on listener passthrough",
			}},
		}},
		{"ops/shell", 1, 0, 0, []want{
			{compile.ConditionAccepted, "False", compile.ReasonNotAllowedByListeners, []string{"Gateway apps/edge"}},
		}},
	} {
		t.Run(tc.pm, func(t *testing.T) {
			ns, name, _ := strings.Cut(tc.pm, "/")
			key := types.NamespacedName{Namespace: ns, Name: name}
			c, out := shared, sharedOut
			if ns == "ops" {
				c, out = own, ownOut
			}
			res := out.Results[key]
			if res == nil {
				t.Fatalf("no result for PortMux %s", tc.pm)
			}
			pm := findPortMux(t, c, key)
			st := compile.Status(pm, res, nil, now)
			if len(st.Listeners) <= tc.listener {
				t.Fatalf("listeners %+v, want a listener %d", st.Listeners, tc.listener)
			}
			ls := st.Listeners[tc.listener]
			if got := ptrValue(ls.Port); got != tc.port {
				t.Errorf("status port %d, want %d (the Gateway listener's)", got, tc.port)
			}
			if tc.listener == 0 && (st.Ports == "") != (tc.port == 0) || tc.port != 0 && !strings.Contains(st.Ports, strconv.Itoa(int(tc.port))) {
				t.Errorf("status.ports %q, want the Gateway listener's port %d when attached", st.Ports, tc.port)
			}
			if ls.AttachedRoutes != tc.attached {
				t.Errorf("attachedRoutes %d, want %d", ls.AttachedRoutes, tc.attached)
			}
			for _, w := range tc.want {
				cond := meta.FindStatusCondition(ls.Conditions, w.typ)
				if cond == nil {
					t.Errorf("no listener condition %s in %+v", w.typ, ls.Conditions)
					continue
				}
				if string(cond.Status) != w.status || cond.Reason != w.reason {
					t.Errorf("%s=%s %s (%s), want %s %s", w.typ, cond.Status, cond.Reason, cond.Message, w.status, w.reason)
				}
				for _, s := range w.says {
					if !strings.Contains(cond.Message, s) {
						t.Errorf("%s message %q does not say %q", w.typ, cond.Message, s)
					}
				}
			}
		})
	}
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func findPortMux(t *testing.T, c *goldenCase, key types.NamespacedName) *v1alpha1.PortMux {
	t.Helper()
	for i := range c.in.PortMuxes {
		if pm := &c.in.PortMuxes[i]; pm.Namespace == key.Namespace && pm.Name == key.Name {
			return pm
		}
	}
	t.Fatalf("no PortMux %s in the input", key)
	return nil
}

// Without the Gateway API (portmux serve, --gateway-api off) a listener
// with a parentRef has nothing to attach to, and says why.
func TestPortMuxParentRefWithoutGatewayAPI(t *testing.T) {
	pm := v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shell", Generation: 1},
		Spec: v1alpha1.PortMuxSpec{
			Listeners: []v1alpha1.Listener{{Name: "shared", ParentRef: &v1alpha1.GatewayListenerRef{Name: "edge"}}},
			Routes: []v1alpha1.Route{{Name: "ssh", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolSSH},
				Backend: &v1alpha1.Backend{Address: "127.0.0.1:22"}}},
		},
	}
	out := compile.Compile(compile.Input{PortMuxes: []v1alpha1.PortMux{pm}, AllowAddressBackends: true})
	if n := len(out.Snapshot.Listeners); n != 0 {
		t.Errorf("snapshot has %d listeners, want none: %+v", n, out.Snapshot.Listeners)
	}
	st := compile.Status(&pm, out.Results[types.NamespacedName{Namespace: "team", Name: "shell"}], nil, metav1.Now())
	c := meta.FindStatusCondition(st.Conditions, compile.ConditionAccepted)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != compile.ReasonNoMatchingParent || !strings.Contains(c.Message, "Gateway team/edge") || !strings.Contains(c.Message, "Gateway API is off") {
		t.Errorf("Accepted: %+v, want False NoMatchingParent naming Gateway team/edge and the Gateway API being off", c)
	}
}
