package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/test/peers"
)

// freePortRange finds n consecutive loopback ports no one listens on, for
// a Gateway port range the in-process dataplane can bind. It looks below
// the kernel's ephemeral range (32768 and up here), which a busy machine's
// outgoing connections crowd: a range found there was often taken.
func freePortRange(t *testing.T, n int32) compile.PortRange {
	t.Helper()
	for range 50 {
		from := 10000 + rand.Int32N(22000)
		ok := true
		for p := from; p < from+n && ok; p++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p))))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return compile.PortRange{From: from, To: from + n - 1}
		}
	}
	t.Fatal("no free port range")
	return compile.PortRange{}
}

// The conformance suite's base Gateways, three with an HTTP listener on
// port 80 and no hostname, cannot share one address. With a Gateway port
// range, each gets a Service of its own, made by the manager in the
// dataplane Service's namespace with its selector, whose port 80 targets
// a dataplane port of the range; each reports its Service's cluster IP
// and is Programmed, and its dataplane port accepts connections. A
// Gateway deleted takes its Service with it.
func TestGatewayServicePerGateway(t *testing.T) {
	requireGatewayAPI(t)
	ctx := context.Background()
	r := freePortRange(t, 8)
	ns, _, _ := startControllerWithOptions(t, restCfg, func(ns string, copt *Options) {
		copt.GatewayAPI = GatewayAPIOn
		copt.GatewayAddressService = types.NamespacedName{Namespace: ns, Name: "dataplane"}
		copt.GatewayPortRange = &r
		if err := k8s.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dataplane"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app.kubernetes.io/name": "portmux"},
				Ports:    []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}},
			},
		}); err != nil {
			t.Fatal(err)
		}
	})
	class := &gwv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: "portmux-" + ns},
		Spec:       gwv1.GatewayClassSpec{ControllerName: compile.GatewayControllerName},
	}
	if err := k8s.Create(ctx, class); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), class) })
	names := []string{"same-namespace", "all-namespaces", "backend-namespaces"}
	for _, name := range names {
		if err := k8s.Create(ctx, &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(class.Name),
				Listeners:        []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
			},
		}); err != nil {
			t.Fatal(err)
		}
	}

	targets := map[int32]string{}
	for _, name := range names {
		key := types.NamespacedName{Namespace: ns, Name: name}
		var svc corev1.Service
		peers.Eventually(t, settleTimeout, "the Service of Gateway "+name, func() error {
			return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: compile.GatewayServiceName(key)}, &svc)
		})
		if got := svc.Spec.Selector["app.kubernetes.io/name"]; got != "portmux" || len(svc.Spec.Selector) != 1 {
			t.Errorf("%s: selector %v, want the dataplane Service's", name, svc.Spec.Selector)
		}
		if svc.Annotations[annotationGateway] != key.String() || svc.Labels[labelGatewayServiceOf] != "dataplane" {
			t.Errorf("%s: labels %v, annotations %v", name, svc.Labels, svc.Annotations)
		}
		if len(svc.Spec.Ports) != 1 {
			t.Fatalf("%s: ports %v, want one", name, svc.Spec.Ports)
		}
		p := svc.Spec.Ports[0]
		tp := p.TargetPort.IntVal
		if p.Port != 80 || p.Protocol != corev1.ProtocolTCP || p.TargetPort.Type != intstr.Int || tp < r.From || tp > r.To {
			t.Errorf("%s: port %+v, want 80 to a port of %d-%d", name, p, r.From, r.To)
		}
		if other, dup := targets[tp]; dup {
			t.Errorf("%s and %s share dataplane port %d", other, name, tp)
		}
		targets[tp] = name

		peers.Eventually(t, settleTimeout, "Gateway "+name+" Programmed with its Service's address", func() error {
			var gw gwv1.Gateway
			if err := k8s.Get(ctx, key, &gw); err != nil {
				return err
			}
			if err := conditionIs(meta.FindStatusCondition(gw.Status.Conditions, "Programmed"), gw.Generation, metav1.ConditionTrue, "Programmed"); err != nil {
				return err
			}
			if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != svc.Spec.ClusterIP || svc.Spec.ClusterIP == "" {
				return fmt.Errorf("addresses %v, want the Service's cluster IP %q", gw.Status.Addresses, svc.Spec.ClusterIP)
			}
			return nil
		})
		peers.Eventually(t, settleTimeout, "a connection to the dataplane port of "+name, func() error {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(tp))))
			if err != nil {
				return err
			}
			return c.Close()
		})
	}

	// A Service edited away from its allocation is put back.
	svcKey := types.NamespacedName{Namespace: ns, Name: compile.GatewayServiceName(types.NamespacedName{Namespace: ns, Name: names[0]})}
	var svc corev1.Service
	if err := k8s.Get(ctx, svcKey, &svc); err != nil {
		t.Fatal(err)
	}
	want := svc.Spec.Ports[0].TargetPort
	svc.Spec.Ports[0].TargetPort = intstr.FromString("elsewhere")
	if err := k8s.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	peers.Eventually(t, settleTimeout, "the Service's targetPort restored", func() error {
		if err := k8s.Get(ctx, svcKey, &svc); err != nil {
			return err
		}
		if got := svc.Spec.Ports[0].TargetPort; got != want {
			return fmt.Errorf("targetPort %s, want %s", got.String(), want.String())
		}
		return nil
	})

	if err := k8s.Delete(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names[0]}}); err != nil {
		t.Fatal(err)
	}
	peers.Eventually(t, settleTimeout, "the deleted Gateway's Service gone", func() error {
		err := k8s.Get(ctx, svcKey, &corev1.Service{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		}
		return errors.New("still there")
	})
}
