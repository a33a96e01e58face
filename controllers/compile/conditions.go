package compile

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Condition types and reasons written to PortMux status. They follow the
// Gateway API's vocabulary, which cluster operators already know.
const (
	ConditionAccepted     = "Accepted"
	ConditionResolvedRefs = "ResolvedRefs"
	ConditionProgrammed   = "Programmed"
	ConditionReady        = "Ready"
	// ConditionConflicted is on listeners with a parentRef only: True
	// when the Gateway claims an SNI name one of its routes asks for.
	ConditionConflicted = "Conflicted"

	ReasonAccepted     = "Accepted"
	ReasonInvalid      = "Invalid"
	ReasonPortConflict = "PortConflict"
	// ReasonPortNotAllowed: the cluster's port policy does not grant the
	// port to the PortMux's namespace.
	ReasonPortNotAllowed = "PortNotAllowed"
	ReasonResolvedRefs   = "ResolvedRefs"
	ReasonProgrammed     = "Programmed"
	ReasonBindFailed     = "BindFailed"
	// ReasonDataplaneUnreachable: the dataplane runs in another process
	// (container) and does not answer on its control socket; it serves
	// what it had, but nothing new reaches it.
	ReasonDataplaneUnreachable = "DataplaneUnreachable"
	// ReasonDataplaneRefused: the dataplane process refused the snapshot
	// (e.g. a manager and a dataplane of different versions).
	ReasonDataplaneRefused = "DataplaneRefused"
	ReasonNotServed        = "NotServed"
	ReasonReady            = "Ready"
)

// Status computes a PortMux's status from its compile Result and the bind
// errors the dataplane returned (by snapshot listener name). Conditions keep
// their LastTransitionTime when their status does not change, so writing the
// result back is a no-op when nothing changed.
func Status(pm *v1alpha1.PortMux, res *Result, bindErrs map[string]error, now metav1.Time) v1alpha1.PortMuxStatus {
	st := *pm.Status.DeepCopy()
	st.ObservedGeneration = pm.Generation
	st.Ports = ports(pm, res)
	gen := pm.Generation
	set := func(conds *[]metav1.Condition, typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(conds, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: truncate(msg), ObservedGeneration: gen, LastTransitionTime: now,
		})
	}

	if len(res.Invalid) > 0 {
		msg := "spec is invalid: " + joinErrors(res.Invalid)
		set(&st.Conditions, ConditionAccepted, false, ReasonInvalid, msg)
		set(&st.Conditions, ConditionResolvedRefs, false, ReasonInvalid, "not resolved: the spec is invalid")
		set(&st.Conditions, ConditionProgrammed, false, ReasonInvalid, "not programmed: the spec is invalid")
		set(&st.Conditions, ConditionReady, false, ReasonInvalid, msg)
		st.Listeners = nil
		return st
	}

	old := map[string]v1alpha1.ListenerStatus{}
	for _, l := range st.Listeners { // the deep copy: pm is never modified
		old[l.Name] = l
	}
	var conflicts, unbound, notServed []string
	unboundReason := ReasonBindFailed // the first unbound listener's
	refusal := ReasonPortConflict     // the reason of conflicts: PortNotAllowed if any listener is
	st.Listeners = make([]v1alpha1.ListenerStatus, 0, len(res.Listeners))
	for _, lr := range res.Listeners {
		ls := v1alpha1.ListenerStatus{Name: lr.Name, Port: lr.Port, AttachedRoutes: lr.AttachedRoutes, Conditions: old[lr.Name].Conditions}
		if lr.Port != nil {
			ls.Protocol = v1alpha1.TransportProtocol(lr.Transport)
		}
		switch {
		case lr.NotAllowed:
			msg := fmt.Sprintf("%s is not granted to namespace %s by the cluster's port policy (the manager's --port-policy, the chart's portPolicy)", claimName(lr), pm.Namespace)
			conflicts = append(conflicts, fmt.Sprintf("listener %s: %s", lr.Name, msg))
			refusal = ReasonPortNotAllowed
			set(&ls.Conditions, ConditionAccepted, false, ReasonPortNotAllowed, msg)
		case lr.Conflict != "":
			msg := conflictMessage(claimName(lr), lr.Conflict)
			conflicts = append(conflicts, fmt.Sprintf("listener %s: %s", lr.Name, msg))
			set(&ls.Conditions, ConditionAccepted, false, ReasonPortConflict, msg)
		case lr.Parent != nil && lr.Parent.Refused.Reason != "":
			msg := lr.Parent.Refused.Message
			conflicts = append(conflicts, fmt.Sprintf("listener %s: %s", lr.Name, msg))
			refusal = lr.Parent.Refused.Reason
			set(&ls.Conditions, ConditionAccepted, false, lr.Parent.Refused.Reason, msg)
		case lr.Parent != nil:
			set(&ls.Conditions, ConditionAccepted, true, ReasonAccepted, fmt.Sprintf("attached to listener %s of Gateway %s", strings.Join(lr.Parent.Listeners, ", "), lr.Parent.Gateway))
		default:
			set(&ls.Conditions, ConditionAccepted, true, ReasonAccepted, "listener accepted")
		}
		if p := lr.Parent; p != nil {
			// Conflicted, as on a Gateway listener: a route whose SNI
			// the Gateway claims never takes it.
			if len(p.Conflicts) > 0 {
				set(&ls.Conditions, ConditionConflicted, true, ReasonHostnameConflict, joinFindings(p.Conflicts))
			} else {
				set(&ls.Conditions, ConditionConflicted, false, ReasonNoConflicts, "no route's SNI is claimed by the Gateway")
			}
		}
		if len(lr.Refs) > 0 {
			set(&ls.Conditions, ConditionResolvedRefs, false, lr.Refs[0].Reason, joinFindings(lr.Refs))
		} else {
			set(&ls.Conditions, ConditionResolvedRefs, true, ReasonResolvedRefs, "all references resolved")
		}
		switch {
		case lr.Snapshot == "":
			reason := ReasonNotServed
			msg := "not served: no usable certificate"
			switch {
			case lr.NotAllowed:
				reason, msg = ReasonPortNotAllowed, "not served: the port is not granted to this namespace"
			case lr.Conflict != "":
				reason, msg = ReasonPortConflict, "not served: the port belongs to "+lr.Conflict
			case lr.Parent != nil && lr.Parent.Refused.Reason != "":
				reason, msg = lr.Parent.Refused.Reason, "not served: not attached to Gateway "+lr.Parent.Gateway
			case lr.Parent != nil:
				msg = "not served: no listener of Gateway " + lr.Parent.Gateway + " it attached to is served"
			}
			notServed = append(notServed, lr.Name)
			set(&ls.Conditions, ConditionProgrammed, false, reason, msg)
		case bindErrs[lr.Snapshot] != nil:
			msg := bindErrs[lr.Snapshot].Error()
			if len(unbound) == 0 {
				unboundReason = bindReason(bindErrs[lr.Snapshot])
			}
			unbound = append(unbound, fmt.Sprintf("listener %s: %s", lr.Name, msg))
			set(&ls.Conditions, ConditionProgrammed, false, bindReason(bindErrs[lr.Snapshot]), msg)
		default:
			set(&ls.Conditions, ConditionProgrammed, true, ReasonProgrammed, "served by the dataplane")
		}
		st.Listeners = append(st.Listeners, ls)
	}

	accepted := len(conflicts) == 0
	if accepted {
		set(&st.Conditions, ConditionAccepted, true, ReasonAccepted, "spec accepted")
	} else {
		set(&st.Conditions, ConditionAccepted, false, refusal, strings.Join(conflicts, "; "))
	}
	resolved := len(res.Refs) == 0
	if resolved {
		set(&st.Conditions, ConditionResolvedRefs, true, ReasonResolvedRefs, "all references resolved")
	} else {
		set(&st.Conditions, ConditionResolvedRefs, false, res.Refs[0].Reason, joinFindings(res.Refs))
	}
	programmed := len(unbound) == 0 && len(notServed) == 0
	switch {
	case programmed:
		set(&st.Conditions, ConditionProgrammed, true, ReasonProgrammed, "every listener is served by the dataplane")
	case len(unbound) > 0:
		set(&st.Conditions, ConditionProgrammed, false, unboundReason, strings.Join(unbound, "; "))
	default:
		set(&st.Conditions, ConditionProgrammed, false, ReasonNotServed, "listeners not served: "+strings.Join(notServed, ", "))
	}
	switch {
	case !accepted:
		set(&st.Conditions, ConditionReady, false, refusal, strings.Join(conflicts, "; "))
	case !resolved:
		set(&st.Conditions, ConditionReady, false, res.Refs[0].Reason, joinFindings(res.Refs))
	case !programmed:
		c := meta.FindStatusCondition(st.Conditions, ConditionProgrammed)
		set(&st.Conditions, ConditionReady, false, c.Reason, c.Message)
	default:
		set(&st.Conditions, ConditionReady, true, ReasonReady, "serving")
	}
	return st
}

