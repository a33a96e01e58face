package tunnel_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

// TestTunnelCommand runs the built `portmux tunnel` with a TCP and a UDP
// forward, uses both, and stops it with SIGINT.
func TestTunnelCommand(t *testing.T) {
	t.Parallel()
	bin := portmuxBinary(t)
	up := peers.UDPEcho(t)
	m := startMux(t, &snapshot.Tunnel{Token: []byte(testToken), Allow: []snapshot.TunnelTarget{
		echoTarget(t, "echo:7"),
		target(true, []string{up.Addr}, "echo:7"),
	}}, nil)
	tokenFile := writeFile(t, "token", []byte(testToken))

	cmd := exec.Command(bin, "tunnel", "--token-file", tokenFile,
		"-L", "127.0.0.1:0:echo:7", "-L", "udp://127.0.0.1:0:echo:7", m.url)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var logs syncBuffer
	listens := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.write(sc.Text() + "\n")
			var line struct{ Msg, Listen string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "forwarding" {
				listens <- line.Listen
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	})

	var tcpAddr, udpAddr string
	for range 2 {
		select {
		case l := <-listens:
			if a, ok := strings.CutPrefix(l, "tcp://"); ok {
				tcpAddr = a
			} else {
				udpAddr = strings.TrimPrefix(l, "udp://")
			}
		case err := <-exited:
			t.Fatalf("portmux tunnel exited: %v\n%s", err, logs.String())
		case <-time.After(10 * time.Second):
			t.Fatalf("portmux tunnel did not start listening\n%s", logs.String())
		}
	}

	conn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("tcp")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "tcp" {
		t.Fatalf("TCP echo %q, %v", buf, err)
	}
	uc, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	_ = uc.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = uc.Write([]byte("udp"))
	if n, err := uc.Read(buf); err != nil || string(buf[:n]) != "udp" {
		t.Fatalf("UDP echo %q, %v", buf[:n], err)
	}

	// SIGINT with both tunnels open: a clean exit that closes them.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("portmux tunnel did not exit on SIGINT\n%s", logs.String())
	}
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("the local connection is still open: read %d bytes", n)
	}
	// The TCP stream was cut with 1001 (going away), the UDP tunnel closed.
	m.waitTunnels(t, tunnel.OutcomeClosed, 2)
}

// syncBuffer collects a process's log lines for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) write(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(line)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
