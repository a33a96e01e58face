package controllers

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/test/hostaddr"
	"github.com/portmux/portmux/test/peers"
)

// echoBackend is a real TCP server on a test address that answers each line
// with its name and the line, so a test can tell which backend it reached.
func echoBackend(t *testing.T, name string) (host string, port int32) {
	t.Helper()
	return echoBackendOn(t, hostaddr.Ensure(t)[0], name, 0)
}

// create creates obj, or fails the test.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// remove deletes obj, or fails the test.
func remove(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// createReady creates pm and waits until it is Ready.
func createReady(t *testing.T, pm *v1alpha1.PortMux) {
	t.Helper()
	create(t, pm)
	condition(t, pm.Namespace, pm.Name, "Ready", metav1.ConditionTrue, "Ready")
}

// echoService starts an echo backend for each name, answering "name:...",
// behind a Service of the same name in ns.
func echoService(t *testing.T, ns string, names ...string) {
	t.Helper()
	for _, name := range names {
		h, p := echoBackend(t, name)
		serviceFor(t, ns, name, p, h)
	}
}

// serviceFor creates a Service with one TCP port and an EndpointSlice with
// the given backends (host, port pairs all on the same port).
func serviceFor(t *testing.T, ns, name string, port int32, endpoints ...string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "main", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(port),
		}}},
	}
	create(t, svc)
	setEndpoints(t, ns, name, port, endpoints...)
}

// setEndpoints creates or replaces the Service's EndpointSlice.
func setEndpoints(t *testing.T, ns, svc string, port int32, hosts ...string) {
	t.Helper()
	ctx := context.Background()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-slice",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("main"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, h := range hosts {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{h}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	var cur discoveryv1.EndpointSlice
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: es.Name}, &cur); err == nil {
		cur.Endpoints, cur.Ports = es.Endpoints, es.Ports
		if err := k8s.Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
		return
	}
	create(t, es)
}

func sshMux(ns, name string, port int32, svc string) *v1alpha1.PortMux {
	return &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.PortMuxSpec{
			Listeners: []v1alpha1.Listener{{Name: "public", Port: ptr.To(port)}},
			Routes: []v1alpha1.Route{{
				Name: "any", Listeners: []string{"public"},
				Match:   v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolAny},
				Backend: &v1alpha1.Backend{Service: &v1alpha1.ServicePort{Name: svc, Port: intstr.FromInt32(80)}},
			}},
		},
	}
}

// condition waits until the PortMux's condition has the wanted status and
// reason, for the PortMux's current generation, and returns it.
func condition(t *testing.T, ns, name, typ string, want metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	peers.Eventually(t, settleTimeout, fmt.Sprintf("%s/%s %s=%s %s", ns, name, typ, want, reason), func() error {
		var pm v1alpha1.PortMux
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &pm); err != nil {
			return err
		}
		c := meta.FindStatusCondition(pm.Status.Conditions, typ)
		if c == nil {
			return fmt.Errorf("no %s condition yet", typ)
		}
		if c.Status != want || c.Reason != reason || c.ObservedGeneration != pm.Generation || pm.Status.ObservedGeneration != pm.Generation {
			return fmt.Errorf("condition is %s/%s (gen %d of %d): %s", c.Status, c.Reason, c.ObservedGeneration, pm.Generation, c.Message)
		}
		got = *c
		return nil
	})
	return got
}

// talk connects to the port, sends a line and returns the answer.
func talk(port int32, line string) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

func TestReadyWithoutAnyPortMux(t *testing.T) {
	_, dp, c := startControllerWith(t)
	peers.Eventually(t, settleTimeout, "ready with no PortMux in the cluster", func() error {
		if err := c.ReadyCheck(nil); err != nil {
			return err
		}
		if s := dp.snapshot(); s == nil || len(s.Listeners) != 0 {
			return fmt.Errorf("want an empty snapshot applied, got %+v", s)
		}
		return nil
	})
}

