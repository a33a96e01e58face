//go:build e2e

package e2e

// TestKind is the last test tier (docs/architecture.md): the image, the Helm chart, a
// real kind cluster, and traffic from a pod. It builds the portmux image
// (`make docker-build`, which falls back to a FROM scratch image when no base
// image can be had) and a peers image (sshd, openssl, curl, ssh and the
// portmux tunnel client on a Debian base), loads both into a new kind
// cluster, installs charts/portmux with helm, deploys an sshd and an HTTPS
// server (openssl s_server), applies a PortMux with one port, 443, and from
// a client pod reaches
//
//   - SSH, sniffed on 443;
//   - the HTTPS server, by SNI, TLS passed through (the client verifies the
//     backend's own certificate);
//   - SSH again through a WebSocket tunnel: TLS terminated by PortMux on 443
//     (another SNI), then the tunnel route's token and allow list;
//   - the cluster's DNS server (CoreDNS) on 443/udp, beside TCP 443 on the
//     same address: the chart's Service carries 443/TCP and 443/UDP, the
//     PortMux a UDP listener on 443 whose dns route (which names no
//     listener, so it lands on the UDP one) reaches a UDP Service port;
//
// and checks that `kubectl get portmux` shows it Ready and that the tunnel
// refuses a client without the token. Then it checks the pod's split
// (kind_split_test.go): the dataplane container has no token file, no
// Kubernetes API access and no listening port but its listener's, seen
// from an ephemeral container beside it; and every connection open
// through the dataplane survives a SIGKILL of the manager container.
//
// It skips, with a one-line reason, where it cannot run: no docker CLI or
// engine, no kind or helm in ./bin (`make test-e2e` installs them), no
// kubectl, or a node image or peers base image that is neither present nor
// pullable. Once those are there, everything else failing fails the test.
//
// Knobs (environment):
//
//	PORTMUX_E2E_NODE_IMAGE   kind node image (default: kind v0.33.0's own,
//	                         kindDefaultNodeImage); point it at a locally
//	                         built image where no registry is reachable
//	PORTMUX_E2E_KIND_CONFIG  a kind Config file for `kind create cluster`
//	                         (node config patches for unusual hosts)
//	PORTMUX_E2E_PEERS_BASE   base of the peers image (default
//	                         debian:bookworm-slim; it needs apt-get)
//	PORTMUX_E2E_CLUSTER      cluster name (default portmux-e2e)
//	PORTMUX_E2E_KEEP=1       keep the cluster afterwards (kubeconfig path is logged)
//	KIND, HELM, KUBECTL, DOCKER  the programs (defaults: bin/kind-$(KIND_VERSION),
//	                         bin/helm-$(HELM_VERSION), the envtest assets'
//	                         kubectl or PATH's, docker on PATH)

