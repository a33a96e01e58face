package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/portmux/portmux/test/apiserver"
	"github.com/portmux/portmux/test/hostaddr"
	"github.com/portmux/portmux/test/peers"
)

const e2eNamespace = "e2e"

// TestManagerProcess runs `portmux manager` as its own process against a
// real API server and checks what a user would: kubectl apply, traffic from
// real clients through the manager's port, kubectl wait and get, a change
// that new connections follow while an open one lives on, metrics and
// readiness, and a dataplane that keeps serving when the API server is gone.
func TestManagerProcess(t *testing.T) {
	e := startProcessEnv(t)
	dir, cp, bin, phase := e.dir, e.cp, e.bin, e.phase
	sshd, tlsA, tlsB := e.sshd, e.tlsA, e.tlsB
	muxPort, metricsAddr, probeAddr := e.muxPort, e.metricsAddr, e.probeAddr
	phase("API server up at %s, portmux built; backends: sshd %s, s_server %s (CN %s), %s (CN %s)",
		cp.host, sshd.Addr, tlsA.Addr, tlsA.CN(), tlsB.Addr, tlsB.CN())

	mgr := startProc(t, dir, "manager", peers.Options{}, bin, "manager",
		"--kubeconfig", cp.kubeconfig,
		"--dataplane-bind-address", "127.0.0.1",
		"--metrics-bind-address", metricsAddr,
		"--health-probe-bind-address", probeAddr,
		"--shutdown-grace", "2s")
	mgrFailed := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\n(manager log: %s; its tail is printed below)", fmt.Sprintf(format, args...), mgr.LogPath)
	}

	k, apply := cp.kubectl, cp.apply
	apply("backends.yaml", backendObjects(sshd, tlsA, tlsB))
	apply("portmux.yaml", portMux(muxPort, "tls-a"))
	phase("applied the PortMux (port %d) and its Services and EndpointSlices", muxPort)

	if out, err := k(70*time.Second, "wait", "-n", e2eNamespace, "--for=condition=Ready", "portmux/edge", "--timeout=60s"); err != nil {
		status, _ := k(10*time.Second, "get", "-n", e2eNamespace, "portmux/edge", "-o", "jsonpath={.status}")
		mgrFailed("kubectl wait --for=condition=Ready portmux/edge: %v\n%s\nstatus: %s", err, out, status)
	}
	phase("PortMux Ready")

	sshEcho := func(when string) { t.Helper(); e.sshEcho(t, when, mgrFailed) }
	tlsReaches := func(when string, want *peers.TLSServer) { t.Helper(); e.tlsReaches(t, when, want, mgrFailed) }
	sshEcho("after Ready")
	tlsReaches("after Ready", tlsA)
	phase("ssh and s_client through the mux")

	// An ssh session opened before the change, still talking after it. It
	// waits for a line from the test, so it certainly spans the change.
	session := startProc(t, dir, "ssh-session", peers.Options{Stdin: true}, sshd.Argv(peers.Loopback.Addr(muxPort), "echo started; read x; echo still $x")...)
	session.MustWaitFor(t, "started", clientTimeout)

	apply("portmux-edited.yaml", portMux(muxPort, "tls-b"))
	changed := time.Now()
	eventuallyTLS(t, muxPort, tlsB.CN(), fmt.Sprintf("new TLS connections moving to %s after the change (manager log: %s; its tail is printed below)", tlsB.CN(), mgr.LogPath))
	phase("new TLS connections follow the change after %s", time.Since(changed).Round(time.Millisecond))

	endSession(t, session, "the ssh session opened before the change", mgrFailed)
	sshEcho("after the change")
	phase("the ssh session opened before the change lived through it; new ssh works")

	// Status follows the new generation; kubectl shows the Ready column.
	peers.Eventually(t, followTimeout, "status.observedGeneration reaching metadata.generation (manager log: "+mgr.LogPath+")", func() error {
		gens, _ := k(10*time.Second, "get", "-n", e2eNamespace, "portmux/edge", "-o", "jsonpath={.metadata.generation} {.status.observedGeneration}")
		if f := strings.Fields(gens); len(f) == 2 && f[0] == f[1] {
			return nil
		}
		return fmt.Errorf("generation, observed: %q", gens)
	})
	out, err := k(10*time.Second, "get", "-n", e2eNamespace, "pmx", "edge")
	if err != nil {
		t.Fatalf("kubectl get pmx: %v\n%s", err, out)
	}
	if got := tableColumn(out, "READY", "edge"); got != "True" {
		mgrFailed("kubectl get pmx: READY is %q, want True:\n%s", got, out)
	}
	t.Logf("kubectl get pmx:\n%s", strings.TrimRight(out, "\n"))

	metrics := getURL(t, "http://"+metricsAddr+"/metrics")
	var counted []string
	for line := range strings.SplitSeq(metrics.body, "\n") {
		if strings.HasPrefix(line, "portmux_connections_total{") {
			counted = append(counted, line)
		}
	}
	if metrics.code != http.StatusOK || len(counted) == 0 {
		mgrFailed("/metrics (%d) has no portmux_connections_total samples:\n%s", metrics.code, peers.LastLines(metrics.body, 40))
	}
	t.Logf("portmux_connections_total:\n%s", strings.Join(counted, "\n"))
	if r := getURL(t, "http://"+probeAddr+"/readyz"); r.code != http.StatusOK {
		mgrFailed("/readyz: %d %s", r.code, r.body)
	}
	phase("kubectl get pmx Ready=True, /metrics, /readyz")

	// Without the API server the dataplane keeps the last snapshot.
	cp.stop(t)
	phase("API server and etcd stopped")
	sshEcho("right after the API server stopped")
	select {
	case <-mgr.Exited():
		mgrFailed("the manager exited (%v) after the API server stopped", mgr.Err())
	case <-time.After(3 * time.Second):
	}
	sshEcho("3s after the API server stopped")
	tlsReaches("3s after the API server stopped", tlsB)
	if !mgr.Running() {
		mgrFailed("the manager exited (%v) after the API server stopped", mgr.Err())
	}
	phase("without the API server: the manager is alive, ssh and TLS still served")
}

