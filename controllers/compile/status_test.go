package compile_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// What the golden files cannot show: how Status treats the status already
// on the object (the controller writes only when Status returns something
// different, so an unchanged outcome must return an equal status).

// knownStatusBugs mark tests that fail because of a bug in conditions.go;
// they are skipped while it is there and fail once it is fixed, so that the
// mark is removed with the fix.
var knownStatusBugs = map[string]string{}

// failing reports a failure of a test, or skips it when it is a known bug.
func failing(t *testing.T, format string, args ...any) {
	t.Helper()
	if bug, ok := knownStatusBugs[t.Name()]; ok {
		t.Skipf("known bug: %s\n"+format, append([]any{bug}, args...)...)
	}
	t.Errorf(format, args...)
}

// passing is called at the end of a test that a known bug makes fail.
func passing(t *testing.T) {
	t.Helper()
	if _, ok := knownStatusBugs[t.Name()]; ok && !t.Failed() && !t.Skipped() {
		t.Errorf("%s passes: the bug is fixed, remove it from knownStatusBugs", t.Name())
	}
}

var (
	t0 = metav1.NewTime(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(t0.Add(time.Minute))
)

func statusPortMux() *v1alpha1.PortMux {
	return &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "infra", Generation: 2},
	}
}

// servedResult is a Result with two served listeners and nothing wrong.
func servedResult() *compile.Result {
	return &compile.Result{Listeners: []compile.ListenerResult{
		{Name: "public", Port: ptr.To[int32](443), AttachedRoutes: 2, Snapshot: "infra/edge/public"},
		{Name: "alt", Port: ptr.To[int32](8443), AttachedRoutes: 1, Snapshot: "infra/edge/alt"},
	}}
}

func TestStatusUnchangedOutcomeIsEqual(t *testing.T) {
	pm := statusPortMux()
	pm.Status = compile.Status(pm, servedResult(), nil, t0)
	again := compile.Status(pm, servedResult(), nil, t1)
	if !equality.Semantic.DeepEqual(pm.Status, again) {
		t.Errorf("recomputing an unchanged outcome later changed the status:\nwas  %+v\nnow  %+v", pm.Status, again)
	}
}

func TestStatusTransitionTimes(t *testing.T) {
	pm := statusPortMux()
	pm.Status = compile.Status(pm, servedResult(), nil, t0)
	pm.Generation = 3
	st := compile.Status(pm, servedResult(), map[string]error{"infra/edge/alt": errors.New("bind: address already in use")}, t1)

	if st.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d, want 3", st.ObservedGeneration)
	}
	for _, c := range st.Conditions {
		want := t0 // unchanged status: the transition time stays
		if c.Type == compile.ConditionProgrammed || c.Type == compile.ConditionReady {
			want = t1
		}
		if !c.LastTransitionTime.Equal(&want) {
			t.Errorf("condition %s: lastTransitionTime %v, want %v", c.Type, c.LastTransitionTime, want)
		}
		if c.ObservedGeneration != 3 {
			t.Errorf("condition %s: observedGeneration %d, want 3", c.Type, c.ObservedGeneration)
		}
	}
	for _, ls := range st.Listeners {
		c := meta.FindStatusCondition(ls.Conditions, compile.ConditionProgrammed)
		want, status := t0, metav1.ConditionTrue
		if ls.Name == "alt" {
			want, status = t1, metav1.ConditionFalse
		}
		if c == nil || c.Status != status || !c.LastTransitionTime.Equal(&want) {
			t.Errorf("listener %s Programmed = %+v, want status %s since %v", ls.Name, c, status, want)
		}
	}
}

func TestStatusDoesNotModifyItsInput(t *testing.T) {
	pm := statusPortMux()
	pm.Status = compile.Status(pm, servedResult(), nil, t0)
	before := pm.DeepCopy()
	// A listener's outcome changes: its existing conditions get new values.
	compile.Status(pm, servedResult(), map[string]error{"infra/edge/public": errors.New("bind: permission denied")}, t1)
	if !equality.Semantic.DeepEqual(before, pm) {
		failing(t, "Status changed the PortMux it was given:\nbefore %+v\nafter  %+v", before.Status.Listeners, pm.Status.Listeners)
	}
	passing(t)
}

