//go:build e2e

package e2e

// The pod's split, on a real cluster: the dataplane container has nothing
// that reaches the API server, and connections through it outlive the
// manager container.
//
// What the dataplane container holds is looked at from outside it, with
// standard tools (ss, curl, the kernel's /proc) in an ephemeral container
// (`kubectl debug --target=dataplane`, the peers image) that shares the
// dataplane's process namespace and the pod's network: an honest witness,
// unlike a self-check built into portmux, which would be the code under
// test grading itself. The same inspection of the manager container is the
// control: it must find the token, a 200 from the API server and the
// manager's ports, or the method proves nothing.

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// inspectScript runs in an ephemeral container that targets a container
// (whose first process is PID 1 there) and reports, one key=value a line:
// its command line, the service account mount in its mount namespace and
// the size of the token there, the API server's answer to a request with
// that token (or none), and the pod's listening sockets with their owner
// where ss can tell (pid=1 is the target's).
const inspectScript = `
echo "cmdline=$(tr '\0' ' ' </proc/1/cmdline)"
mnt=$(awk '$5 ~ /secrets\/kubernetes\.io\/serviceaccount$/ {print $5; exit}' /proc/1/mountinfo)
echo "mountinfo-lines=$(wc -l </proc/1/mountinfo)"
echo "serviceaccount-mount=${mnt:-none}"
token=""
if [ -n "$mnt" ]; then token=$(cat "/proc/1/root$mnt/token" 2>/dev/null || true); fi
for d in /var/run/secrets/kubernetes.io/serviceaccount /run/secrets/kubernetes.io/serviceaccount; do
  if [ -e "/proc/1/root$d/token" ]; then echo "token-file=$d/token"; fi
done
echo "token-bytes=${#token}"
if [ -n "$token" ]; then
  code=$(curl -sk --max-time 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" https://kubernetes.default.svc/api)
else
  code=$(curl -sk --max-time 20 -o /dev/null -w '%{http_code}' https://kubernetes.default.svc/api)
fi
echo "api=$code"
ss -Hlntup | sed 's/^/ss=/'
`

// inspection is what inspectScript reported.
type inspection struct {
	cmdline, mount, api string
	mountinfoLines      int
	tokenBytes          int
	tokenFiles          []string
	ownPorts, allPorts  []string // "tcp/443": listening sockets of PID 1, and of the pod
	raw                 string
}

func parseInspection(out string) inspection {
	in := inspection{raw: out}
	for line := range strings.SplitSeq(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "cmdline":
			in.cmdline = strings.TrimSpace(v)
		case "serviceaccount-mount":
			in.mount = v
		case "mountinfo-lines":
			in.mountinfoLines, _ = strconv.Atoi(strings.TrimSpace(v))
		case "token-file":
			in.tokenFiles = append(in.tokenFiles, v)
		case "token-bytes":
			in.tokenBytes, _ = strconv.Atoi(v)
		case "api":
			in.api = v
		case "ss":
			// Netid State Recv-Q Send-Q Local:Port Peer:Port [users:(...)]
			f := strings.Fields(v)
			if len(f) < 5 {
				continue
			}
			port := f[0] + "/" + f[4][strings.LastIndex(f[4], ":")+1:]
			in.allPorts = append(in.allPorts, port)
			if strings.Contains(v, "pid=1,") {
				in.ownPorts = append(in.ownPorts, port)
			}
		}
	}
	slices.Sort(in.ownPorts)
	in.ownPorts = slices.Compact(in.ownPorts)
	slices.Sort(in.allPorts)
	in.allPorts = slices.Compact(in.allPorts)
	return in
}

// portmuxPod is the name of the (one) PortMux pod.
func (e *kindEnv) portmuxPod(t *testing.T) string {
	t.Helper()
	name := strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "pods", "-l", "app.kubernetes.io/name=portmux",
		"-o", "jsonpath={.items[0].metadata.name}"))
	if name == "" {
		t.Fatal("no PortMux pod")
	}
	return name
}

// inspect runs inspectScript in an ephemeral container beside target.
func (e *kindEnv) inspect(t *testing.T, pod, target string) inspection {
	t.Helper()
	name := "inspect-" + target
	e.kubectlOut(t, "-n", kindSystemNS, "debug", pod, "-c", name, "--target="+target, "--image="+kindPeersImage,
		"--image-pull-policy=Never", "--profile=restricted", "--", "sleep", "infinity")
	jsonpath := fmt.Sprintf(`jsonpath={.status.ephemeralContainerStatuses[?(@.name=="%s")].state.running.startedAt}`, name)
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		if strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "pod", pod, "-o", jsonpath)) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ephemeral container %s did not start:\n%s", name,
				e.kubectlOut(t, "-n", kindSystemNS, "get", "pod", pod, "-o", "jsonpath={.status.ephemeralContainerStatuses}"))
		}
	}
	out := e.kubectlOut(t, "-n", kindSystemNS, "exec", pod, "-c", name, "--", "sh", "-c", inspectScript)
	t.Logf("seen from beside the %s container:\n%s", target, strings.TrimSpace(out))
	return parseInspection(out)
}