// processEnv is what TestManagerProcess and TestSplitProcesses start
// alike: portmux built, a control plane, real backends on the test
// addresses (the API server refuses loopback endpoints) and three free
// ports on 127.0.0.1 for the mux, metrics and probes.
type processEnv struct {
	dir, bin   string
	cp         *controlPlane
	sshd       *peers.SSHServer
	tlsA, tlsB *peers.TLSServer

	muxPort                int
	metricsAddr, probeAddr string
	phase                  func(what string, args ...any)
}

// startProcessEnv starts a processEnv, or skips the test when envtest's
// assets or a peer program are missing.
func startProcessEnv(t *testing.T) *processEnv {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	kubectl := peers.LookPath(t, filepath.Join(assets, "kubectl"))
	goBin := peers.LookPath(t, "go")
	addrs := hostaddr.Ensure(t)
	logf.SetLogger(logr.Discard())

	e := &processEnv{dir: t.TempDir()}
	began := time.Now()
	e.phase = func(what string, args ...any) {
		t.Logf("%5.1fs  %s", time.Since(began).Seconds(), fmt.Sprintf(what, args...))
	}
	e.bin, e.cp = buildAndStartControlPlane(t, e.dir, goBin, kubectl)
	e.sshd = peers.Host(addrs[0]).SSHD(t)
	e.tlsA = peers.Host(addrs[0]).OpenSSLServer(t, "backend-a.e2e.test")
	e.tlsB = peers.Host(addrs[1]).OpenSSLServer(t, "backend-b.e2e.test")
	ports := peers.Loopback.FreePorts(t, 3)
	e.muxPort, e.metricsAddr, e.probeAddr = ports[0], peers.Loopback.Addr(ports[1]), peers.Loopback.Addr(ports[2])
	return e
}

// sshEcho runs `echo ok` by ssh through the mux and calls fail unless it
// printed ok.
func (e *processEnv) sshEcho(t *testing.T, when string, fail func(string, ...any)) {
	t.Helper()
	out, err := bounded(clientTimeout, e.sshd.Argv(peers.Loopback.Addr(e.muxPort), "echo ok")...)
	if err != nil || strings.TrimSpace(out) != "ok" {
		fail("%s: ssh through the mux on 127.0.0.1:%d: %v\n%s", when, e.muxPort, err, out)
	}
}

// tlsReaches calls fail unless TLS for site.e2e.test through the mux
// reaches want.
func (e *processEnv) tlsReaches(t *testing.T, when string, want *peers.TLSServer, fail func(string, ...any)) {
	t.Helper()
	cn, err := sClientCN(t, e.muxPort, "site.e2e.test")
	if err != nil || cn != want.CN() {
		fail("%s: s_client -servername site.e2e.test through 127.0.0.1:%d: got CN %q, want %q: %v", when, e.muxPort, cn, want.CN(), err)
	}
}

// controlPlane is a kube-apiserver and etcd from the envtest assets, with
// the CRDs installed, and an admin kubeconfig for kubectl.
type controlPlane struct {
	t          *testing.T
	dir        string
	kubectlBin string
	kubeconfig string
	host       string
	apiLog     string
	stopOnce   sync.Once
	stopErr    error
	env        *envtest.Environment
}

