// Package forward moves bytes between a client and a backend once a route has
// been chosen, and dials the backend.
//
// It decides nothing about where a connection goes. What it promises:
//
//   - Between two TCP sockets the bytes never enter user space: each
//     direction waits for readability without holding any buffer, then
//     splices exactly what is queued (Go's (*net.TCPConn).ReadFrom over an
//     io.LimitedReader). An idle connection holds two parked goroutines and
//     its sockets, no buffer and no pipe.
//   - Each direction ends on its own: EOF from one side becomes a half-close
//     (CloseWrite) towards the other, so request/response protocols that shut
//     down their sending side keep working; an error closes both.
//   - An optional idle timeout closes a connection with no bytes in either
//     direction for that long (within twice that, see Options).
package forward
