package controllers

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestParseGatewayAPI(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want GatewayAPI
		ok   bool
	}{
		{"auto", GatewayAPIAuto, true},
		{"on", GatewayAPIOn, true},
		{"off", GatewayAPIOff, true},
		{"", "", false},
		{"true", "", false},
		{"Auto", "", false},
	} {
		got, err := ParseGatewayAPI(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseGatewayAPI(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// The Gateway API is implemented only when every resource it needs is
// served in gateway.networking.k8s.io/v1.
func TestGatewayAPIServed(t *testing.T) {
	resources := func(names ...string) []metav1.APIResource {
		var out []metav1.APIResource
		for _, n := range names {
			out = append(out, metav1.APIResource{Name: n})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		served []*metav1.APIResourceList
		want   []string
	}{
		{"no Gateway API", nil, gatewayResources()},
		{"all of v1.6 standard", []*metav1.APIResourceList{{
			GroupVersion: gwv1.GroupVersion.String(),
			APIResources: resources("gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "tcproutes", "udproutes", "referencegrants", "gateways/status"),
		}}, nil},
		{"v1.4: no TLS, TCP or UDP routes in v1", []*metav1.APIResourceList{{
			GroupVersion: gwv1.GroupVersion.String(),
			APIResources: resources("gatewayclasses", "gateways", "httproutes", "referencegrants"),
		}}, []string{"tlsroutes", "tcproutes", "udproutes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: tc.served}}
			got, err := gatewayAPIServed(dc)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("missing %q, want %q", got, tc.want)
			}
		})
	}
}

func TestServiceAddresses(t *testing.T) {
	for _, tc := range []struct {
		name string
		svc  corev1.Service
		want []string
	}{
		{"load balancer IP and hostname", corev1.Service{
			Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.10"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}, {Hostname: "lb.example.com"}}}},
		}, []string{"IPAddress 203.0.113.7", "Hostname lb.example.com"}},
		{"load balancer not assigned yet", corev1.Service{
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.10"}},
		}, nil},
		{"cluster IPs, dual stack", corev1.Service{
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: []string{"10.96.0.10", "fd00::10"}},
		}, []string{"IPAddress 10.96.0.10", "IPAddress fd00::10"}},
		{"headless", corev1.Service{
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: []string{corev1.ClusterIPNone}},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range serviceAddresses(&tc.svc) {
				got = append(got, string(*a.Type)+" "+a.Value)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