// buildAndStartControlPlane builds portmux into dir while it starts the
// control plane, and returns the binary and the control plane, which the
// test's end stops.
func buildAndStartControlPlane(t *testing.T, dir, goBin, kubectl string) (string, *controlPlane) {
	t.Helper()
	bin := filepath.Join(dir, "portmux")
	var buildErr error
	built := make(chan struct{})
	go func() {
		defer close(built)
		buildErr = buildPortmux(goBin, bin)
	}()
	t.Cleanup(func() { <-built })

	cp := &controlPlane{t: t, dir: dir, kubectlBin: kubectl, apiLog: filepath.Join(dir, "kube-apiserver.log")}
	cp.env = &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: time.Minute,
	}
	apiLog, err := os.Create(cp.apiLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apiLog.Close() })
	cp.env.ControlPlane.APIServer = &envtest.APIServer{Out: apiLog, Err: apiLog}
	// Stopping the API server while the manager still watches: without a
	// bound the graceful shutdown waits for those watches forever (until
	// envtest's SIGKILL after ControlPlaneStopTimeout).
	cp.env.ControlPlane.APIServer.Configure().Set("shutdown-watch-termination-grace-period", "1s")
	if _, err := cp.env.Start(); err != nil {
		t.Fatalf("start kube-apiserver and etcd from %s: %v", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	t.Cleanup(func() { _ = cp.stopNow() })
	cp.kubeconfig = filepath.Join(dir, "kubeconfig")
	admin, err := apiserver.WriteAdminKubeconfig(cp.env, "e2e-admin", cp.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cp.host = admin.Config().Host
	<-built
	if buildErr != nil {
		t.Fatalf("build portmux: %v", buildErr)
	}
	return bin, cp
}

// kubectl runs kubectl against the control plane.
func (cp *controlPlane) kubectl(timeout time.Duration, args ...string) (string, error) {
	return bounded(timeout, append([]string{cp.kubectlBin, "--kubeconfig", cp.kubeconfig}, args...)...)
}

// apply writes yaml to a file named name and kubectl-applies it.
func (cp *controlPlane) apply(name, yaml string) {
	cp.t.Helper()
	path := filepath.Join(cp.dir, name)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		cp.t.Fatal(err)
	}
	if out, err := cp.kubectl(30*time.Second, "apply", "-f", path); err != nil {
		cp.t.Fatalf("kubectl apply -f %s: %v\n%s", name, err, out)
	}
}

// stop stops the API server and etcd, failing the test if they do not.
func (cp *controlPlane) stop(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := cp.stopNow(); err != nil {
		out, _ := exec.Command("tail", "-50", cp.apiLog).CombinedOutput()
		t.Fatalf("stop the API server: %v after %s\n%s", err, time.Since(start), out)
	}
}

func (cp *controlPlane) stopNow() error {
	cp.stopOnce.Do(func() { cp.stopErr = cp.env.Stop() })
	return cp.stopErr
}

// buildPortmux builds ./cmd/portmux from the module root into bin, as
// `make build` does (same flags, so the build cache is shared).
func buildPortmux(goBin, bin string) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", bin, "./cmd/portmux")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

type urlResult struct {
	code int
	body string
}

func getURL(t *testing.T, url string) urlResult {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return urlResult{code: resp.StatusCode, body: b.String()}
}

// tableColumn returns the value in the named column of the row whose first
// field is name, from kubectl's table output.
func tableColumn(table, header, name string) string {
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 {
		return ""
	}
	idx := -1
	for i, h := range strings.Fields(lines[0]) {
		if h == header {
			idx = i
		}
	}
	if idx < 0 {
		return ""
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > idx && f[0] == name {
			return f[idx]
		}
	}
	return ""
}

// backendObjects are the Services and EndpointSlices that name the real
// backends, in their own namespace.
func backendObjects(sshd *peers.SSHServer, tlsA, tlsB *peers.TLSServer) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", e2eNamespace) +
		serviceYAML(e2eNamespace, "sshd", "ssh", 22, string(sshd.Host), sshd.Port) +
		serviceYAML(e2eNamespace, "tls-a", "https", 443, string(tlsA.Host), tlsA.Port) +
		serviceYAML(e2eNamespace, "tls-b", "https", 443, string(tlsB.Host), tlsB.Port)
}

// serviceYAML is a TCP Service of namespace ns with one port and its
// EndpointSlice: one ready endpoint at host:target. It starts with "---".
func serviceYAML(ns, name, portName string, port int, host string, target int) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[6]s
spec:
  ports:
  - {name: %[2]s, port: %[3]d, targetPort: %[5]d, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-1
  namespace: %[6]s
  labels:
    kubernetes.io/service-name: %[1]s
addressType: IPv4
ports:
- {name: %[2]s, port: %[5]d, protocol: TCP}
endpoints:
- addresses: [%[4]q]
  conditions: {ready: true}
`, name, portName, port, host, target, ns)
}

// portMux is the PortMux under test: SSH to sshd, TLS for site.e2e.test
// passed through to siteService.
func portMux(port int, siteService string) string {
	return `apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata:
  name: edge
  namespace: ` + e2eNamespace + `
spec:
  listeners:
  - name: public
    port: ` + strconv.Itoa(port) + `
    probeTimeout: 2s
  routes:
  - name: ssh
    listeners: [public]
    match: {protocol: ssh}
    backend: {service: {name: sshd, port: ssh}}
  - name: site
    listeners: [public]
    match: {protocol: tls, sni: [site.e2e.test]}
    backend: {service: {name: ` + siteService + `, port: 443}}
`
}
