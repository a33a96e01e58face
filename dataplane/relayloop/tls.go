package relayloop

import (
	"crypto/tls"

	"github.com/portmux/portmux/dataplane/tlsmem"
)

// TLS is the TLS layer of a connection a loop carries as exchanges after
// its handshake ran on a goroutine (Set.Adopt): the loop reads and
// writes the socket for Mem, detached from it, and the client's
// plaintext through Conn, which sits on Mem. Exchanges under TLS copy
// the response's body through the loop's buffer, never splice it.
type TLS struct {
	Conn *tls.Conn
	Mem  *tlsmem.Conn
}