// checkDataplaneHoldsNothing: the dataplane container has no token file,
// the API server refuses it for want of credentials, and it listens on
// its listener ports only (TCP and UDP 443); the manager container, inspected the same way,
// has the token, is answered, and listens on its own ports.
func (e *kindEnv) checkDataplaneHoldsNothing(t *testing.T) {
	pod := e.portmuxPod(t)
	t.Run("the manager container, inspected alike, has its token and API access", func(t *testing.T) {
		in := e.inspect(t, pod, "manager")
		if !strings.HasPrefix(in.cmdline, "/portmux manager ") {
			t.Fatalf("PID 1 beside the manager is %q", in.cmdline)
		}
		if in.mount == "none" || in.tokenBytes == 0 || in.api != "200" {
			t.Errorf("the manager: service account mount %q, token of %d bytes, API answered %q; want a mount, a token and 200",
				in.mount, in.tokenBytes, in.api)
		}
		if want := []string{"tcp/8080", "tcp/8081"}; !slices.Equal(in.ownPorts, want) {
			t.Errorf("the manager listens on %q, want %q", in.ownPorts, want)
		}
	})
	t.Run("the dataplane container has no token, no API access, no port but its listeners", func(t *testing.T) {
		in := e.inspect(t, pod, "dataplane")
		if !strings.HasPrefix(in.cmdline, "/portmux dataplane ") {
			t.Fatalf("PID 1 beside the dataplane is %q", in.cmdline)
		}
		if in.mountinfoLines == 0 {
			t.Fatalf("the dataplane's mount table could not be read: the checks below would prove nothing\n%s", in.raw)
		}
		if in.mount != "none" || len(in.tokenFiles) > 0 || in.tokenBytes != 0 {
			t.Errorf("the dataplane has a service account mount %q, token files %q (%d bytes)", in.mount, in.tokenFiles, in.tokenBytes)
		}
		if in.api != "401" && in.api != "403" {
			t.Errorf("the API server answered the dataplane's request with %q, want 401 or 403 (no credentials)", in.api)
		}
		if want := []string{"tcp/443", "udp/443"}; !slices.Equal(in.ownPorts, want) {
			t.Errorf("the dataplane listens on %q, want only %q (the pod listens on %q)", in.ownPorts, want, in.allPorts)
		}
		if !slices.Contains(in.allPorts, "tcp/8081") {
			t.Errorf("the pod's listening sockets %q lack the manager's 8081: ss does not see the pod's network", in.allPorts)
		}
	})
}

// session is a connection through the dataplane that stays open, driven
// from the client pod through kubectl exec -i.
type session struct {
	name string
	p    *peers.Process
	// ping writes something and waits for the proof that it went through.
	ping func(t *testing.T) error
}

// lineSession runs a remote shell through ssh that echoes each line.
func (e *kindEnv) lineSession(t *testing.T, name string, ssh ...string) *session {
	t.Helper()
	argv := append([]string{e.kubectl, "-n", kindAppNS, "exec", "-i", "client", "--"}, ssh...)
	argv = append(argv, `echo started; while read x; do echo "still $x"; done`)
	p := startProc(t, e.dir, name, peers.Options{Stdin: true, Env: e.env()}, argv...)
	p.MustWaitFor(t, "started", 2*time.Minute)
	n := 0
	return &session{name: name, p: p, ping: func(t *testing.T) error {
		n++
		word := fmt.Sprintf("ping-%d", n)
		if _, err := io.WriteString(p.Stdin, word+"\n"); err != nil {
			return err
		}
		if !printed(p, "still "+word, time.Minute) {
			return fmt.Errorf("no answer to %s:\n%s", word, p.Tail(10))
		}
		return nil
	}}
}

