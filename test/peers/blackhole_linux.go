package peers

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BlackholeAddr returns a loopback address that takes no more connections
// and drops SYNs: a listening socket with backlog 0 whose one queue slot is
// taken and that never accepts. Dials to it hang until their timeout.
func BlackholeAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue until a dial hangs.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Skip("cannot make a loopback address that drops SYNs here")
	return ""
}

// SynSentTo counts this machine's TCP sockets still waiting for an answer
// to their SYN to addr (an "ip:port" on IPv4), as /proc/net/tcp shows
// them: how a test sees that a process is dialling a BlackholeAddr, which
// no counter of the process can show before the dial ends.
func SynSentTo(t testing.TB, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		t.Fatalf("SynSentTo(%q): want an IPv4 ip:port", addr)
	}
	ip := ap.Addr().As4()
	// /proc/net/tcp writes the address as the 32-bit word in host order
	// (little-endian here), then the port in hex.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 02 is SYN_SENT.
		if len(f) > 3 && f[2] == want && f[3] == "02" {
			n++
		}
	}
	return n
}
