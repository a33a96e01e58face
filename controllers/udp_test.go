package controllers

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/hostaddr"
	"github.com/portmux/portmux/test/peers"
)

// udpEchoBackend is a UDP echo server on a test address, with its host
// and port.
func udpEchoBackend(t *testing.T) (echo *peers.UDPServer, host string, port int) {
	t.Helper()
	echo = peers.Host(hostaddr.Ensure(t)[0]).UDPEcho(t)
	host, p, err := net.SplitHostPort(echo.Addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err = strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return echo, host, port
}

// udpService creates a Service with a UDP port dns (53) and a TCP port
// dns-tcp (53), both to target, and an EndpointSlice listing backend for
// each: a route on a UDP listener must pick the UDP one.
func udpService(t *testing.T, ns, name, backend string, udpTarget, tcpTarget int32) {
	t.Helper()
	ctx := context.Background()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(udpTarget)},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(tcpTarget)},
		}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-slice",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("dns"), Port: ptr.To(udpTarget), Protocol: ptr.To(corev1.ProtocolUDP)},
			{Name: ptr.To("dns-tcp"), Port: ptr.To(tcpTarget), Protocol: ptr.To(corev1.ProtocolTCP)},
		},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{backend}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	if err := k8s.Create(ctx, es); err != nil {
		t.Fatal(err)
	}
}

// dnsQuery is a DNS query for example.com A (RFC 1035 §4.1): what the dns
// route recognises in a session's first datagram.
var dnsQuery = []byte{
	0x12, 0x34, 0x01, 0x00, // ID, flags: a query, recursion desired
	0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // one question
	7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0,
	0x00, 0x01, 0x00, 0x01, // type A, class IN
}

// exchange sends datagram to the UDP port on 127.0.0.1 and returns the
// first datagram that comes back within a second.
func exchange(port int32, datagram []byte) ([]byte, error) {
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write(datagram); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// snapshotListener waits until the applied snapshot has the named listener
// and returns it.
func snapshotListener(t *testing.T, dp *recordingDataplane, name string) snapshot.Listener {
	t.Helper()
	var got snapshot.Listener
	peers.Eventually(t, settleTimeout, "listener "+name+" in the applied snapshot", func() error {
		s := dp.snapshot()
		if s == nil {
			return fmt.Errorf("no snapshot applied yet")
		}
		i := slices.IndexFunc(s.Listeners, func(l snapshot.Listener) bool { return l.Name == name })
		if i < 0 {
			return fmt.Errorf("%d listeners, not %s", len(s.Listeners), name)
		}
		got = s.Listeners[i]
		return nil
	})
	return got
}

// TestUDPListenerIsReady: a PortMux with a UDP listener is accepted,
// resolves the Service's UDP port (not its TCP port of the same number)
// through the EndpointSlice's UDP port, is served (a DNS query reaches the
// UDP backend and its answer comes back), and says so in its status:
// Ready, the port shown as N/UDP, the listener's protocol UDP.
func TestUDPListenerIsReady(t *testing.T) {
	ns, dp := startController(t)
	ctx := context.Background()
	echo, host, target := udpEchoBackend(t)
	udpService(t, ns, "resolver", host, int32(target), int32(target)+1)
	port := int32(peers.FreePort(t))
	pm := &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"},
		Spec: v1alpha1.PortMuxSpec{
			Listeners: []v1alpha1.Listener{{Name: "dns", Port: ptr.To(port), Protocol: v1alpha1.TransportUDP}},
			Routes: []v1alpha1.Route{
				{
					Name: "dns", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolDNS},
					Backend: &v1alpha1.Backend{Service: &v1alpha1.ServicePort{Name: "resolver", Port: intstr.FromInt32(53)}},
				},
				{
					Name: "h3", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolQUIC, SNI: []string{"Example.COM"}, ALPN: []string{"h3"}},
					Backend: &v1alpha1.Backend{Service: &v1alpha1.ServicePort{Name: "resolver", Port: intstr.FromString("dns")}},
				},
			},
		},
	}
	if err := k8s.Create(ctx, pm); err != nil {
		t.Fatal(err)
	}
	condition(t, ns, "edge", "Accepted", metav1.ConditionTrue, "Accepted")
	condition(t, ns, "edge", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")

	var got v1alpha1.PortMux
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge"}, &got); err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(int(port)) + "/UDP"; got.Status.Ports != want {
		t.Errorf("status.ports = %q, want %q", got.Status.Ports, want)
	}
	if len(got.Status.Listeners) != 1 || got.Status.Listeners[0].Protocol != v1alpha1.TransportUDP || got.Status.Listeners[0].AttachedRoutes != 2 {
		t.Errorf("listener status %+v, want one UDP listener with 2 routes", got.Status.Listeners)
	} else if c := meta.FindStatusCondition(got.Status.Listeners[0].Conditions, "Programmed"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("listener Programmed condition %+v, want True", c)
	}

	peers.Eventually(t, settleTimeout, "a DNS query through the UDP listener comes back from the echo backend", func() error {
		got, err := exchange(port, dnsQuery)
		if err != nil || !bytes.Equal(got, dnsQuery) {
			return fmt.Errorf("%x, %v", got, err)
		}
		return nil
	})
	if echo.Received() == 0 {
		t.Fatal("the answer came back, but not from the backend")
	}

	l := snapshotListener(t, dp, ns+"/edge/dns")
	if _, p, _ := net.SplitHostPort(l.Address); l.Transport != snapshot.UDP || p != strconv.Itoa(int(port)) || l.TLS != nil || l.ProxyProtocol != nil {
		t.Errorf("snapshot listener %s: transport %q address %q tls %v proxy %v; want UDP on port %d, neither", l.Name, l.Transport, l.Address, l.TLS, l.ProxyProtocol, port)
	}
	want := []string{echo.Addr}
	if len(l.Routes) != 2 {
		t.Fatalf("snapshot listener routes %+v, want dns and h3", l.Routes)
	}
	for _, r := range l.Routes {
		if r.Backend == nil || !slices.Equal(r.Backend.Endpoints, want) {
			t.Errorf("route %s endpoints %v, want the Service's UDP endpoint %v", r.Name, r.Backend, want)
		}
	}
	if m := l.Routes[1].Match; m.Protocol != snapshot.QUIC || !slices.Equal(m.SNI, []string{"example.com"}) || !slices.Equal(m.ALPN, []string{"h3"}) {
		t.Errorf("quic route match %+v, want sni example.com, alpn h3", m)
	}
}

