package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/portmux/portmux/dataplane/tunnel"
)

type tunnelOptions struct {
	forwards       []string
	tokenFile      string
	caFile         string
	insecure       bool
	httpProxy      string
	keepAlive      time.Duration
	pongTimeout    time.Duration
	udpIdleTimeout time.Duration
	connectTimeout time.Duration
	retries        int
}

func newTunnelCommand() *cobra.Command {
	o := tunnelOptions{}
	cmd := &cobra.Command{
		Use:   "tunnel -L SPEC [-L SPEC...] URL",
		Short: "Carry local TCP, UDP or stdin/stdout through a PortMux WebSocket tunnel",
		Long: `Tunnel is the client end of a PortMux tunnel route: it carries local TCP
connections, UDP datagrams or its own stdin and stdout over WebSocket
connections to URL (ws:// or wss://, the route's path), and the server
forwards them to a target of the route's allow list.

SPEC is one of
  [tcp://][BIND:]LOCALPORT:TARGET:PORT   listen on TCP LOCALPORT; one tunnel per connection
  udp://[BIND:]LOCALPORT:TARGET:PORT     listen on UDP LOCALPORT; one tunnel per source address
  stdio:TARGET:PORT                      stdin and stdout, e.g. for ssh -o ProxyCommand
BIND defaults to 127.0.0.1 ("*" or empty: every interface). TARGET:PORT is a
name the allow list holds: a Service and its port, by number or name
("sshd:22", "sshd:ssh"), or an allowed address ("10.0.0.5:22", "[::1]:22").

Connections go through an HTTP proxy with CONNECT when --http-proxy is given,
or when HTTPS_PROXY (wss://) or HTTP_PROXY (ws://) is set and NO_PROXY does
not exclude the host; loopback addresses are only proxied with --http-proxy.

A TCP connection's handshake is retried with backoff (--retries); so is a
stdio stream's until its first byte. A UDP session reopens its tunnel with
backoff while datagrams keep coming. SIGINT or SIGTERM closes everything.`,
		Example: `  portmux tunnel -L 2222:sshd:22 --token-file token wss://edge.example.com/tunnel
  portmux tunnel -L udp://51820:wireguard:51820 -L 5432:db:5432 wss://edge.example.com/tunnel
  ssh -o ProxyCommand='portmux tunnel --token-file token -L stdio:sshd:22 wss://edge.example.com/tunnel' user@sshd`,
		Args: cobra.ExactArgs(1),
	}
	newLog := logFlags(cmd)
	f := cmd.Flags()
	f.StringArrayVarP(&o.forwards, "local", "L", nil, "what to forward: [tcp://][BIND:]LOCALPORT:TARGET:PORT, udp://[BIND:]LOCALPORT:TARGET:PORT or stdio:TARGET:PORT (repeatable)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token (surrounding whitespace is ignored)")
	f.StringVar(&o.caFile, "ca-file", "", "PEM file of the CA certificates that verify a wss:// server, instead of the system's")
	f.BoolVar(&o.insecure, "insecure-skip-verify", false, "do not verify the wss:// server's certificate (anyone on the path can read the tunnel and the token)")
	f.StringVar(&o.httpProxy, "http-proxy", "", `HTTP proxy URL to CONNECT through (default: HTTPS_PROXY/HTTP_PROXY; "" with the flag: none)`)
	f.DurationVar(&o.keepAlive, "keepalive", tunnel.DefaultKeepAlive, "interval between pings to the server (0: none)")
	f.DurationVar(&o.pongTimeout, "pong-timeout", tunnel.DefaultPongTimeout, "how long a pong may take before the server is taken for dead")
	f.DurationVar(&o.udpIdleTimeout, "udp-idle-timeout", tunnel.DefaultUDPIdleTimeout, "end a UDP session that carried nothing for this long (0: never)")
	f.DurationVar(&o.connectTimeout, "connect-timeout", tunnel.DefaultDialTimeout, "bound on one handshake (TCP, proxy, TLS, upgrade)")
	f.IntVar(&o.retries, "retries", tunnel.DefaultRetries, "times a failed handshake is retried with backoff (4xx refusals never are)")
	_ = cmd.MarkFlagRequired("local")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client(args[0], cmd.Flags().Changed("http-proxy"))
		if err != nil {
			return err
		}
		c.Log = newLog().WithName("tunnel")
		return runTunnel(cmd.Context(), c, o.forwards, cmd.InOrStdin(), cmd.OutOrStdout())
	}
	return cmd
}