func TestOnlyTheLeaderWritesStatus(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ctx := context.Background()
	// Another replica holds the lease for an hour.
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", GenerateName: "portmux-test-"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("another-replica"),
			LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime:          &metav1.MicroTime{Time: time.Now()},
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	}
	create(t, lease)
	ns, _, _ := startControllerWith(t, func(o *ctrl.Options) {
		o.LeaderElection = true
		o.LeaderElectionID = lease.Name
		o.LeaderElectionNamespace = "default"
		o.LeaseDuration = ptr.To(2 * time.Second)
		o.RenewDeadline = ptr.To(time.Second)
		o.RetryPeriod = ptr.To(200 * time.Millisecond)
	})
	echoService(t, ns, "x")
	port := int32(peers.FreePort(t))
	create(t, sshMux(ns, "edge", port, "x"))
	// A replica that is not the leader still serves traffic...
	peers.Eventually(t, settleTimeout, "traffic through a replica that is not the leader", func() error {
		got, err := talk(port, "hi")
		if err != nil || got != "x:hi" {
			return fmt.Errorf("%q, %v", got, err)
		}
		return nil
	})
	// ...and writes no status.
	time.Sleep(2 * time.Second)
	var pm v1alpha1.PortMux
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge"}, &pm); err != nil {
		t.Fatal(err)
	}
	if len(pm.Status.Conditions) != 0 {
		t.Fatalf("a replica that is not the leader wrote status: %+v", pm.Status.Conditions)
	}
	// The leader goes away: this replica takes over and writes status.
	remove(t, lease)
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")
}

func TestPortMuxLifecycle(t *testing.T) {
	ns, dp := startController(t)
	ctx := context.Background()
	echoService(t, ns, "one", "two")
	port := int32(peers.FreePort(t))

	pm := sshMux(ns, "edge", port, "one")
	createReady(t, pm)
	if got, err := talk(port, "hi"); err != nil || got != "one:hi" {
		t.Fatalf("through the mux: %q, %v", got, err)
	}

	// An open connection survives the change; new ones follow it.
	open, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	openR := bufio.NewReader(open)
	fmt.Fprintln(open, "before")
	if s, _ := openR.ReadString('\n'); s != "one:before\n" {
		t.Fatalf("open connection: %q", s)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pm), pm); err != nil {
		t.Fatal(err)
	}
	pm.Spec.Routes[0].Backend.Service.Name = "two"
	if err := k8s.Update(ctx, pm); err != nil {
		t.Fatal(err)
	}
	peers.Eventually(t, settleTimeout, "new connections reach the new backend", func() error {
		got, err := talk(port, "hi")
		if err != nil || got != "two:hi" {
			return fmt.Errorf("%q, %v", got, err)
		}
		return nil
	})
	fmt.Fprintln(open, "after")
	if s, _ := openR.ReadString('\n'); s != "one:after\n" {
		t.Fatalf("the connection opened before the change was cut or moved: %q", s)
	}
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")

	remove(t, pm)
	peers.Eventually(t, settleTimeout, "the port stops accepting", func() error {
		if s := dp.snapshot(); s != nil && len(s.Listeners) != 0 {
			return fmt.Errorf("%d listeners still programmed", len(s.Listeners))
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("port %d still accepts", port)
		}
		return nil
	})
}

