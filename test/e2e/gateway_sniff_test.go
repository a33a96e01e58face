package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/portmux/portmux/test/peers"
)

// TestSniffingOnGatewayListener: issue 18's user story, `portmux manager`
// as a process. The site is a TLSRoute on a Gateway's TLS listener; the
// admin adds SSH and OpenVPN on that port with a PortMux whose listener has a
// parentRef to it. After kubectl apply, s_client gets the site's s_server
// by SNI during an ssh session through the PortMux on the same port, and
// an OpenVPN client reaches its server there too. A
// PortMux of a namespace the listener does not allow is
// NotAllowedByListeners, and TLS its catch-all would take is closed. With
// the PortMux deleted, the port is the Gateway's alone again.
func TestSniffingOnGatewayListener(t *testing.T) {
	e := startProcessEnv(t)
	cp, port := e.cp, e.muxPort
	if _, err := envtest.InstallCRDs(cp.env.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "config", "gateway-api")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install the Gateway API CRDs: %v", err)
	}
	e.phase("API server up with the Gateway API CRDs; backends: sshd %s, s_server %s (CN %s), %s (CN %s)",
		e.sshd.Addr, e.tlsA.Addr, e.tlsA.CN(), e.tlsB.Addr, e.tlsB.CN())

	mgr := startProc(t, e.dir, "manager", peers.Options{}, e.bin, "manager",
		"--kubeconfig", cp.kubeconfig,
		"--gateway-api", "on",
		"--dataplane-bind-address", "127.0.0.1",
		"--metrics-bind-address", e.metricsAddr,
		"--health-probe-bind-address", e.probeAddr,
		"--shutdown-grace", "2s")
	failed := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\n(manager log: %s; its tail is printed below)", fmt.Sprintf(format, args...), mgr.LogPath)
	}
	k, apply := cp.kubectl, cp.apply

	// kubectl explain tells the field from the markers.
	if out, err := k(30*time.Second, "explain", "portmux.spec.listeners.parentRef"); err != nil || !strings.Contains(out, "sectionName") || !strings.Contains(out, "allowedRoutes") {
		t.Errorf("kubectl explain portmux.spec.listeners.parentRef: %v\n%s", err, out)
	}

	apply("backends.yaml", backendObjects(e.sshd, e.tlsA, e.tlsB))
	apply("gateway.yaml", sharedPortGateway(port))
	vpn := e.sshd.Host.OpenVPN(t)
	apply("portmuxes.yaml", sharedPortPortMuxes(e.tlsB, vpn))
	e.phase("applied Gateway edge (TLS passthrough on %d), TLSRoute site, PortMuxes shell and %s/outsider", port, outsiderNamespace)

	wait := func(what string, args ...string) {
		t.Helper()
		if out, err := k(70*time.Second, append([]string{"wait", "--timeout=60s"}, args...)...); err != nil {
			failed("kubectl wait %s (%s): %v\n%s", strings.Join(args, " "), what, err, out)
		}
	}
	wait("the Gateway programmed", "-n", e2eNamespace, "--for=condition=Programmed", "gateway/edge")
	wait("the PortMux on the Gateway listener ready", "-n", e2eNamespace, "--for=condition=Ready", "portmux/shell")
	wait("the PortMux of a namespace the listener does not allow refused", "-n", outsiderNamespace, "--for=condition=Accepted=false", "portmux/outsider")
	e.phase("Gateway Programmed, PortMux shell Ready, outsider not Accepted")

	jsonpath := func(ns, obj, path string) string {
		t.Helper()
		out, err := k(10*time.Second, "get", "-n", ns, obj, "-o", "jsonpath="+path)
		if err != nil {
			failed("kubectl get %s -o jsonpath=%s: %v\n%s", obj, path, err, out)
		}
		return out
	}
	if got := jsonpath(outsiderNamespace, "portmux/outsider", `{.status.conditions[?(@.type=="Accepted")].reason} {.status.conditions[?(@.type=="Accepted")].message}`); !strings.HasPrefix(got, "NotAllowedByListeners ") || !strings.Contains(got, "Gateway "+e2eNamespace+"/edge") {
		failed("outsider's Accepted condition: %q, want NotAllowedByListeners naming Gateway %s/edge", got, e2eNamespace)
	}
	if got := jsonpath(e2eNamespace, "portmux/shell", `{.status.listeners[0].conditions[?(@.type=="Accepted")].message}`); !strings.Contains(got, "listener tls of Gateway "+e2eNamespace+"/edge") {
		failed("shell's listener Accepted message %q does not name the Gateway listener", got)
	}
	if out, err := k(10*time.Second, "get", "-n", e2eNamespace, "pmx", "shell"); err != nil || tableColumn(out, "PORTS", "shell") != strconv.Itoa(port) || tableColumn(out, "READY", "shell") != "True" {
		failed("kubectl get pmx shell: PORTS and READY, want %d and True (%v):\n%s", port, err, out)
	}
	// The Gateway counts the TLSRoute and the PortMux shell (not the
	// outsider) and lists the kind PortMux it was asked to take.
	peers.Eventually(t, followTimeout, "the Gateway listener counting the PortMux", func() error {
		got := jsonpath(e2eNamespace, "gateway/edge", `{.status.listeners[0].attachedRoutes} {.status.listeners[0].supportedKinds[*].kind}`)
		if got != "2 TLSRoute PortMux" {
			return fmt.Errorf("attachedRoutes and supportedKinds: %q, want \"2 TLSRoute PortMux\"", got)
		}
		return nil
	})
	e.phase("statuses: outsider NotAllowedByListeners, Gateway listener attachedRoutes 2 with kind PortMux")

	// An ssh session through the PortMux's route, open while TLS goes to
	// the TLSRoute's backend on the same port.
	session := startProc(t, e.dir, "ssh-session", peers.Options{Stdin: true}, e.sshd.Argv(peers.Loopback.Addr(port), "echo started; read x; echo still $x")...)
	session.MustWaitFor(t, "started", clientTimeout)
	if cn, err := sClientCN(t, port, "site.e2e.test"); err != nil || cn != e.tlsA.CN() {
		failed("s_client -servername site.e2e.test through the Gateway's port %d during the ssh session: CN %q, want %q: %v", port, cn, e.tlsA.CN(), err)
	}
	endSession(t, session, "the ssh session through the PortMux", failed)
	e.sshEcho(t, "a new ssh login after the TLS", failed)
	e.phase("TLS by SNI to the TLSRoute's s_server and an ssh session through the PortMux on one port")

	// OpenVPN (TCP, TLS inside its own framing) through the same port.
	client := vpn.Client(t, peers.Loopback.Addr(port))
	vpn.WaitConnected(t, client)
	client.Stop()
	e.phase("an OpenVPN client connected to its server through the Gateway's port")

	// The outsider's catch-all would send any other TLS to s_server B; it
	// is not attached, so that TLS has no route and is closed.
	if r, err := peers.SClientTry(t, peers.Loopback.Addr(port), "other.e2e.test"); err == nil {
		failed("TLS for other.e2e.test reached %q: the refused PortMux carries traffic", r.CN)
	}
	e.phase("the refused PortMux carries nothing")

	// The PortMux deleted: the Gateway counts the TLSRoute only, SSH on
	// the port is closed, the site still answers.
	if out, err := k(30*time.Second, "delete", "-n", e2eNamespace, "portmux/shell"); err != nil {
		failed("kubectl delete portmux/shell: %v\n%s", err, out)
	}
	peers.Eventually(t, followTimeout, "the Gateway listener forgetting the PortMux", func() error {
		if got := jsonpath(e2eNamespace, "gateway/edge", `{.status.listeners[0].attachedRoutes}`); got != "1" {
			return fmt.Errorf("attachedRoutes %q, want 1", got)
		}
		return nil
	})
	peers.Eventually(t, followTimeout, "ssh on the Gateway's port closed", func() error {
		if out, err := bounded(clientTimeout, e.sshd.Argv(peers.Loopback.Addr(port), "echo ok")...); err == nil {
			return fmt.Errorf("ssh still logs in: %s", out)
		}
		return nil
	})
	if cn, err := sClientCN(t, port, "site.e2e.test"); err != nil || cn != e.tlsA.CN() {
		failed("s_client -servername site.e2e.test after the PortMux left: CN %q, want %q: %v", cn, e.tlsA.CN(), err)
	}
	e.phase("PortMux deleted: attachedRoutes 1, ssh closed, TLS by SNI still served")
}