// checkManagerKill opens connections through the dataplane (SSH, SSH over
// the WebSocket tunnel, TLS passthrough), kills the manager container's
// process with SIGKILL from the node, and counts the connections that
// still talk once the manager is back: all of them. It also checks that
// the dataplane container did not restart and that new connections work.
func (e *kindEnv) checkManagerKill(t *testing.T, sshOpts []string, tunnelURL string) {
	pod := e.portmuxPod(t)
	sshTarget := append(slices.Clone(sshOpts), "-p", "443", "e2e@"+kindEdgeHost)
	proxy := fmt.Sprintf("ProxyCommand=portmux tunnel --ca-file /files/ca.crt --token-file /files/token -L stdio:sshd:22 %s", tunnelURL)
	var sessions []*session
	for i := range 3 {
		sessions = append(sessions, e.lineSession(t, fmt.Sprintf("kill-ssh-%d", i), sshTarget...))
	}
	sessions = append(sessions, e.lineSession(t, "kill-tunnel", append(slices.Clone(sshOpts), "-o", proxy, "e2e@sshd")...))
	tlsArgv := []string{e.kubectl, "-n", kindAppNS, "exec", "-i", "client", "--", "openssl", "s_client",
		"-connect", kindWebHost + ":443", "-servername", kindWebHost, "-CAfile", "/files/ca.crt"}
	tlsProc := startProc(t, e.dir, "kill-tls", peers.Options{Stdin: true, Env: e.env()}, tlsArgv...)
	tlsProc.MustWaitFor(t, "Verify return code: 0", 2*time.Minute)
	tlsDone := false
	sessions = append(sessions, &session{name: "kill-tls", p: tlsProc, ping: func(*testing.T) error {
		if tlsDone { // s_server -www answers one request, then closes
			return nil
		}
		tlsDone = true
		if _, err := io.WriteString(tlsProc.Stdin, "GET / HTTP/1.0\r\n\r\n"); err != nil {
			return err
		}
		if !printed(tlsProc, "s_server", time.Minute) {
			return fmt.Errorf("no page from the HTTPS server:\n%s", tlsProc.Tail(10))
		}
		return nil
	}})
	for _, s := range sessions[:len(sessions)-1] {
		if err := s.ping(t); err != nil {
			t.Fatalf("%s before the kill: %v", s.name, err)
		}
	}

	restarts := func(container string) int {
		jsonpath := fmt.Sprintf(`jsonpath={.status.containerStatuses[?(@.name=="%s")].restartCount}`, container)
		n, err := strconv.Atoi(strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "pod", pod, "-o", jsonpath)))
		if err != nil {
			t.Fatalf("restartCount of %s: %v", container, err)
		}
		return n
	}
	managerBefore, dataplaneBefore := restarts("manager"), restarts("dataplane")
	id := strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "pod", pod, "-o",
		`jsonpath={.status.containerStatuses[?(@.name=="manager")].containerID}`))
	node := strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"))
	podIP := strings.TrimSpace(e.kubectlOut(t, "-n", kindSystemNS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	_, cid, ok := strings.Cut(id, "://")
	if !ok || node == "" || net.ParseIP(podIP) == nil {
		t.Fatalf("manager container id %q, node %q, pod IP %q", id, node, podIP)
	}
	// SIGKILL from containerd on the node, to the manager's process: a crash,
	// not a shutdown (from inside its PID namespace, SIGKILL to PID 1 is
	// ignored).
	killed := time.Now()
	e.run(t, time.Minute, nil, e.docker, "exec", node, "ctr", "-n", "k8s.io", "task", "kill", "--signal", "SIGKILL", cid)
	e.step(t, "manager container %s killed (SIGKILL) on %s", cid[:12], node)

	// Straight to the pod, without the Service (which skips a pod that is
	// not Ready): the dataplane serves whatever the manager is doing.
	if out, err := e.clientExecErr(t, append(slices.Clone(sshOpts), "-p", "443", "e2e@"+podIP, "echo", "direct")...); err != nil || !strings.Contains(out, "direct") {
		t.Errorf("ssh straight to the dataplane right after the kill: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(3 * time.Minute); restarts("manager") == managerBefore; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the manager container did not restart after SIGKILL")
		}
	}
	restarted := time.Since(killed)
	e.kubectlOut(t, "-n", kindSystemNS, "wait", "pod/"+pod, "--for=condition=Ready", "--timeout=3m")
	e.step(t, "manager restarted %s after the kill, pod Ready again after %s", restarted.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))

	survived := 0
	for _, s := range sessions {
		if err := s.ping(t); err != nil {
			t.Errorf("%s did not survive the manager's kill: %v", s.name, err)
			continue
		}
		survived++
	}
	e.step(t, "%d of %d connections open through the dataplane survived the manager's kill", survived, len(sessions))
	if survived != len(sessions) {
		t.Errorf("%d of %d connections survived; want all", survived, len(sessions))
	}
	if n := restarts("dataplane"); n != dataplaneBefore {
		t.Errorf("the dataplane container restarted (%d, was %d)", n, dataplaneBefore)
	}
	// Through the Service, new connections reach the pod once kube-proxy
	// has seen it Ready again, which lags the pod's condition by up to a
	// sync period: until then the Service has no endpoint and refuses. A
	// refusal is retried for a while; anything else is an answer.
	var (
		out string
		err error
	)
	ready := time.Now()
	for deadline := ready.Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		out, err = e.clientExecErr(t, append(slices.Clone(sshTarget), "echo", "after-kill")...)
		if err == nil || !strings.Contains(out, "Connection refused") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !strings.Contains(out, "after-kill") {
		t.Errorf("a new ssh connection through the Service after the manager came back: %v\n%s", err, out)
	} else {
		e.step(t, "a new ssh connection through the Service %s after the pod was Ready", time.Since(ready).Round(100*time.Millisecond))
	}
	e.kubectlOut(t, "-n", kindAppNS, "wait", "portmux/edge", "--for=condition=Ready", "--timeout=3m")
	for _, s := range sessions {
		_ = s.p.Stdin.Close()
	}
}