import (
	"crypto/rand"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

const (
	// kind v0.33.0's default node image (sigs.k8s.io/kind/pkg/apis/config/defaults.Image).
	kindDefaultNodeImage = "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5"
	kindDefaultPeersBase = "debian:bookworm-slim"
	kindDefaultCluster   = "portmux-e2e"

	kindRepoRoot     = "../.."
	kindImageRepo    = "portmux.local/portmux"
	kindImageTag     = "e2e"
	kindPeersImage   = "portmux.local/e2e-peers:e2e"
	kindRelease      = "portmux"
	kindSystemNS     = "portmux-system"
	kindAppNS        = "portmux-e2e"
	kindDataplaneSvc = "portmux-dataplane"
	kindManager      = "portmux-controller-manager"

	kindWebHost    = "web.e2e.test"    // SNI passthrough to the HTTPS server
	kindTunnelHost = "tunnel.e2e.test" // SNI terminated by PortMux, then the WebSocket tunnel
	kindEdgeHost   = "edge.e2e.test"   // the dataplane, for SSH
)

// kindPeersDockerfile builds the image the sshd, the HTTPS server and the
// client run from. Root in these pods is fine: they are test peers in their
// own namespace, not the system under test.
const kindPeersDockerfile = `ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openssh-server openssh-client openssl curl ca-certificates coreutils iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --shell /bin/sh e2e \
 && usermod --password '*' e2e \
 && mkdir -p /run/sshd
COPY portmux /usr/local/bin/portmux
`

// kindWorkloads is everything in the test namespace but the Secrets, which
// are created from generated files; kindManifest fills it in.
//
//go:embed testdata/kind-workloads.yaml
var kindWorkloads string

// kindManifest is kindWorkloads with its images, host names, the
// dataplane's address ip and a CoreDNS pod's address coreDNS (Service dns
// has no selector: its EndpointSlice names that pod, so that a UDP Service
// port of the test's namespace leads to a real DNS server).
func kindManifest(ip, coreDNS string) string {
	return strings.NewReplacer("@PEERS@", kindPeersImage, "@DATAPLANE_IP@", ip, "@COREDNS_IP@", coreDNS,
		"@WEB_HOST@", kindWebHost, "@TUNNEL_HOST@", kindTunnelHost, "@EDGE_HOST@", kindEdgeHost).Replace(kindWorkloads)
}

// kindEnv is what the test found on the machine.
type kindEnv struct {
	docker, kind, helm, kubectl string
	nodeImage, peersBase        string
	cluster, kindConfig         string
	dir, kubeconfig             string
	start                       time.Time
}

func TestKind(t *testing.T) {
	if testing.Short() {
		t.Skip("kind e2e: -short")
	}
	e := kindPreflight(t)
	e.dir = t.TempDir()
	e.kubeconfig = filepath.Join(e.dir, "kubeconfig")
	e.start = time.Now()

	e.step(t, "building the portmux image %s:%s and the peers image %s", kindImageRepo, kindImageTag, kindPeersImage)
	e.buildImages(t)

	e.step(t, "creating kind cluster %s with node image %s", e.cluster, e.nodeImage)
	e.createCluster(t)

	e.step(t, "loading the images into the cluster")
	e.run(t, 10*time.Minute, nil, e.kind, "load", "docker-image", "--name", e.cluster, kindImageRepo+":"+kindImageTag, kindPeersImage)

	e.step(t, "helm install %s", filepath.Join(kindRepoRoot, "charts", "portmux"))
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpState(t)
		}
	})
	e.run(t, 6*time.Minute, nil, e.helm, "install", kindRelease, filepath.Join(kindRepoRoot, "charts", "portmux"),
		"--namespace", kindSystemNS, "--create-namespace",
		"--set", "image.repository="+kindImageRepo, "--set", "image.tag="+kindImageTag, "--set", "image.pullPolicy=Never",
		// kind has no load balancer; the client pod uses the ClusterIP.
		"--set", "service.type=ClusterIP",
		// 443 twice: TCP for SSH, TLS and tunnels, UDP for DNS.
		"--set-json", `service.ports=[{"name":"public","port":443},{"name":"public-udp","port":443,"protocol":"UDP"}]`,
		// The test's PortMuxes live in their own namespace: grant it every
		// port (by default only the release's namespace may claim ports).
		"--set-json", `portPolicy=[{"ports":"*","namespaces":["`+kindAppNS+`"]}]`,
		"--wait", "--timeout", "5m")
	ip := strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "service", kindDataplaneSvc, "-o", "jsonpath={.spec.clusterIP}"))
	if net.ParseIP(ip) == nil {
		t.Fatalf("the dataplane Service has no cluster IP: %q", ip)
	}

	e.step(t, "deploying sshd, the HTTPS server, the PortMux and the client pod in %s", kindAppNS)
	files := kindWriteFiles(t, e.dir)
	e.kubectlOut(t, "create", "namespace", kindAppNS)
	for _, args := range [][]string{
		{"create", "secret", "generic", "sshd-keys", "--from-file=authorized_keys=" + files["authorized_keys"]},
		{"create", "secret", "tls", "web-tls", "--cert=" + files["web.crt"], "--key=" + files["web.key"]},
		{"create", "secret", "tls", "tunnel-tls", "--cert=" + files["tunnel.crt"], "--key=" + files["tunnel.key"]},
		{"create", "secret", "generic", "tunnel-token", "--from-file=token=" + files["token"]},
		{"create", "secret", "generic", "client-files", "--from-file=ca.crt=" + files["ca.crt"],
			"--from-file=id_ed25519=" + files["id_ed25519"], "--from-file=token=" + files["token"]},
	} {
		e.kubectlOut(t, append([]string{"-n", kindAppNS}, args...)...)
	}
	coreDNS := strings.TrimSpace(e.kubectlOut(t, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns",
		"-o", "jsonpath={.items[0].status.podIP}"))
	if net.ParseIP(coreDNS) == nil {
		t.Fatalf("no CoreDNS pod address: %q", coreDNS)
	}
	manifest := kindManifest(ip, coreDNS)
	e.run(t, time.Minute, strings.NewReader(manifest), e.kubectl, "-n", kindAppNS, "apply", "-f", "-")
	e.kubectlOut(t, "-n", kindAppNS, "rollout", "status", "deployment/sshd", "deployment/web", "--timeout=3m")
	e.kubectlOut(t, "-n", kindAppNS, "wait", "pod/client", "--for=condition=Ready", "--timeout=3m")

	e.step(t, "waiting for the PortMux to be Ready")
	e.kubectlOut(t, "-n", kindAppNS, "wait", "portmux/edge", "--for=condition=Ready", "--timeout=3m")
	t.Run("kubectl get portmux shows Ready", func(t *testing.T) {
		table := e.kubectlOut(t, "-n", kindAppNS, "get", "portmux")
		if got := kindColumn(table, "READY", "edge"); got != "True" {
			t.Errorf("READY of edge is %q:\n%s", got, table)
		}
	})

	// Every client below connects to the same address and port:
	// <dataplane cluster IP>:443.
	sshOpts := []string{"ssh", "-i", "/files/id_ed25519", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"}
	t.Run("ssh on 443", func(t *testing.T) {
		out := e.clientExec(t, append(sshOpts, "-p", "443", "e2e@"+kindEdgeHost, "echo", "ssh-via-portmux")...)
		if !strings.Contains(out, "ssh-via-portmux") {
			t.Errorf("ssh through port 443 printed %q", out)
		}
	})
	t.Run("tls passthrough by sni on 443", func(t *testing.T) {
		// --cacert with the test CA and the web host name: the handshake only
		// succeeds if the HTTPS server's own certificate reaches the client,
		// i.e. PortMux passed the TLS stream through untouched.
		out := e.clientExec(t, "curl", "--silent", "--show-error", "--fail", "--max-time", "20",
			"--cacert", "/files/ca.crt", "https://"+kindWebHost+":443/")
		if !strings.Contains(out, "s_server") {
			t.Errorf("the HTTPS server's page did not come back:\n%s", out)
		}
	})
	tunnelURL := "wss://" + kindTunnelHost + ":443/tunnel"
	t.Run("websocket tunnel on 443", func(t *testing.T) {
		proxy := fmt.Sprintf("ProxyCommand=portmux tunnel --ca-file /files/ca.crt --token-file /files/token -L stdio:sshd:22 %s", tunnelURL)
		out := e.clientExec(t, append(sshOpts, "-o", proxy, "e2e@sshd", "echo", "ssh-via-tunnel")...)
		if !strings.Contains(out, "ssh-via-tunnel") {
			t.Errorf("ssh through the WebSocket tunnel printed %q", out)
		}
	})
	// A tunnel is never an open proxy: no token, or a target outside the
	// allow list, and the handshake is refused before anything is dialled.
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"websocket tunnel refuses a client without the token", "401", []string{"-L", "stdio:sshd:22"}},
		{"websocket tunnel refuses a target not in allow", "403", []string{"--token-file", "/files/token", "-L", "stdio:web:443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv := append([]string{"timeout", "60", "portmux", "tunnel", "--ca-file", "/files/ca.crt", "--retries", "0"}, tc.args...)
			out, err := e.clientExecErr(t, append(argv, tunnelURL)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("portmux tunnel %s: err %v, want a %s refusal:\n%s", strings.Join(tc.args, " "), err, tc.want, out)
			}
		})
	}
	t.Run("dns on 443/udp beside tcp 443", func(t *testing.T) {
		// bash's /dev/udp: a query for kube-dns.kube-system.svc.cluster.local
		// A (ID 0x1234), then the answer's first four bytes: the ID, and
		// flags with QR set and RCODE 0 (NOERROR). No byte of the query is
		// 0x0a: bash's printf writes up to each newline apart, which would
		// cut the query into two datagrams.
		query := `\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00` +
			`\x08kube-dns\x0bkube-system\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01`
		script := fmt.Sprintf(`exec 3<>/dev/udp/%s/443 && printf '%s' >&3 && timeout 10 od -An -tx1 -N4 <&3`, ip, query)
		var answer []string
		var out string
		var err error
		for range 5 { // UDP: nobody resends a datagram lost while kube-proxy programs the Service
			out, err = e.clientExecErr(t, "bash", "-c", script)
			if answer = strings.Fields(out); err == nil && len(answer) == 4 {
				break
			}
		}
		if err != nil {
			t.Fatalf("no DNS answer through 443/udp: %v\n%s", err, out)
		}
		if len(answer) != 4 || answer[0] != "12" || answer[1] != "34" || answer[2] < "80" || !strings.HasSuffix(answer[3], "0") {
			t.Errorf("the DNS answer through 443/udp starts with %q, want 12 34, QR set, RCODE 0", answer)
		}
	})
	// Metrics are served over HTTPS to scrapers allowed to get /metrics:
	// the manager asks the API server about each token with the rights
	// the chart grants it (portmux-metrics-auth).
	t.Run("metrics only for a scraper bound to metrics-reader", func(t *testing.T) {
		e.kubectlOut(t, "-n", kindAppNS, "create", "serviceaccount", "scraper")
		e.kubectlOut(t, "create", "clusterrolebinding", "e2e-scraper", "--clusterrole="+kindRelease+"-metrics-reader",
			"--serviceaccount="+kindAppNS+":scraper")
		t.Cleanup(func() {
			_, _ = peers.Command{Timeout: time.Minute, Env: e.env()}.Combined(e.kubectl, "delete", "clusterrolebinding", "e2e-scraper")
		})
		token := strings.TrimSpace(e.kubectlOut(t, "-n", kindAppNS, "create", "token", "scraper"))
		url := "https://" + kindRelease + "-metrics." + kindSystemNS + ".svc:8080/metrics"
		curl := []string{"curl", "--silent", "--show-error", "--insecure", "--max-time", "20"}
		out := e.clientExec(t, append(curl, "--fail", "-H", "Authorization: Bearer "+token, url)...)
		if !strings.Contains(out, "portmux_connections_total") {
			t.Errorf("the scraper's /metrics has no portmux_connections_total:\n%s", peers.LastLines(out, 20))
		}
		code := e.clientExec(t, append(curl, "--output", "/dev/null", "--write-out", "%{http_code}", url)...)
		if strings.TrimSpace(code) != "401" {
			t.Errorf("/metrics without a token answered %q, want 401", code)
		}
	})
	e.step(t, "checking that the dataplane container holds no credentials")
	e.checkDataplaneHoldsNothing(t)
	e.step(t, "killing the manager container's process while connections are open")
	e.checkManagerKill(t, sshOpts, tunnelURL)
	e.step(t, "done")
}

