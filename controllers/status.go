package controllers

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// statusWriter writes one PortMux's status from the programmer's last
// result. It runs on the leader only.
type statusWriter struct {
	client   client.Client
	state    *programmed
	recorder events.EventRecorder
	log      logr.Logger
}

func (w *statusWriter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pm v1alpha1.PortMux
	if err := w.client.Get(ctx, req.NamespacedName, &pm); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	res, bindErrs, ok := w.state.get(req.NamespacedName)
	if !ok {
		// Not compiled yet: the programmer asks again once it has.
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	want := compile.Status(&pm, res, bindErrs, metav1.Now())
	if statusEqual(&pm.Status, &want) {
		return reconcile.Result{}, nil
	}
	before := pm.DeepCopy()
	pm.Status = want
	// The optimistic lock makes a write based on a stale read fail (and be
	// retried) rather than overwrite a newer generation's status.
	if err := w.client.Status().Patch(ctx, &pm, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return reconcile.Result{}, err
	}
	w.events(before, &pm)
	return reconcile.Result{}, nil
}

// events records a transition of each top-level condition, so `kubectl
// describe` tells the story.
func (w *statusWriter) events(before, after *v1alpha1.PortMux) {
	if w.recorder == nil {
		return
	}
	for _, typ := range []string{compile.ConditionAccepted, compile.ConditionResolvedRefs, compile.ConditionProgrammed, compile.ConditionReady} {
		now := meta.FindStatusCondition(after.Status.Conditions, typ)
		if now == nil {
			continue
		}
		was := meta.FindStatusCondition(before.Status.Conditions, typ)
		if was != nil && was.Status == now.Status && was.Reason == now.Reason {
			continue
		}
		kind := corev1.EventTypeNormal
		if now.Status != metav1.ConditionTrue {
			kind = corev1.EventTypeWarning
		}
		w.recorder.Eventf(after, nil, kind, now.Reason, typ, "%s=%s: %s", typ, now.Status, now.Message)
	}
}
