package controllers

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
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
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/test/hostaddr"
	"github.com/portmux/portmux/test/peers"
)

// tlsBackend is a real TLS server for name on a test address: after the
// handshake it answers each line with its name and the line.
func tlsBackend(t *testing.T, name string) (host string, port int32) {
	t.Helper()
	cert := peers.CertPair(t, name)
	ln, err := tls.Listen("tcp", net.JoinHostPort(hostaddr.Ensure(t)[0], "0"), &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				answerLines(c, name)
			}()
		}
	}()
	a := ln.Addr().(*net.TCPAddr)
	return a.IP.String(), int32(a.Port)
}

// talkTLS opens TLS to the loopback port with SNI sni, sends a line and
// returns the answer and the certificate name the server presented.
func talkTLS(port int32, sni, line string) (answer, cn string, err error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))),
		&tls.Config{ServerName: sni, InsecureSkipVerify: true}) //nolint:gosec // the test checks the name it got
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	cn = c.ConnectionState().PeerCertificates[0].Subject.CommonName
	if _, err := fmt.Fprintln(c, line); err != nil {
		return "", cn, err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), cn, err
}

// A Gateway with a TLS passthrough listener takes a TLSRoute from another
// namespace; the route's backend is a Service in the Gateway's namespace,
// which it may use only once a ReferenceGrant there allows it. The
// statuses say so as the spec defines, and real TLS reaches the backend by
// SNI through the in-process dataplane.
func TestGatewayTLSPassthroughAcrossNamespaces(t *testing.T) {
	requireGatewayAPI(t)
	ctx := context.Background()
	app := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pmx-app-", Labels: map[string]string{"portmux-test": "apps"}}}
	if err := k8s.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), app) })
	ns, _, _ := startControllerWithOptions(t, restCfg, gatewayAPIOn, func(o *ctrl.Options) {
		o.Cache.DefaultNamespaces[app.Name] = cache.Config{}
	})

	host, bport := tlsBackend(t, "git.example.test")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "git"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "main", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(bport),
		}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	setEndpoints(t, ns, "git", bport, host)

	class := createGatewayClass(t, ns)
	port := int32(peers.FreePort(t))
	gw := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: gwv1.ObjectName(class.Name),
			Listeners: []gwv1.Listener{{
				Name: "tls", Port: port, Protocol: gwv1.TLSProtocolType,
				TLS: &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModePassthrough)},
				AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{
					From:     ptr.To(gwv1.NamespacesFromSelector),
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"portmux-test": "apps"}},
				}},
			}},
		},
	}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	route := &gwv1.TLSRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: app.Name, Name: "git"},
		Spec: gwv1.TLSRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Name: "edge", Namespace: ptr.To(gwv1.Namespace(ns)),
			}}},
			Hostnames: []gwv1.Hostname{"git.example.test"},
			Rules: []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
				Name: "git", Namespace: ptr.To(gwv1.Namespace(ns)), Port: ptr.To(gwv1.PortNumber(443)),
			}}}}},
		},
	}
	if err := k8s.Create(ctx, route); err != nil {
		t.Fatal(err)
	}

	gatewayClassCondition(t, class.Name, "Accepted", metav1.ConditionTrue, "Accepted")
	gatewayClassCondition(t, class.Name, "SupportedVersion", metav1.ConditionTrue, "SupportedVersion")
	routeCondition(t, app.Name, "git", "Accepted", metav1.ConditionTrue, "Accepted")
	routeCondition(t, app.Name, "git", "ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted")
	if _, _, err := talkTLS(port, "git.example.test", "hello"); err == nil {
		t.Error("TLS reached a backend the route may not use")
	}

	grant := &gwv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "apps-to-git"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "TLSRoute", Namespace: gwv1.Namespace(app.Name)}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service", Name: ptr.To(gwv1.ObjectName("git"))}},
		},
	}
	if err := k8s.Create(ctx, grant); err != nil {
		t.Fatal(err)
	}
	routeCondition(t, app.Name, "git", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	eventuallyTLS(t, "TLS through the Gateway", port, "git.example.test", "hello", "git.example.test:hello", "git.example.test")
	if _, _, err := talkTLS(port, "other.example.test", "hello"); err == nil {
		t.Error("a name no route has reached a backend")
	}

	var got gwv1.Gateway
	peers.Eventually(t, settleTimeout, "Gateway status", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge"}, &got); err != nil {
			return err
		}
		for _, typ := range []string{"Accepted", "Programmed"} {
			if c := meta.FindStatusCondition(got.Status.Conditions, typ); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != got.Generation {
				return fmt.Errorf("Gateway %s: %+v", typ, c)
			}
		}
		if len(got.Status.Listeners) != 1 {
			return fmt.Errorf("listeners %+v", got.Status.Listeners)
		}
		l := got.Status.Listeners[0]
		if l.AttachedRoutes != 1 || len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "TLSRoute" {
			return fmt.Errorf("listener %s: %d routes, kinds %+v", l.Name, l.AttachedRoutes, l.SupportedKinds)
		}
		for _, want := range []struct {
			typ    string
			status metav1.ConditionStatus
		}{{"Accepted", metav1.ConditionTrue}, {"Programmed", metav1.ConditionTrue}, {"ResolvedRefs", metav1.ConditionTrue}, {"Conflicted", metav1.ConditionFalse}} {
			if c := meta.FindStatusCondition(l.Conditions, want.typ); c == nil || c.Status != want.status {
				return fmt.Errorf("listener %s: %+v", want.typ, c)
			}
		}
		return nil
	})

	// A PortMux cannot take the Gateway's port, however it is ordered.
	if err := k8s.Create(ctx, sshMux(ns, "squatter", port, "git")); err != nil {
		t.Fatal(err)
	}
	c := condition(t, ns, "squatter", "Accepted", metav1.ConditionFalse, "PortConflict")
	if !strings.Contains(c.Message, "Gateway "+ns+"/edge") {
		t.Errorf("PortConflict does not name the Gateway: %s", c.Message)
	}
	if answer, _, err := talkTLS(port, "git.example.test", "again"); err != nil || answer != "git.example.test:again" {
		t.Errorf("the Gateway's port stopped routing TLS: %q, %v", answer, err)
	}

	// A route that leaves the Gateway loses its entry, and the listener
	// its attached route.
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: app.Name, Name: "git"}, route); err != nil {
		t.Fatal(err)
	}
	route.Spec.ParentRefs[0].Name = "elsewhere"
	if err := k8s.Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	peers.Eventually(t, settleTimeout, "the TLSRoute's entry dropped", func() error {
		var r gwv1.TLSRoute
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: app.Name, Name: "git"}, &r); err != nil {
			return err
		}
		if len(r.Status.Parents) != 0 {
			return fmt.Errorf("parents %+v", r.Status.Parents)
		}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge"}, &got); err != nil {
			return err
		}
		if n := got.Status.Listeners[0].AttachedRoutes; n != 0 {
			return fmt.Errorf("listener still has %d attached routes", n)
		}
		return nil
	})
}