// outsiderNamespace holds the PortMux the Gateway listener does not allow
// (allowedRoutes.namespaces: Same).
const outsiderNamespace = "e2e-outsider"

// sharedPortGateway is the cluster's side: a GatewayClass of PortMux's, a
// Gateway whose TLS passthrough listener takes TLSRoutes and PortMuxes
// from its own namespace, and the site's TLSRoute.
func sharedPortGateway(port int) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: portmux
spec:
  controllerName: portmux.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: ` + e2eNamespace + `
spec:
  gatewayClassName: portmux
  listeners:
  - name: tls
    port: ` + strconv.Itoa(port) + `
    protocol: TLS
    tls: {mode: Passthrough}
    allowedRoutes:
      kinds:
      - {kind: TLSRoute}
      - {group: portmux.dev, kind: PortMux}
      namespaces: {from: Same}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: site
  namespace: ` + e2eNamespace + `
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [site.e2e.test]
  rules:
  - backendRefs: [{name: tls-a, port: 443}]
`
}

// sharedPortPortMuxes are the admin's additions: SSH and OpenVPN on the Gateway
// listener, and the same from a namespace it does not allow, with a
// catch-all to s_server B.
func sharedPortPortMuxes(tlsB *peers.TLSServer, vpn *peers.OpenVPNServer) string {
	vpnHost, _, _ := net.SplitHostPort(vpn.Addr)
	return `apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata:
  name: shell
  namespace: ` + e2eNamespace + `
spec:
  listeners:
  - name: shared
    parentRef: {name: edge, sectionName: tls}
  routes:
  - name: ssh
    match: {protocol: ssh}
    backend: {service: {name: sshd, port: ssh}}
  - name: vpn
    match: {protocol: openvpn}
    backend: {service: {name: openvpn, port: openvpn}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: ` + outsiderNamespace + `
` + serviceYAML(outsiderNamespace, "tls-b", "https", 443, string(tlsB.Host), tlsB.Port) +
		serviceYAML(e2eNamespace, "openvpn", "openvpn", 1194, vpnHost, vpn.Port) + `---
apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata:
  name: outsider
  namespace: ` + outsiderNamespace + `
spec:
  listeners:
  - name: shared
    parentRef: {name: edge, namespace: ` + e2eNamespace + `}
  routes:
  - name: everything
    match: {protocol: any}
    backend: {service: {name: tls-b, port: 443}}
`
}