// client builds the tunnel client the flags describe.
func (o *tunnelOptions) client(rawURL string, proxyFlag bool) (*tunnel.Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return nil, fmt.Errorf("URL %q: want ws:// or wss://", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("URL %q has no host", rawURL)
	}
	c := &tunnel.Client{
		URL:            u,
		KeepAlive:      o.keepAlive,
		PongTimeout:    o.pongTimeout,
		UDPIdleTimeout: o.udpIdleTimeout,
		DialTimeout:    o.connectTimeout,
		Retries:        o.retries,
		Proxy:          tunnel.ProxyFromEnvironment,
	}
	// The flags say 0 for "none"; the client says negative.
	if o.keepAlive <= 0 {
		c.KeepAlive = -1
	}
	if o.udpIdleTimeout <= 0 {
		c.UDPIdleTimeout = -1
	}
	if o.retries <= 0 {
		c.Retries = -1
	}
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
		if c.Token == "" {
			return nil, fmt.Errorf("token file %s is empty", o.tokenFile)
		}
	}
	if o.caFile != "" || o.insecure {
		c.TLS = &tls.Config{InsecureSkipVerify: o.insecure} //nolint:gosec // only with --insecure-skip-verify, documented
		if o.caFile != "" {
			pem, err := os.ReadFile(o.caFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.caFile)
			}
			c.TLS.RootCAs = pool
		}
	}
	if proxyFlag {
		c.Proxy = nil
		if o.httpProxy != "" {
			p, err := url.Parse(o.httpProxy)
			if err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
				return nil, fmt.Errorf("--http-proxy %q: want http://HOST:PORT or https://HOST:PORT", o.httpProxy)
			}
			c.Proxy = tunnel.FixedProxy(p)
		}
	}
	return c, nil
}

// forwardSpec is one -L.
type forwardSpec struct {
	// kind is "tcp", "udp" or "stdio".
	kind string
	// listen is the local host:port, for tcp and udp.
	listen string
	// target is the name asked of the server, "NAME:PORT".
	target string
}

// parseForward reads [tcp://|udp://][BIND:]LOCALPORT:TARGET:PORT or
// stdio:TARGET:PORT. BIND and TARGET may be bracketed IPv6 addresses.
func parseForward(spec string) (forwardSpec, error) {
	bad := func(why string) (forwardSpec, error) {
		return forwardSpec{}, fmt.Errorf("-L %q: %s", spec, why)
	}
	fs := forwardSpec{kind: "tcp"}
	rest := spec
	switch {
	case strings.HasPrefix(rest, "stdio:"):
		fs.kind, rest = "stdio", strings.TrimPrefix(rest, "stdio:")
	case strings.HasPrefix(rest, "tcp://"):
		rest = strings.TrimPrefix(rest, "tcp://")
	case strings.HasPrefix(rest, "udp://"):
		fs.kind, rest = "udp", strings.TrimPrefix(rest, "udp://")
	case strings.Contains(rest, "://"):
		return bad("the scheme must be tcp://, udp:// or stdio:")
	}
	parts, err := splitColons(rest)
	if err != nil {
		return bad(err.Error())
	}
	want := "[BIND:]LOCALPORT:TARGET:PORT"
	if fs.kind == "stdio" {
		want = "TARGET:PORT"
	}
	var bind, lport string
	switch {
	case fs.kind == "stdio" && len(parts) == 2:
	case fs.kind != "stdio" && len(parts) == 3:
		bind, lport, parts = "127.0.0.1", parts[0], parts[1:]
	case fs.kind != "stdio" && len(parts) == 4:
		bind, lport, parts = strings.Trim(parts[0], "[]"), parts[1], parts[2:]
		if bind == "*" {
			bind = ""
		}
	default:
		return bad("want " + want)
	}
	host, port := parts[0], parts[1]
	if host == "" || port == "" || strings.ContainsAny(host+port, " \t/?#") {
		return bad("TARGET and PORT must not be empty or hold spaces, '/', '?' or '#'")
	}
	fs.target = host + ":" + port
	if fs.kind != "stdio" {
		if n, err := strconv.Atoi(lport); err != nil || n < 0 || n > 65535 {
			return bad("LOCALPORT must be a number from 0 to 65535")
		}
		fs.listen = net.JoinHostPort(bind, lport)
	}
	return fs, nil
}

