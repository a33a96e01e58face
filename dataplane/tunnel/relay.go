package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
)

// relayResult is what relay observed.
type relayResult struct {
	// toStream counts bytes read from the connection and sent as
	// messages; fromStream the stream's bytes written to the connection.
	toStream, fromStream int64
	// err is the first error that was not a clean end, or nil.
	err error
}

// relay carries s and c both ways until both halves have ended or one
// direction failed, then closes both. Like forward.Pipe it keeps
// half-close (the end of c's stream becomes the empty message, the
// stream's end a CloseWrite on c), but it holds no buffer while a
// direction waits: an idle tunnel costs its goroutines and the WebSocket
// library's small buffers only.
func relay(s *Stream, c net.Conn, bufs *Buffers) relayResult {
	if bufs == nil {
		bufs = &Buffers{}
	}
	var (
		res      relayResult
		errOnce  sync.Once
		wg       sync.WaitGroup
		abortAll = func(err error) {
			// An error in one direction ends the other: c is closed, and
			// the stream closed with 4000 (reset).
			errOnce.Do(func() {
				res.err = err
				_ = c.Close()
				_ = s.Close()
			})
		}
	)
	wg.Add(1)
	go func() { // c → stream
		defer wg.Done()
		// A panic (a bug the bytes reached) ends this tunnel as an error.
		if err := panics.Run(func() (err error) {
			res.toStream, err = connToStream(s, c, bufs)
			return err
		}); err != nil {
			abortAll(err)
		}
	}()
	if err := panics.Run(func() (err error) {
		res.fromStream, err = streamToConn(c, s, bufs)
		return err
	}); err != nil {
		abortAll(err)
	}
	wg.Wait()
	_ = c.Close()
	_ = s.Close()
	// When the peer closes (or the keepalive gives up on it) while this
	// end writes, the write may fail first with a bare "closed"; what the
	// reading side learnt says why.
	if why := s.closedBy(); why != nil && res.err != nil {
		res.err = why
	}
	return res
}

// connToStream sends what c delivers as messages, and the end of c's
// stream as the empty message.
func connToStream(s *Stream, c net.Conn, bufs *Buffers) (int64, error) {
	tc, _ := c.(*net.TCPConn)
	var total int64
	for {
		if tc != nil {
			// Park until there is something to read, holding nothing.
			if _, err := forward.WaitReadable(tc); err != nil {
				return total, err
			}
		}
		bp, big := bufs.get()
		n, err := c.Read(*bp)
		if werr := writeCounted(s, (*bp)[:n], &total); werr != nil {
			bufs.put(bp, big)
			return total, werr
		}
		bufs.put(bp, big)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, s.CloseWrite()
			}
			return total, err
		}
	}
}

// streamToConn writes the stream's messages to c, and half-closes c when
// the stream ends.
func streamToConn(c net.Conn, s *Stream, bufs *Buffers) (int64, error) {
	var total int64
	for {
		// Park until a message begins, holding nothing.
		if err := s.awaitMessage(); err != nil {
			if errors.Is(err, io.EOF) {
				return total, closeWrite(c)
			}
			return total, err
		}
		bp, big := bufs.get()
		for {
			n, err := s.readMessage(*bp)
			if werr := writeCounted(c, (*bp)[:n], &total); werr != nil {
				bufs.put(bp, big)
				return total, werr
			}
			if err != nil {
				bufs.put(bp, big)
				if errors.Is(err, io.EOF) {
					return total, closeWrite(c)
				}
				return total, err
			}
			if s.r == nil {
				break // the message has ended: give the buffer back
			}
		}
		bufs.put(bp, big)
	}
}

// writeCounted writes p to w, if p holds anything, and adds what it wrote
// to *total.
func writeCounted(w io.Writer, p []byte, total *int64) (err error) {
	if len(p) > 0 {
		if _, err = w.Write(p); err == nil {
			*total += int64(len(p))
		}
	}
	return err
}

// closeWrite half-closes c, or closes it when it cannot.
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}