// eventuallyTLS waits until talkTLS(port, sni, line) answers want under a
// certificate for wantCN.
func eventuallyTLS(t *testing.T, what string, port int32, sni, line, want, wantCN string) {
	t.Helper()
	peers.Eventually(t, settleTimeout, what, func() error {
		answer, cn, err := talkTLS(port, sni, line)
		if err != nil {
			return err
		}
		if answer != want || cn != wantCN {
			return fmt.Errorf("answer %q from certificate %q", answer, cn)
		}
		return nil
	})
}

// startGatewayController is startController with the Gateway API on; it
// skips or fails as requireGatewayAPI does.
func startGatewayController(t *testing.T) (ns string) {
	t.Helper()
	requireGatewayAPI(t)
	ns, _, _ = startControllerWithOptions(t, restCfg, gatewayAPIOn)
	return ns
}

func gatewayAPIOn(_ string, copt *Options) { copt.GatewayAPI = GatewayAPIOn }

// createGatewayClass creates the GatewayClass portmux-NS of PortMux's
// controller and deletes it at cleanup.
func createGatewayClass(t *testing.T, ns string) *gwv1.GatewayClass {
	t.Helper()
	class := &gwv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: "portmux-" + ns},
		Spec:       gwv1.GatewayClassSpec{ControllerName: compile.GatewayControllerName},
	}
	if err := k8s.Create(context.Background(), class); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), class) })
	return class
}