// TestTCPAndUDPShareAPort: a TCP and a UDP listener of one PortMux on the
// same port are two claims, both accepted and bound, and a route that
// leaves out listeners goes to those whose protocol carries it; a younger
// PortMux asking for the UDP port conflicts on UDP only.
func TestTCPAndUDPShareAPort(t *testing.T) {
	ns, dp := startController(t)
	ctx := context.Background()
	host := hostaddr.Ensure(t)[0]
	udpService(t, ns, "vpn", host, 1194, 1195)
	port := int32(peers.FreePort(t))
	vpn := &v1alpha1.Backend{Service: &v1alpha1.ServicePort{Name: "vpn", Port: intstr.FromInt32(53)}}
	pm := &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"},
		Spec: v1alpha1.PortMuxSpec{
			Listeners: []v1alpha1.Listener{
				{Name: "tcp", Port: ptr.To(port)},
				{Name: "udp", Port: ptr.To(port), Protocol: v1alpha1.TransportUDP},
			},
			Routes: []v1alpha1.Route{
				{Name: "vpn", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolOpenVPN}, Backend: vpn},
				{Name: "wg", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolWireGuard}, Backend: vpn},
				{Name: "ssh", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolSSH}, Backend: vpn},
			},
		},
	}
	if err := k8s.Create(ctx, pm); err != nil {
		t.Fatal(err)
	}
	condition(t, ns, "edge", "Accepted", metav1.ConditionTrue, "Accepted")
	condition(t, ns, "edge", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")

	for name, want := range map[string]struct {
		transport snapshot.Transport
		routes    []snapshot.Protocol
		endpoint  string
	}{
		"tcp": {snapshot.TCP, []snapshot.Protocol{snapshot.OpenVPN, snapshot.SSH}, net.JoinHostPort(host, "1195")},
		"udp": {snapshot.UDP, []snapshot.Protocol{snapshot.OpenVPN, snapshot.WireGuard}, net.JoinHostPort(host, "1194")},
	} {
		l := snapshotListener(t, dp, ns+"/edge/"+name)
		var protocols []snapshot.Protocol
		for _, r := range l.Routes {
			protocols = append(protocols, r.Match.Protocol)
			if r.Backend == nil || !slices.Equal(r.Backend.Endpoints, []string{want.endpoint}) {
				t.Errorf("listener %s route %s: backend %+v, want endpoint %s", name, r.Name, r.Backend, want.endpoint)
			}
		}
		if l.Transport != want.transport || !slices.Equal(protocols, want.routes) {
			t.Errorf("listener %s: transport %q routes %v, want %q %v", name, l.Transport, protocols, want.transport, want.routes)
		}
	}

	// Another PortMux asks for the UDP port: younger, or created in the
	// same second and sorting after edge by name, it is refused.
	late := &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "late"},
		Spec: v1alpha1.PortMuxSpec{
			Listeners: []v1alpha1.Listener{{Name: "udp", Port: ptr.To(port), Protocol: v1alpha1.TransportUDP}},
			Routes:    []v1alpha1.Route{{Name: "wg", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolWireGuard}, Backend: vpn}},
		},
	}
	if err := k8s.Create(ctx, late); err != nil {
		t.Fatal(err)
	}
	c := condition(t, ns, "late", "Accepted", metav1.ConditionFalse, "PortConflict")
	if want := fmt.Sprintf("listener udp: UDP port %d is held by PortMux %s/edge", port, ns); !strings.HasPrefix(c.Message, want) {
		t.Errorf("conflict message %q, want it to start with %q", c.Message, want)
	}
}