func TestStatusDropsListenersNoLongerDeclared(t *testing.T) {
	pm := statusPortMux()
	res := servedResult()
	pm.Status = compile.Status(pm, res, nil, t0)
	res.Listeners = res.Listeners[:1]
	st := compile.Status(pm, res, nil, t1)
	if len(st.Listeners) != 1 || st.Listeners[0].Name != "public" {
		t.Errorf("listeners %+v, want only public", st.Listeners)
	}
}

func TestStatusInvalidClearsListeners(t *testing.T) {
	pm := statusPortMux()
	pm.Status = compile.Status(pm, servedResult(), nil, t0)
	invalid := field.ErrorList{field.Invalid(field.NewPath("spec", "routes").Index(0).Child("match", "regex"), "(", "does not compile")}
	st := compile.Status(pm, &compile.Result{Invalid: invalid}, nil, t1)
	if st.Listeners != nil {
		t.Errorf("listeners %+v, want none for an invalid spec", st.Listeners)
	}
	for _, typ := range []string{compile.ConditionAccepted, compile.ConditionResolvedRefs, compile.ConditionProgrammed, compile.ConditionReady} {
		c := meta.FindStatusCondition(st.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != compile.ReasonInvalid || !c.LastTransitionTime.Equal(&t1) {
			t.Errorf("%s = %+v, want False Invalid since %v", typ, c, t1)
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, compile.ConditionAccepted); c != nil && !strings.Contains(c.Message, `spec.routes[0].match.regex: Invalid value: "(": does not compile`) {
		t.Errorf("Accepted message %q does not name the field", c.Message)
	}
}

func TestStatusMessagesFitTheAPI(t *testing.T) {
	pm := statusPortMux()
	res := servedResult()
	long := compile.Finding{Reason: compile.ReasonServiceNotFound, Message: "Service " + strings.Repeat("x", 40000) + " not found"}
	res.Refs = []compile.Finding{long}
	res.Listeners[0].Refs = []compile.Finding{long}
	st := compile.Status(pm, res, nil, t0)
	const limit = 32768 // metav1.Condition.Message maxLength
	conds := st.Conditions
	for _, ls := range st.Listeners {
		conds = append(conds, ls.Conditions...)
	}
	for _, c := range conds {
		if len(c.Message) > limit {
			t.Errorf("condition %s message is %d bytes, over the API's %d", c.Type, len(c.Message), limit)
		}
	}
}

// reasoned is an error from a dataplane that names its condition reason.
type reasoned struct{ reason string }

func (r reasoned) Error() string  { return "dataplane unreachable: connect: no such file or directory" }
func (r reasoned) Reason() string { return r.reason }

// An error that carries a reason (a dataplane in another process that does
// not answer) shows that reason, not BindFailed, on the listener and on
// the PortMux's Programmed and Ready conditions.
func TestStatusReasonFromTheError(t *testing.T) {
	for _, tc := range []struct {
		name string
		errs map[string]error
		want string
	}{
		{"a bind error", map[string]error{"infra/edge/public": errors.New("bind: address already in use")}, compile.ReasonBindFailed},
		{"an unreachable dataplane", map[string]error{
			"infra/edge/public": reasoned{compile.ReasonDataplaneUnreachable},
			"infra/edge/alt":    reasoned{compile.ReasonDataplaneUnreachable},
		}, compile.ReasonDataplaneUnreachable},
		{"wrapped", map[string]error{"infra/edge/alt": fmt.Errorf("apply: %w", reasoned{compile.ReasonDataplaneRefused})}, compile.ReasonDataplaneRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := compile.Status(statusPortMux(), servedResult(), tc.errs, t0)
			for _, typ := range []string{compile.ConditionProgrammed, compile.ConditionReady} {
				if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Reason != tc.want || c.Status != metav1.ConditionFalse {
					t.Errorf("%s: %+v, want False with reason %s", typ, c, tc.want)
				}
			}
			for _, l := range st.Listeners {
				c := meta.FindStatusCondition(l.Conditions, compile.ConditionProgrammed)
				if tc.errs["infra/edge/"+l.Name] != nil && (c == nil || c.Reason != tc.want) {
					t.Errorf("listener %s Programmed: %+v, want reason %s", l.Name, c, tc.want)
				}
			}
		})
	}
}
