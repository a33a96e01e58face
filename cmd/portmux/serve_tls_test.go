package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/portmux/portmux/test/peers"
)

// `portmux serve` with certificates from kind: Secret documents: a changed
// Secret file serves new handshakes with the new certificate while streams
// opened before keep flowing, and a Secret without a valid key pair is
// logged and takes down only the listener that needs it.

// serveLog collects runServe's log lines.
type serveLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *serveLog) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, prefix+" "+args)
}

func (l *serveLog) contains(substrs ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		ok := true
		for _, s := range substrs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func (l *serveLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// tlsSecret is a kind: Secret document holding cert.
func tlsSecret(name string, certPEM, keyPEM []byte) string {
	indent := func(b []byte) string {
		return "    " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ")
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
%s
  tls.key: |
%s
`, name, indent(certPEM), indent(keyPEM))
}

// writeAtomically replaces path the way kubelet updates a mounted Secret:
// a new file renamed over the old one.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func certID(der []byte) string {
	sum := sha256.Sum256(der)
	return fmt.Sprintf("%x", sum[:8])
}

// handshake returns the certificate a new TLS connection to addr gets, or
// an error.
func handshake(addr, sni string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return certID(c.ConnectionState().PeerCertificates[0].Raw), nil
}

// startServe runs runServe with o (bound to 127.0.0.1, watching the files,
// logging every connection) until the test ends, and returns its log. The
// test fails when runServe returns an error or does not return once
// cancelled.
func startServe(t *testing.T, o serveOptions) *serveLog {
	t.Helper()
	o.dp.BindAddress = "127.0.0.1"
	o.dp.ShutdownGrace = 5 * time.Second
	o.dp.LogConnections = true
	o.watch = true
	logs := &serveLog{}
	log := funcr.New(logs.add, funcr.Options{Verbosity: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, log, o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runServe: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("runServe did not return after cancel")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", logs)
		}
	})
	return logs
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

func TestServeRotatesCertificateFromSecretFile(t *testing.T) {
	oldCert := peers.CertPair(t, "old.serve.test", "serve.test")
	newCert := peers.CertPair(t, "new.serve.test", "serve.test")
	echo := peers.NewTCPServer(t, peers.Echo).Addr
	securePort, brokenPort, plainPort := peers.FreePort(t), peers.FreePort(t), peers.FreePort(t)
	dir := t.TempDir()
	portmuxFile := filepath.Join(dir, "portmux.yaml")
	secretsFile := filepath.Join(dir, "secrets.yaml")
	writeAtomically(t, portmuxFile, fmt.Sprintf(`apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - {name: secure, port: %d, tls: {certificateRefs: [{name: edge-tls}], alpn: [http/1.1]}}
  - {name: broken, port: %d, tls: {certificateRefs: [{name: broken-tls}]}}
  - {name: plain, port: %d}
  routes:
  - name: echo
    listeners: [secure, broken, plain]
    match: {protocol: any}
    backend: {address: "%s"}
`, securePort, brokenPort, plainPort, echo))
	brokenSecret := tlsSecret("broken-tls", oldCert.CertPEM, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"))
	writeAtomically(t, secretsFile, tlsSecret("edge-tls", oldCert.CertPEM, oldCert.KeyPEM)+"---\n"+brokenSecret)

	logs := startServe(t, serveOptions{files: []string{portmuxFile, secretsFile}})

	secure := fmt.Sprintf("127.0.0.1:%d", securePort)
	peers.Until(t, 10*time.Second, "the secure listener", func() bool {
		id, err := handshake(secure, "serve.test")
		return err == nil && id == certID(oldCert.Leaf.Raw)
	})
	// The broken Secret is logged by name; its listener is not bound, and
	// the plain one is served.
	if !logs.contains("unresolved reference", "broken-tls") {
		t.Errorf("no log line names the broken Secret broken-tls")
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", brokenPort), time.Second); err == nil {
		_ = c.Close()
		t.Errorf("the listener whose only Secret is broken accepts connections")
	}
	plain, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", plainPort), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, plain, "plain\n")
	_ = plain.Close()

	// A stream opened before the rotation.
	before, err := tls.Dial("tcp", secure, &tls.Config{ServerName: "serve.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	echoOnce(t, before, "before\n")

	// Rotate edge-tls and repair broken-tls in one write.
	writeAtomically(t, secretsFile, tlsSecret("edge-tls", newCert.CertPEM, newCert.KeyPEM)+"---\n"+
		tlsSecret("broken-tls", oldCert.CertPEM, oldCert.KeyPEM))
	peers.Until(t, 10*time.Second, "new handshakes to get the new certificate", func() bool {
		id, err := handshake(secure, "serve.test")
		return err == nil && id == certID(newCert.Leaf.Raw)
	})
	if cn, _ := peers.SClient(t, secure, "serve.test"); cn != "new.serve.test" {
		t.Errorf("s_client after rotation got CN %q, want new.serve.test", cn)
	}
	peers.Until(t, 10*time.Second, "the repaired listener", func() bool {
		id, err := handshake(fmt.Sprintf("127.0.0.1:%d", brokenPort), "serve.test")
		return err == nil && id == certID(oldCert.Leaf.Raw)
	})
	// The old stream still flows, on its old certificate.
	echoOnce(t, before, "after\n")
	if id := certID(before.ConnectionState().PeerCertificates[0].Raw); id != certID(oldCert.Leaf.Raw) {
		t.Errorf("the stream opened before changed certificate")
	}
	if !logs.contains("reloaded", "file changed") {
		t.Errorf("no reload was logged")
	}
}