// requireGatewayAPI skips without an API server and fails when the
// Gateway API CRDs could not be installed in it.
func requireGatewayAPI(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if gatewayAPIErr != nil {
		t.Fatal(gatewayAPIErr)
	}
}

// gatewayClassCondition waits for a GatewayClass condition.
func gatewayClassCondition(t *testing.T, name, typ string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	peers.Eventually(t, settleTimeout, fmt.Sprintf("GatewayClass %s %s=%s %s", name, typ, want, reason), func() error {
		var gc gwv1.GatewayClass
		if err := k8s.Get(context.Background(), types.NamespacedName{Name: name}, &gc); err != nil {
			return err
		}
		return conditionIs(meta.FindStatusCondition(gc.Status.Conditions, typ), gc.Generation, want, reason)
	})
}

// routeCondition waits for a TLSRoute's condition in the entry of
// PortMux's controller.
func routeCondition(t *testing.T, ns, name, typ string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	peers.Eventually(t, settleTimeout, fmt.Sprintf("TLSRoute %s/%s %s=%s %s", ns, name, typ, want, reason), func() error {
		var r gwv1.TLSRoute
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		for _, p := range r.Status.Parents {
			if p.ControllerName == compile.GatewayControllerName {
				return conditionIs(meta.FindStatusCondition(p.Conditions, typ), r.Generation, want, reason)
			}
		}
		return errors.New("no status entry of PortMux yet")
	})
}

func conditionIs(c *metav1.Condition, gen int64, want metav1.ConditionStatus, reason string) error {
	if c == nil {
		return errors.New("no such condition yet")
	}
	if c.Status != want || c.Reason != reason || c.ObservedGeneration != gen {
		return fmt.Errorf("%s/%s (gen %d of %d): %s", c.Status, c.Reason, c.ObservedGeneration, gen, c.Message)
	}
	return nil
}

// A Terminate listener serves the certificate of its Secret and hands
// what is inside to a plain backend; a TCP listener of the same Gateway
// forwards to its TCPRoute's.
func TestGatewayTLSTerminateAndTCP(t *testing.T) {
	ns := startGatewayController(t)
	ctx := context.Background()
	h, p := echoBackend(t, "inner")
	serviceFor(t, ns, "inner", p, h)
	cert := peers.CertPair(t, "shop.example.test")
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert.CertPEM, corev1.TLSPrivateKeyKey: cert.KeyPEM},
	}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	class := createGatewayClass(t, ns)
	tlsPort, tcpPort := int32(peers.FreePort(t)), int32(peers.FreePort(t))
	gw := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: gwv1.ObjectName(class.Name),
			Listeners: []gwv1.Listener{{
				Name: "tls", Port: tlsPort, Protocol: gwv1.TLSProtocolType, Hostname: ptr.To(gwv1.Hostname("shop.example.test")),
				TLS: &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: "shop-tls"}}},
			}, {
				Name: "tcp", Port: tcpPort, Protocol: gwv1.TCPProtocolType,
			}},
		},
	}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	backend := []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{Name: "inner", Port: ptr.To(gwv1.PortNumber(80))}}}
	if err := k8s.Create(ctx, &gwv1.TLSRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
		Spec: gwv1.TLSRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "shop", SectionName: ptr.To(gwv1.SectionName("tls"))}}},
			Hostnames:       []gwv1.Hostname{"shop.example.test"},
			Rules:           []gwv1.TLSRouteRule{{BackendRefs: backend}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &gwv1.TCPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "raw"},
		Spec: gwv1.TCPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "shop", SectionName: ptr.To(gwv1.SectionName("tcp"))}}},
			Rules:           []gwv1.TCPRouteRule{{BackendRefs: backend}},
		},
	}); err != nil {
		t.Fatal(err)
	}

	routeCondition(t, ns, "shop", "Accepted", metav1.ConditionTrue, "Accepted")
	eventuallyTLS(t, "TLS terminated by the Gateway", tlsPort, "shop.example.test", "hi", "inner:hi", "shop.example.test")
	peers.Eventually(t, settleTimeout, "TCP through the Gateway", func() error {
		answer, err := talk(tcpPort, "raw")
		if err != nil {
			return err
		}
		if answer != "inner:raw" {
			return fmt.Errorf("answer %q", answer)
		}
		return nil
	})
}

