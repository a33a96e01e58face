// Package forward moves bytes between a client and a backend once a route has
// been chosen, and dials the backend.
//
// It decides nothing about where a connection goes. What it promises:
//
//   - Between two TCP sockets, small reads (up to 4 KiB: keystrokes,
//     handshakes, short requests) go through one pooled buffer, one read and
//     one write; a read that fills it means a bulk transfer, which goes on
//     with splice (Go's (*net.TCPConn).ReadFrom over an io.LimitedReader),
//     so bulk bytes never enter user space. A stream that is not a TCP
//     socket (TLS, terminated by the dataplane) is copied through a pooled
//     buffer.
//   - A direction waiting on a TCP socket holds no buffer. With a Parker,
//     a direction idle past its threshold is taken off its goroutine into
//     one epoll set and resumed on a new goroutine when its socket wakes,
//     so an idle forwarded connection holds no goroutine and no buffer,
//     only its sockets; the Parker turns TCP keepalive on for sockets that
//     idle. A direction reading TLS over a TCP socket holds a 16 KiB
//     buffer while it reads, since crypto/tls may hold bytes its socket no
//     longer shows; once a read has timed out with nothing decrypted it
//     waits on the socket without one, and parks like a TCP direction.
//   - Each direction ends on its own: EOF from one side becomes a half-close
//     (CloseWrite) towards the other, so request/response protocols that shut
//     down their sending side keep working; an error, or a panic, closes
//     both.
//   - An optional idle timeout closes a connection with no bytes in either
//     direction for that long (within twice that, see Options).
package forward
