package compile

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// conditionSetter sets conditions of one object generation at one time,
// keeping LastTransitionTime when a status holds, so that recomputing an
// unchanged status gives an equal one (and no write).
type conditionSetter struct {
	gen int64
	now metav1.Time
}

func (s conditionSetter) set(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: truncate(msg), ObservedGeneration: s.gen, LastTransitionTime: s.now,
	})
}

func (s conditionSetter) setBool(conds *[]metav1.Condition, typ string, ok bool, reason, msg string) {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	s.set(conds, typ, st, reason, msg)
}

// GatewayClassStatus computes the status of a GatewayClass of ours. The
// conditions of other types (another controller's) are kept.
func GatewayClassStatus(gc *gwv1.GatewayClass, res *GatewayClassResult, now metav1.Time) gwv1.GatewayClassStatus {
	st := *gc.Status.DeepCopy()
	s := conditionSetter{gc.Generation, now}
	if res.Refused.Reason != "" {
		s.setBool(&st.Conditions, ConditionAccepted, false, res.Refused.Reason, res.Refused.Message)
	} else {
		s.setBool(&st.Conditions, ConditionAccepted, true, reasonAccepted, "PortMux serves the Gateways of this class")
	}
	if res.SupportedVersion {
		s.setBool(&st.Conditions, "SupportedVersion", true, reasonSupportedVersion, res.VersionMessage)
	} else {
		s.setBool(&st.Conditions, "SupportedVersion", false, reasonUnsupportedVersion, res.VersionMessage)
	}
	st.SupportedFeatures = nil
	for _, f := range SupportedFeatures() {
		st.SupportedFeatures = append(st.SupportedFeatures, gwv1.SupportedFeature{Name: f})
	}
	return st
}

// GatewayStatus computes a Gateway's status from its Result and the bind
// errors the dataplane returned (by snapshot listener name).
//
// A listener is Programmed when its snapshot listener is bound. The
// Gateway is Accepted when at least one listener is (reason
// ListenersNotValid when some are not), Programmed when every accepted
// listener is and it has an address (when a dataplane Service is
// configured).
func GatewayStatus(gw *gwv1.Gateway, res *GatewayResult, bindErrs map[string]error, now metav1.Time) gwv1.GatewayStatus {
	st := *gw.Status.DeepCopy()
	s := conditionSetter{gw.Generation, now}
	st.Addresses = slices.Clone(res.Addresses)
	if res.Refused.Reason != "" {
		s.setBool(&st.Conditions, ConditionAccepted, false, res.Refused.Reason, res.Refused.Message)
		s.setBool(&st.Conditions, ConditionProgrammed, false, reasonInvalid, "not programmed: the Gateway is not accepted")
		st.Listeners = nil
		return st
	}
	old := map[gwv1.SectionName]gwv1.ListenerStatus{}
	for _, l := range st.Listeners {
		old[l.Name] = l
	}
	var refused, unresolved, unprogrammed, accepted []string
	st.Listeners = make([]gwv1.ListenerStatus, 0, len(res.Listeners))
	for _, lr := range res.Listeners {
		ls := gwv1.ListenerStatus{
			Name: gwv1.SectionName(lr.Name), AttachedRoutes: lr.AttachedRoutes,
			SupportedKinds: slices.Clone(lr.SupportedKinds), Conditions: old[gwv1.SectionName(lr.Name)].Conditions,
		}
		if ls.SupportedKinds == nil {
			ls.SupportedKinds = []gwv1.RouteGroupKind{}
		}
		if lr.Conflicted.Reason != "" {
			s.setBool(&ls.Conditions, "Conflicted", true, lr.Conflicted.Reason, lr.Conflicted.Message)
		} else {
			s.setBool(&ls.Conditions, "Conflicted", false, reasonNoConflicts, "no conflict with the other listeners")
		}
		if lr.Refused.Reason != "" {
			refused = append(refused, lr.Name+": "+lr.Refused.Message)
			s.setBool(&ls.Conditions, ConditionAccepted, false, lr.Refused.Reason, lr.Refused.Message)
		} else {
			accepted = append(accepted, lr.Name)
			s.setBool(&ls.Conditions, ConditionAccepted, true, reasonAccepted, "listener accepted")
		}
		if len(lr.Refs) > 0 {
			unresolved = append(unresolved, lr.Name)
			s.setBool(&ls.Conditions, ConditionResolvedRefs, false, lr.Refs[0].Reason, joinFindings(lr.Refs))
		} else {
			s.setBool(&ls.Conditions, ConditionResolvedRefs, true, reasonResolvedRefs, "all references resolved")
		}
		switch {
		case lr.Refused.Reason != "":
			s.setBool(&ls.Conditions, ConditionProgrammed, false, reasonInvalid, "not programmed: the listener is not accepted")
		case lr.Snapshot == "":
			unprogrammed = append(unprogrammed, lr.Name+": "+lr.NotServed)
			s.setBool(&ls.Conditions, ConditionProgrammed, false, reasonInvalid, "not programmed: "+lr.NotServed)
		case bindErrs[lr.Snapshot] != nil:
			msg := bindErrs[lr.Snapshot].Error()
			unprogrammed = append(unprogrammed, lr.Name+": "+msg)
			s.setBool(&ls.Conditions, ConditionProgrammed, false, reasonInvalid, msg)
		default:
			s.setBool(&ls.Conditions, ConditionProgrammed, true, reasonProgrammed, "served by the dataplane")
		}
		st.Listeners = append(st.Listeners, ls)
	}
	switch {
	case len(accepted) == 0:
		s.setBool(&st.Conditions, ConditionAccepted, false, reasonListenersNotValid, "no listener is valid: "+strings.Join(refused, "; "))
	case len(refused) > 0:
		s.setBool(&st.Conditions, ConditionAccepted, true, reasonListenersNotValid,
			fmt.Sprintf("accepted listeners: %s; not accepted: %s", strings.Join(accepted, ", "), strings.Join(refused, "; ")))
	default:
		s.setBool(&st.Conditions, ConditionAccepted, true, reasonAccepted, "Gateway accepted")
	}
	switch {
	case len(accepted) == 0:
		s.setBool(&st.Conditions, ConditionProgrammed, false, reasonInvalid, "not programmed: no listener is valid")
	case res.AddressSource != "" && len(res.Addresses) == 0:
		s.setBool(&st.Conditions, ConditionProgrammed, false, reasonAddressNotAssigned, "the Service "+res.AddressSource+", whose addresses are the Gateway's, has no address yet")
	case len(unprogrammed) > 0:
		s.setBool(&st.Conditions, ConditionProgrammed, false, reasonInvalid, "listeners not programmed: "+strings.Join(unprogrammed, "; "))
	default:
		s.setBool(&st.Conditions, ConditionProgrammed, true, reasonProgrammed, "every accepted listener is served by the dataplane")
	}
	if len(unresolved) > 0 {
		s.setBool(&st.Conditions, ConditionResolvedRefs, false, reasonListenersNotResolved, "listeners with unresolved references: "+strings.Join(unresolved, ", "))
	} else {
		s.setBool(&st.Conditions, ConditionResolvedRefs, true, reasonResolvedRefs, "all references resolved")
	}
	return st
}