// kindPreflight finds the programs and images, or skips with the reason.
func kindPreflight(t *testing.T) *kindEnv {
	t.Helper()
	e := &kindEnv{
		nodeImage:  kindEnvOr("PORTMUX_E2E_NODE_IMAGE", kindDefaultNodeImage),
		peersBase:  kindEnvOr("PORTMUX_E2E_PEERS_BASE", kindDefaultPeersBase),
		cluster:    kindEnvOr("PORTMUX_E2E_CLUSTER", kindDefaultCluster),
		kindConfig: os.Getenv("PORTMUX_E2E_KIND_CONFIG"),
	}
	var err error
	if e.docker, err = exec.LookPath(kindEnvOr("DOCKER", "docker")); err != nil {
		t.Skip("kind e2e: no docker CLI on PATH")
	}
	if out, err := bounded(30*time.Second, e.docker, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("kind e2e: no Docker engine (docker info: %s)", kindFirstLine(out, err))
	}
	e.kind = kindTool(t, "KIND", "KIND_VERSION", "kind", "make kind")
	e.helm = kindTool(t, "HELM", "HELM_VERSION", "helm", "make helm")
	e.kubectl = kindKubectl(t)
	if e.kindConfig != "" {
		if _, err := os.Stat(e.kindConfig); err != nil {
			t.Fatalf("PORTMUX_E2E_KIND_CONFIG: %v", err)
		}
	}
	for _, img := range []struct{ what, ref, knob string }{
		{"node image", e.nodeImage, "PORTMUX_E2E_NODE_IMAGE"},
		{"peers base image", e.peersBase, "PORTMUX_E2E_PEERS_BASE"},
	} {
		if !kindHaveImage(e.docker, img.ref) {
			t.Skipf("kind e2e: %s %s is not present and cannot be pulled: set %s to a local image", img.what, img.ref, img.knob)
		}
	}
	return e
}

