package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/portmux/portmux/controllers/compile"
)

// A Gateway's Service takes the dataplane Service's type and selector and
// compile's ports, keeps the node ports the cluster gave it, and is
// rewritten only when something it sets differs (not for what the API
// server defaults).
func TestDesiredService(t *testing.T) {
	gw := types.NamespacedName{Namespace: "infra", Name: "web"}
	dp := types.NamespacedName{Namespace: "portmux-system", Name: "portmux-dataplane"}
	want := &compile.GatewayService{
		NamespacedName: types.NamespacedName{Namespace: "portmux-system", Name: "gw-infra-web-x"},
		Ports:          []corev1.ServicePort{{Name: "tcp-443", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(20001)}},
	}
	lb := &corev1.Service{Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "portmux"},
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
	}}
	base := desiredService(want, gw, dp, lb, nil)
	if base.Spec.Type != corev1.ServiceTypeLoadBalancer || base.Spec.Selector["app"] != "portmux" ||
		base.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Fatalf("spec %+v, want the dataplane Service's type, selector and traffic policy", base.Spec)
	}
	if base.Annotations[annotationGateway] != "infra/web" || base.Labels[labelGatewayServiceOf] != dp.Name {
		t.Fatalf("meta %+v", base.ObjectMeta)
	}
	assigned := base.DeepCopy()
	assigned.Spec.Ports[0].NodePort = 31000
	assigned.Spec.ClusterIP = "10.96.0.9"
	assigned.Labels["other"] = "kept"
	if got := desiredService(want, gw, dp, lb, assigned).Spec.Ports[0].NodePort; got != 31000 {
		t.Errorf("node port %d, want the assigned 31000 kept", got)
	}

	tests := []struct {
		name   string
		edit   func(s *corev1.Service)
		differ bool
	}{
		{"as the cluster has it (defaults, labels of others)", func(*corev1.Service) {}, false},
		{"targetPort changed", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromInt32(1) }, true},
		{"a port more", func(s *corev1.Service) { s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: 80}) }, true},
		{"selector changed", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "else"} }, true},
		{"type changed", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }, true},
		{"annotation lost", func(s *corev1.Service) { s.ObjectMeta = metav1.ObjectMeta{Labels: s.Labels} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := assigned.DeepCopy()
			tt.edit(cur)
			if got := serviceDiffers(cur, desiredService(want, gw, dp, lb, assigned)); got != tt.differ {
				t.Errorf("differs = %v, want %v", got, tt.differ)
			}
		})
	}
}
