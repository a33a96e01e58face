package main

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want forwardSpec
	}{
		{"2222:sshd:22", forwardSpec{kind: "tcp", listen: "127.0.0.1:2222", target: "sshd:22"}},
		{"tcp://2222:sshd:ssh", forwardSpec{kind: "tcp", listen: "127.0.0.1:2222", target: "sshd:ssh"}},
		{"0.0.0.0:2222:sshd:22", forwardSpec{kind: "tcp", listen: "0.0.0.0:2222", target: "sshd:22"}},
		{"*:2222:sshd:22", forwardSpec{kind: "tcp", listen: ":2222", target: "sshd:22"}},
		{":2222:sshd:22", forwardSpec{kind: "tcp", listen: ":2222", target: "sshd:22"}},
		{"[::1]:2222:[fd00::5]:22", forwardSpec{kind: "tcp", listen: "[::1]:2222", target: "[fd00::5]:22"}},
		{"2222:10.0.0.5:22", forwardSpec{kind: "tcp", listen: "127.0.0.1:2222", target: "10.0.0.5:22"}},
		{"udp://51820:wireguard:51820", forwardSpec{kind: "udp", listen: "127.0.0.1:51820", target: "wireguard:51820"}},
		{"udp://0.0.0.0:53:dns:dns", forwardSpec{kind: "udp", listen: "0.0.0.0:53", target: "dns:dns"}},
		{"stdio:sshd:22", forwardSpec{kind: "stdio", target: "sshd:22"}},
		{"stdio:[::1]:22", forwardSpec{kind: "stdio", target: "[::1]:22"}},
	} {
		got, err := parseForward(tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("parseForward(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, spec := range []string{
		"", "2222", "sshd:22", "2222:sshd", "stdio:sshd", "stdio:1:sshd:22",
		"http://2222:sshd:22", "x:y:2222:sshd:22", "70000:sshd:22", "abc:sshd:22",
		"2222::22", "2222:sshd:", "[::1:2222:sshd:22", "2222:ss hd:22", "2222:sshd:22/x",
	} {
		if got, err := parseForward(spec); err == nil {
			t.Errorf("parseForward(%q) = %+v, want an error", spec, got)
		}
	}
}

func TestTunnelClientFromFlags(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := tunnelOptions{tokenFile: tok, httpProxy: "http://proxy.corp:3128", keepAlive: 0, retries: 2}
	c, err := o.client("wss://edge.example.com/tunnel", true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Token != "s3cret" || c.KeepAlive >= 0 || c.Retries != 2 {
		t.Fatalf("client %+v", c)
	}
	p, _ := c.Proxy(&url.URL{Scheme: "wss", Host: "127.0.0.1"})
	if p == nil || p.Host != "proxy.corp:3128" {
		t.Fatalf("proxy %v, want the flag's, loopback included", p)
	}
	// The flag given empty: no proxy, whatever the environment says.
	o.httpProxy = ""
	if c, err := o.client("ws://edge.example.com/tunnel", true); err != nil || c.Proxy != nil {
		t.Fatalf("--http-proxy '': proxy func %v, %v", c.Proxy != nil, err)
	}
	for _, u := range []string{"ftp://edge/tunnel", "edge.example.com/tunnel", "ws:///tunnel"} {
		if _, err := o.client(u, false); err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
	o.caFile = filepath.Join(dir, "missing.pem")
	if _, err := o.client("wss://edge/tunnel", false); err == nil {
		t.Error("a missing CA file was accepted")
	}
	if err := os.WriteFile(tok, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.caFile = ""
	if _, err := o.client("wss://edge/tunnel", false); err == nil {
		t.Error("an empty token file was accepted")
	}
}
