package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

// tunnelClient is a client of the tunnel route at path on addr, sending
// token, that never retries (the tests want each refusal as it is).
func tunnelClient(t *testing.T, addr, path, token string) *tunnel.Client {
	t.Helper()
	u, err := url.Parse("ws://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	return &tunnel.Client{URL: u, Token: token, Retries: -1, DialTimeout: 5 * time.Second}
}

// opaqueSecret is a kind: Secret document holding value under key token,
// in data (base64), as the API server stores what kubectl sends.
func opaqueSecret(name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: default}\ndata: {token: %s}\n",
		name, base64.StdEncoding.EncodeToString([]byte(value)))
}

// TestServeTunnelTokenIgnoresTrailingWhitespace: a token Secret made with
// `kubectl create secret generic --from-file=token=FILE` ends with the
// file's newline (or CRLF, from an editor on Windows), which no client
// sends: `portmux tunnel --token-file` trims it, and an HTTP header cannot
// carry it. The tunnel takes the token without its trailing whitespace. A
// Secret holding only whitespace is no token: that tunnel refuses every
// client (503), as when its Secret is missing.
func TestServeTunnelTokenIgnoresTrailingWhitespace(t *testing.T) {
	echo := peers.NewTCPServer(t, peers.Echo).Addr
	port := peers.FreePort(t)
	dir := t.TempDir()
	portmuxFile := filepath.Join(dir, "portmux.yaml")
	route := func(name, secret string) string {
		return fmt.Sprintf(`  - name: %s
    listeners: [plain]
    match: {protocol: websocket, pathPrefix: /%s}
    tunnel:
      auth: {tokenSecretRef: {name: %s}}
      allow: [{address: "%s"}]
`, name, name, secret, echo)
	}
	writeAtomically(t, portmuxFile, portmuxDoc(port, route("lf", "tok-lf")+route("crlf", "tok-crlf")+route("blank", "tok-blank")))
	secretsFile := filepath.Join(dir, "secrets.yaml")
	writeAtomically(t, secretsFile, opaqueSecret("tok-lf", "s3cret\n")+"---\n"+
		opaqueSecret("tok-crlf", "s3cret \t\r\n")+"---\n"+opaqueSecret("tok-blank", " \r\n"))
	logs := startServe(t, serveOptions{files: []string{portmuxFile, secretsFile}})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	peers.Until(t, 10*time.Second, "the listener", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})

	for _, path := range []string{"/lf", "/crlf"} {
		s, err := tunnelClient(t, addr, path, "s3cret").Dial(context.Background(), echo)
		if err != nil {
			t.Errorf("%s: token s3cret refused: %v", path, err)
			continue
		}
		echoOnce(t, s, "through "+path+"\n")
		_ = s.Close()
		if _, err := tunnelClient(t, addr, path, "s3cre").Dial(context.Background(), echo); err == nil {
			t.Errorf("%s: a wrong token was taken", path)
		}
	}
	for _, tok := range []string{"", "s3cret"} {
		_, err := tunnelClient(t, addr, "/blank", tok).Dial(context.Background(), echo)
		var re *tunnel.RefusedError
		if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
			t.Errorf("/blank with token %q: %v, want 503: a Secret of whitespace is no token", tok, err)
		}
	}
	if !logs.contains("unresolved reference", "tok-blank") {
		t.Errorf("no log line names the Secret tok-blank, whose token is only whitespace")
	}
}