// A UDP listener forwards the datagrams of each client to its UDPRoute's
// Service, and the answers back.
func TestGatewayUDP(t *testing.T) {
	ns := startGatewayController(t)
	ctx := context.Background()
	_, host, bport := udpEchoBackend(t)
	if err := k8s.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dns"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt(bport),
		}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dns-slice",
			Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To(int32(bport)), Protocol: ptr.To(corev1.ProtocolUDP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}); err != nil {
		t.Fatal(err)
	}
	class := createGatewayClass(t, ns)
	port := int32(peers.FreePort(t))
	if err := k8s.Create(ctx, &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dns"},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: gwv1.ObjectName(class.Name),
			Listeners:        []gwv1.Listener{{Name: "dns", Port: port, Protocol: gwv1.UDPProtocolType}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &gwv1.UDPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dns"},
		Spec: gwv1.UDPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "dns"}}},
			Rules: []gwv1.UDPRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
				Name: "dns", Port: ptr.To(gwv1.PortNumber(53)),
			}}}}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	peers.Eventually(t, settleTimeout, "a datagram through the Gateway and back", func() error {
		c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "ping" {
			return fmt.Errorf("answer %q", buf[:n])
		}
		return nil
	})
}

// Gateway listeners carry per-client caps although the Gateway API has no
// field for them (the manager's --gateway-max-connections-per-client):
// with a cap of 2, a client's third connection through a TCP listener is
// closed without reaching the backend, and a slot freed by closing one is
// usable again.
func TestGatewayClientLimits(t *testing.T) {
	requireGatewayAPI(t)
	ns, _, _ := startControllerWithOptions(t, restCfg, func(_ string, copt *Options) {
		copt.GatewayAPI = GatewayAPIOn
		copt.GatewayClientLimits = compile.ClientLimits{MaxConnectionsPerClient: 2}
	})
	h, p := echoBackend(t, "held")
	serviceFor(t, ns, "held", p, h)
	class := createGatewayClass(t, ns)
	port := int32(peers.FreePort(t))
	create(t, &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "capped"},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: gwv1.ObjectName(class.Name),
			Listeners:        []gwv1.Listener{{Name: "tcp", Port: port, Protocol: gwv1.TCPProtocolType}},
		},
	})
	create(t, &gwv1.TCPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "held"},
		Spec: gwv1.TCPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "capped"}}},
			Rules: []gwv1.TCPRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
				Name: "held", Port: ptr.To(gwv1.PortNumber(80)),
			}}}}},
		},
	})
	peers.Eventually(t, settleTimeout, "TCP through the Gateway", func() error {
		answer, err := talk(port, "up")
		if err == nil && answer != "held:up" {
			err = fmt.Errorf("answer %q", answer)
		}
		return err
	})

	// held opens a connection and proves it reaches the backend.
	held := func(line string) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), 2*time.Second)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			_ = c.Close()
			return nil, err
		}
		answer, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("connection %q: %w", line, err)
		}
		if strings.TrimSpace(answer) != "held:"+line {
			_ = c.Close()
			return nil, fmt.Errorf("connection %q answered %q", line, answer)
		}
		return c, nil
	}
	// The probe above closed its connection, but the dataplane frees that
	// slot only once both directions have ended, so the first two
	// connections may briefly find it still taken.
	var first, second net.Conn
	peers.Eventually(t, settleTimeout, "two held connections", func() (err error) {
		if first == nil {
			if first, err = held("one"); err != nil {
				return err
			}
		}
		second, err = held("two")
		return err
	})
	defer second.Close()
	if c, err := held("three"); err == nil {
		_ = c.Close()
		t.Fatal("a third connection from one client reached the backend past a cap of 2")
	}
	_ = first.Close()
	peers.Eventually(t, settleTimeout, "a connection in the slot the first one freed", func() error {
		c, err := held("four")
		if err == nil {
			_ = c.Close()
		}
		return err
	})
}