// splitColons splits s at the colons outside square brackets.
func splitColons(s string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
			if depth < 0 {
				return nil, errors.New("unbalanced ']'")
			}
		case ':':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, errors.New("unbalanced '['")
	}
	return append(parts, s[start:]), nil
}

// runTunnel binds every -L first (so that a port in use fails at once),
// then serves them all until ctx is done, one of them fails, or the stdio
// stream ends.
func runTunnel(ctx context.Context, c *tunnel.Client, specs []string, stdin io.Reader, stdout io.Writer) error {
	var forwards []forwardSpec
	stdio := 0
	for _, s := range specs {
		fs, err := parseForward(s)
		if err != nil {
			return err
		}
		if fs.kind == "stdio" {
			stdio++
		}
		forwards = append(forwards, fs)
	}
	if stdio > 1 {
		return errors.New("only one -L stdio: there is one stdin")
	}

	// SIGHUP ends the tunnels cleanly too: ssh sends it to its
	// ProxyCommand when it exits, and a terminal when it closes.
	ctx, stopHUP := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stopHUP()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var serve []func() error
	var closers []io.Closer
	defer func() {
		for _, cl := range closers {
			_ = cl.Close()
		}
	}()
	for _, fs := range forwards {
		switch fs.kind {
		case "tcp":
			ln, err := net.Listen("tcp", fs.listen)
			if err != nil {
				return fmt.Errorf("-L %s: %w", fs.listen, err)
			}
			closers = append(closers, ln)
			c.Log.Info("forwarding", "listen", "tcp://"+ln.Addr().String(), "target", fs.target, "url", c.URL.Redacted())
			serve = append(serve, func() error { return c.ServeTCP(ctx, ln, fs.target) })
		case "udp":
			la, err := net.ResolveUDPAddr("udp", fs.listen)
			if err != nil {
				return fmt.Errorf("-L udp://%s: %w", fs.listen, err)
			}
			pc, err := net.ListenUDP("udp", la)
			if err != nil {
				return fmt.Errorf("-L udp://%s: %w", fs.listen, err)
			}
			_ = pc.SetReadBuffer(1 << 20) // bursts from local senders while a tunnel opens
			closers = append(closers, pc)
			c.Log.Info("forwarding", "listen", "udp://"+pc.LocalAddr().String(), "target", fs.target, "url", c.URL.Redacted())
			serve = append(serve, func() error { return c.ServeUDP(ctx, pc, fs.target) })
		case "stdio":
			serve = append(serve, func() error {
				// The stream is the command's whole job: when it ends,
				// so does the command.
				defer cancel()
				return c.ServeStdio(ctx, stdin, stdout, fs.target)
			})
		}
	}

	errs := make(chan error, len(serve))
	var wg sync.WaitGroup
	for _, f := range serve {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // the first error, or nil
}