func TestMissingSecretThenCreated(t *testing.T) {
	ns, _ := startController(t)
	ctx := context.Background()
	h, p := echoBackend(t, "ssh")
	serviceFor(t, ns, "sshd", p, h)
	plain, tlsPort := int32(peers.FreePort(t)), int32(peers.FreePort(t))
	pm := sshMux(ns, "edge", plain, "sshd")
	pm.Spec.Listeners = append(pm.Spec.Listeners, v1alpha1.Listener{
		Name: "secure", Port: ptr.To(tlsPort),
		TLS: &v1alpha1.ListenerTLS{CertificateRefs: []v1alpha1.SecretRef{{Name: "edge-tls"}}},
	})
	pm.Spec.Routes[0].Listeners = []string{"public", "secure"}
	create(t, pm)
	c := condition(t, ns, "edge", "ResolvedRefs", metav1.ConditionFalse, "SecretNotFound")
	if !strings.Contains(c.Message, "edge-tls") {
		t.Fatalf("message does not name the Secret: %q", c.Message)
	}
	condition(t, ns, "edge", "Ready", metav1.ConditionFalse, "SecretNotFound")
	peers.Eventually(t, settleTimeout, "a Warning event names the missing Secret", func() error {
		var evs eventsv1.EventList
		if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "edge" && e.Type == corev1.EventTypeWarning && e.Reason == "SecretNotFound" && strings.Contains(e.Note, "edge-tls") {
				return nil
			}
		}
		return fmt.Errorf("%d events, none a SecretNotFound warning for edge", len(evs.Items))
	})
	// The broken listener takes down only itself.
	if got, err := talk(plain, "hi"); err != nil || got != "ssh:hi" {
		t.Fatalf("the listener without TLS should keep working: %q, %v", got, err)
	}

	cert := peers.CertPair(t, "edge.example.test")
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert.CertPEM, corev1.TLSPrivateKeyKey: cert.KeyPEM},
	}
	create(t, sec)
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(tlsPort))), &tls.Config{InsecureSkipVerify: true, ServerName: "edge.example.test"})
	if err != nil {
		t.Fatalf("TLS listener after the Secret appeared: %v", err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "edge.example.test" {
		t.Fatalf("served certificate %q", cn)
	}
}

func TestTwoPortMuxesOnOnePort(t *testing.T) {
	ns, _ := startController(t)
	echoService(t, ns, "first", "second")
	port := int32(peers.FreePort(t))

	first := sshMux(ns, "first", port, "first")
	createReady(t, first)
	// Creation timestamps have a one-second resolution: make sure the
	// second one is younger.
	time.Sleep(1100 * time.Millisecond)
	second := sshMux(ns, "second", port, "second")
	create(t, second)
	c := condition(t, ns, "second", "Accepted", metav1.ConditionFalse, "PortConflict")
	if !strings.Contains(c.Message, ns+"/first") || !strings.Contains(c.Message, strconv.Itoa(int(port))) {
		t.Fatalf("conflict message should name the holder and the port: %q", c.Message)
	}
	condition(t, ns, "first", "Ready", metav1.ConditionTrue, "Ready")
	if got, _ := talk(port, "x"); got != "first:x" {
		t.Fatalf("the older PortMux must keep the port: %q", got)
	}

	remove(t, first)
	condition(t, ns, "second", "Ready", metav1.ConditionTrue, "Ready")
	peers.Eventually(t, settleTimeout, "the port passes to the second PortMux", func() error {
		if got, err := talk(port, "x"); got != "second:x" {
			return fmt.Errorf("%q, %v", got, err)
		}
		return nil
	})
}

func TestEndpointSliceScaledFromZeroToTwo(t *testing.T) {
	ns, dp := startController(t)
	_, pa := echoBackend(t, "a")
	serviceFor(t, ns, "web", pa) // no endpoints yet
	port := int32(peers.FreePort(t))
	create(t, sshMux(ns, "edge", port, "web"))
	c := condition(t, ns, "edge", "ResolvedRefs", metav1.ConditionFalse, "NoReadyEndpoints")
	if !strings.Contains(c.Message, "web") {
		t.Fatalf("message should name the Service: %q", c.Message)
	}

	// Two endpoints on the same port: one backend on each test address.
	addrs := hostaddr.Ensure(t)
	echoBackendOn(t, addrs[1], "b", pa)
	setEndpoints(t, ns, "web", pa, addrs[0], addrs[1])
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")
	peers.Eventually(t, settleTimeout, "both endpoints programmed", func() error {
		s := dp.snapshot()
		if s == nil || len(s.Listeners) != 1 || len(s.Listeners[0].Routes[0].Backend.Endpoints) != 2 {
			return fmt.Errorf("snapshot %+v", s)
		}
		return nil
	})
	seen := map[string]bool{}
	for range 10 {
		got, err := talk(port, "q")
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.SplitN(got, ":", 2)[0]] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("connections not spread over both endpoints: %v", seen)
	}
}

func TestBindFailureIsReported(t *testing.T) {
	ns, _ := startController(t)
	echoService(t, ns, "x")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(busy.Addr().(*net.TCPAddr).Port)
	create(t, sshMux(ns, "edge", port, "x"))
	c := condition(t, ns, "edge", "Programmed", metav1.ConditionFalse, "BindFailed")
	if !strings.Contains(c.Message, "address already in use") {
		t.Fatalf("bind error should say why: %q", c.Message)
	}
	busy.Close()
	condition(t, ns, "edge", "Ready", metav1.ConditionTrue, "Ready")
}

// echoBackendOn is echoBackend on a given address and port (0: any).
func echoBackendOn(t *testing.T, host, name string, port int32) (string, int32) {
	t.Helper()
	s := peers.Host(host).TCPServerOn(t, int(port), func(c net.Conn) { answerLines(c, name) })
	return host, int32(s.Port)
}

// answerLines answers each line read from c with name, ":" and the line,
// until c fails.
func answerLines(c net.Conn, name string) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(c, "%s:%s", name, line); err != nil {
			return
		}
	}
}