// RouteStatus computes the status of a route (of any kind) from its
// Result: one entry per parentRef naming a Gateway of ours. Entries keep
// their place in the list: those of other controllers are left as they
// are, ours are updated where they stand (a new one is added at the end,
// one for a parent the route no longer names is dropped), so that two
// controllers writing their own entries never undo each other's order.
func RouteStatus(old gwv1.RouteStatus, generation int64, controller string, res *RouteResult, now metav1.Time) gwv1.RouteStatus {
	s := conditionSetter{generation, now}
	entry := func(pr RouteParentResult, conds []metav1.Condition) gwv1.RouteParentStatus {
		ps := gwv1.RouteParentStatus{ParentRef: pr.Ref, ControllerName: gwv1.GatewayController(controller), Conditions: conds}
		if pr.Refused.Reason != "" {
			s.setBool(&ps.Conditions, ConditionAccepted, false, pr.Refused.Reason, pr.Refused.Message)
		} else {
			s.setBool(&ps.Conditions, ConditionAccepted, true, reasonAccepted, "attached to the Gateway")
		}
		if len(res.Refs) > 0 {
			s.setBool(&ps.Conditions, ConditionResolvedRefs, false, res.Refs[0].Reason, joinFindings(res.Refs))
		} else {
			s.setBool(&ps.Conditions, ConditionResolvedRefs, true, reasonResolvedRefs, "all backendRefs resolved")
		}
		return ps
	}
	want := map[string]int{} // parentKey → index in res.Parents
	for i, pr := range res.Parents {
		want[parentKey(pr.Ref)] = i
	}
	done := make([]bool, len(res.Parents))
	st := gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{}}
	for _, p := range old.Parents {
		p := *p.DeepCopy()
		if string(p.ControllerName) != controller {
			st.Parents = append(st.Parents, p)
			continue
		}
		i, ok := want[parentKey(p.ParentRef)]
		if !ok || done[i] {
			continue // a parent no longer named (or named twice)
		}
		done[i] = true
		st.Parents = append(st.Parents, entry(res.Parents[i], p.Conditions))
	}
	for i, pr := range res.Parents {
		if !done[i] {
			st.Parents = append(st.Parents, entry(pr, nil))
		}
	}
	return st
}

// parentKey identifies a parentRef, defaults applied, for matching status
// entries to the spec's references.
func parentKey(r gwv1.ParentReference) string {
	return strings.Join([]string{
		string(ptrOr(r.Group, gwv1.GroupName)), string(ptrOr(r.Kind, "Gateway")), string(ptrOr(r.Namespace, "")),
		string(r.Name), string(ptrOr(r.SectionName, "")), fmt.Sprint(ptrOr(r.Port, 0)),
	}, "/")
}

// RouteKeyOf names a route object for GatewayOutput.Routes.
func RouteKeyOf(kind, namespace, name string) RouteKey {
	return RouteKey{Kind: kind, NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}
}