// kindHaveImage reports whether an image is present, pulling it if it is not.
func kindHaveImage(docker, ref string) bool {
	if _, err := bounded(30*time.Second, docker, "image", "inspect", ref); err == nil {
		return true
	}
	_, err := bounded(15*time.Minute, docker, "pull", "--quiet", ref)
	return err == nil
}

// kindTool is $ENV, or bin/NAME-$(VERSION_VAR) as the Makefile installs it.
func kindTool(t *testing.T, env, versionVar, name, install string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("kind e2e: %s=%s: %v", env, p, err)
		}
		return p
	}
	mk, err := os.ReadFile(filepath.Join(kindRepoRoot, "Makefile"))
	if err != nil {
		t.Fatalf("reading the Makefile: %v", err)
	}
	m := regexp.MustCompile(`(?m)^` + versionVar + ` \?= (\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatalf("no %s in the Makefile", versionVar)
	}
	p, _ := filepath.Abs(filepath.Join(kindRepoRoot, "bin", name+"-"+string(m[1])))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("kind e2e: %s is not in ./bin (%s): run `%s` or `make test-e2e`", name, filepath.Base(p), install)
	}
	return p
}

func kindKubectl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KUBECTL"); p != "" {
		return p
	}
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if p := filepath.Join(dir, "kubectl"); kindExists(p) {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kind e2e: no kubectl (KUBECTL, KUBEBUILDER_ASSETS or PATH)")
	}
	return p
}

func (e *kindEnv) buildImages(t *testing.T) {
	t.Helper()
	// The Makefile's recipe: the Dockerfile when its base images are there,
	// else Dockerfile.offline FROM scratch. It also builds bin/portmux.
	e.runIn(t, kindRepoRoot, 20*time.Minute, nil, "make", "docker-build",
		"IMG="+kindImageRepo+":"+kindImageTag, "DOCKER="+e.docker)
	ctx := filepath.Join(e.dir, "peers")
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(filepath.Join(kindRepoRoot, "bin", "portmux"))
	if err != nil {
		t.Fatalf("bin/portmux after make docker-build: %v", err)
	}
	kindWrite(t, filepath.Join(ctx, "portmux"), bin, 0o755)
	kindWrite(t, filepath.Join(ctx, "Dockerfile"), []byte(kindPeersDockerfile), 0o644)
	e.run(t, 20*time.Minute, nil, e.docker, "build", "--build-arg", "BASE="+e.peersBase, "-t", kindPeersImage, ctx)
}

func (e *kindEnv) createCluster(t *testing.T) {
	t.Helper()
	// A cluster left over by an interrupted run would make create fail.
	if out, err := bounded(time.Minute, e.kind, "get", "clusters"); err == nil &&
		regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(e.cluster)+`$`).MatchString(out) {
		e.run(t, 5*time.Minute, nil, e.kind, "delete", "cluster", "--name", e.cluster)
	}
	args := []string{"create", "cluster", "--name", e.cluster, "--image", e.nodeImage,
		"--kubeconfig", e.kubeconfig, "--wait", "5m", "--retain"}
	if e.kindConfig != "" {
		args = append(args, "--config", e.kindConfig)
	}
	t.Cleanup(func() {
		if os.Getenv("PORTMUX_E2E_KEEP") == "1" {
			keep := filepath.Join(os.TempDir(), "portmux-e2e-kubeconfig")
			if b, err := os.ReadFile(e.kubeconfig); err == nil && os.WriteFile(keep, b, 0o600) == nil {
				t.Logf("keeping cluster %s (PORTMUX_E2E_KEEP=1); kubeconfig: %s", e.cluster, keep)
			}
			return
		}
		if t.Failed() {
			// --retain kept the nodes of a failed create; their logs say why.
			dir := filepath.Join(os.TempDir(), "portmux-e2e-kind-logs")
			if _, err := bounded(5*time.Minute, e.kind, "export", "logs", dir, "--name", e.cluster); err == nil {
				t.Logf("kind logs exported to %s", dir)
			}
		}
		if out, err := bounded(5*time.Minute, e.kind, "delete", "cluster", "--name", e.cluster, "--kubeconfig", e.kubeconfig); err != nil {
			t.Errorf("kind delete cluster %s: %v\n%s", e.cluster, err, out)
		}
	})
	e.run(t, 10*time.Minute, nil, append([]string{e.kind}, args...)...)
}

// dumpState logs what explains a failure: the PortMux status, the
// manager's logs, the pods and the events.
func (e *kindEnv) dumpState(t *testing.T) {
	for _, args := range [][]string{
		{"get", "portmux", "-A", "-o", "yaml"},
		{"get", "pods", "-A", "-o", "wide"},
		{"-n", kindSystemNS, "logs", "deployment/" + kindManager, "-c", "manager", "--tail=200"},
		{"-n", kindSystemNS, "logs", "deployment/" + kindManager, "-c", "manager", "--previous", "--tail=100"},
		{"-n", kindSystemNS, "logs", "deployment/" + kindManager, "-c", "dataplane", "--tail=200"},
		{"-n", kindAppNS, "logs", "deployment/sshd", "--tail=50"},
		{"-n", kindAppNS, "logs", "deployment/web", "--tail=50"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, err := peers.Command{Timeout: time.Minute, Env: e.env()}.Combined(append([]string{e.kubectl}, args...)...)
		t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, peers.LastLines(out, 120))
	}
}

func (e *kindEnv) step(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("%6.1fs  %s", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

// env is the environment of every command: the cluster's kubeconfig, and
// helm's state in the test's directory.
func (e *kindEnv) env() []string {
	return append(os.Environ(),
		"KUBECONFIG="+e.kubeconfig,
		"HELM_CONFIG_HOME="+filepath.Join(e.dir, "helm", "config"),
		"HELM_CACHE_HOME="+filepath.Join(e.dir, "helm", "cache"),
		"HELM_DATA_HOME="+filepath.Join(e.dir, "helm", "data"),
	)
}

func (e *kindEnv) run(t *testing.T, timeout time.Duration, stdin io.Reader, argv ...string) string {
	t.Helper()
	return e.runIn(t, "", timeout, stdin, argv...)
}

func (e *kindEnv) runIn(t *testing.T, dir string, timeout time.Duration, stdin io.Reader, argv ...string) string {
	t.Helper()
	out, err := peers.Command{Timeout: timeout, Stdin: stdin, Env: e.env(), Dir: dir}.Combined(argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, peers.LastLines(out, 80))
	}
	return out
}

func (e *kindEnv) kubectlOut(t *testing.T, args ...string) string {
	t.Helper()
	return e.run(t, 4*time.Minute, nil, append([]string{e.kubectl}, args...)...)
}

// clientExec runs a command in the client pod and fails the test when it
// fails.
func (e *kindEnv) clientExec(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := e.clientExecErr(t, argv...)
	if err != nil {
		t.Fatalf("in the client pod, %s: %v\n%s", strings.Join(argv, " "), err, peers.LastLines(out, 40))
	}
	return out
}

func (e *kindEnv) clientExecErr(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	args := append([]string{"-n", kindAppNS, "exec", "client", "--"}, argv...)
	return peers.Command{Timeout: 2 * time.Minute, Env: e.env()}.Combined(append([]string{e.kubectl}, args...)...)
}

// kindWriteFiles generates the test's secrets into dir: a CA, certificates
// for the HTTPS server and for PortMux's TLS termination, an SSH key pair
// and a tunnel token. It returns their paths by name.
func kindWriteFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	ca := peers.NewCA(t, "portmux e2e CA")
	files["ca.crt"], _ = ca.WriteFiles(t, dir, "ca")
	for _, leaf := range []struct{ name, host string }{{"web", kindWebHost}, {"tunnel", kindTunnelHost}} {
		files[leaf.name+".crt"], files[leaf.name+".key"] = ca.Issue(t, leaf.host, x509.ExtKeyUsageServerAuth, leaf.host).WriteFiles(t, dir, leaf.name)
	}
	files["id_ed25519"] = filepath.Join(dir, "id_ed25519")
	files["authorized_keys"] = filepath.Join(dir, "authorized_keys")
	kindWrite(t, files["authorized_keys"], peers.WriteSSHKey(t, files["id_ed25519"]), 0o600)
	token := make([]byte, 24)
	if _, err := rand.Read(token); err != nil {
		t.Fatal(err)
	}
	// With a final newline, as `echo TOKEN > token` writes it: the Secret
	// made from the file with --from-file keeps it, and the tunnel must
	// ignore it.
	files["token"] = filepath.Join(dir, "token")
	kindWrite(t, files["token"], []byte(hex.EncodeToString(token)+"\n"), 0o600)
	return files
}

func kindWrite(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// kindColumn returns the cell of a kubectl table in the named column, on the
// row whose first cell is row. kubectl aligns columns on the header, and a
// cell may be empty, so cells are cut at the header's offsets.
func kindColumn(table, column, row string) string {
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) < 2 {
		return ""
	}
	header := lines[0]
	at := regexp.MustCompile(`(^|\s)` + regexp.QuoteMeta(column) + `(\s|$)`).FindStringIndex(header)
	if at == nil {
		return ""
	}
	start := at[0]
	if header[start] == ' ' {
		start++
	}
	end := len(header)
	if next := regexp.MustCompile(`\s\S`).FindStringIndex(header[start+len(column):]); next != nil {
		end = start + len(column) + next[0] + 1
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) == 0 || f[0] != row || len(l) <= start {
			continue
		}
		return strings.TrimSpace(l[start:min(end, len(l))])
	}
	return ""
}

func kindEnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func kindExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func kindFirstLine(out string, err error) string {
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return err.Error()
}