// ReasonedError is a listener's error from the dataplane that says which
// condition reason it is; any other error is ReasonBindFailed.
type ReasonedError interface {
	error
	Reason() string
}

func bindReason(err error) string {
	var r ReasonedError
	if errors.As(err, &r) {
		return r.Reason()
	}
	return ReasonBindFailed
}

// ports renders the listeners' ports for the printer column: TCP ports as
// numbers, as before UDP listeners existed, UDP ones as "443/UDP", the way
// kubectl shows a Service's. A listener with a parentRef shows the port of
// the Gateway listener it attached to.
func ports(pm *v1alpha1.PortMux, res *Result) string {
	var out []string
	for i := range pm.Spec.Listeners {
		l := &pm.Spec.Listeners[i]
		port := l.Port
		if l.ParentRef != nil && i < len(res.Listeners) && res.Listeners[i].Parent != nil && res.Listeners[i].Parent.Refused.Reason == "" {
			port = res.Listeners[i].Port
		}
		if port == nil {
			continue
		}
		p := strconv.Itoa(int(*port))
		if listenerTransport(l) == snapshot.UDP {
			p += "/UDP"
		}
		out = append(out, p)
	}
	return strings.Join(out, ",")
}

// claimName says a listener's port in conditions: "port 443" for TCP, as
// before UDP listeners existed, and "UDP port 443".
func claimName(lr ListenerResult) string {
	return portKey{t: lr.Transport, port: *lr.Port}.String()
}

// joinErrors renders spec errors as the API server's, one after another.
func joinErrors(errs field.ErrorList) string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func joinFindings(fs []Finding) string {
	msgs := make([]string, len(fs))
	for i, f := range fs {
		msgs[i] = f.Message
	}
	return strings.Join(msgs, "; ")
}

// truncate keeps a condition message within the API's 32768-byte limit,
// without cutting a UTF-8 sequence in half.
func truncate(s string) string {
	const max = 32768
	if len(s) <= max {
		return s
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
