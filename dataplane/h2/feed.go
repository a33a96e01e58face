package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"golang.org/x/net/http2"
)

// The client's bytes are pushed to the connection (consume) rather than
// pulled by the Framer: frames are handed to the Framer only once they
// are whole, so that it never waits, and whatever reads the socket (a
// goroutine today) decides when to read. A header block split over
// CONTINUATION frames is handed over once all of it is here, and a block
// past twice the header list limit ends the connection before it is
// held: x/net's Framer ends the connection for nearly every block that
// large anyway, and the bound is what a client can make a connection
// buffer.

// phase is how far the client's preface has come.
type phase uint8

const (
	phasePreface  phase = iota // the 24 bytes of the preface
	phaseSettings              // its first frame, which must be SETTINGS
	phaseFrames                // everything else
)

// input holds what the client sent that is not processed yet, b[off:];
// the Framer reads from it (Read), only what consume found whole.
type input struct {
	b   []byte
	off int
}

// inputSize is what a connection's input starts with, as the buffered
// reader it replaces did; it grows for larger frames and header blocks
// (up to maxBlock) and goes back to this once drained.
const inputSize = 4 << 10

func (in *input) Read(p []byte) (int, error) {
	if in.off == len(in.b) {
		return 0, io.ErrUnexpectedEOF // consume hands over whole frames only
	}
	n := copy(p, in.b[in.off:])
	in.off += n
	return n, nil
}

func (in *input) buffered() []byte { return in.b[in.off:] }

// space returns where the next read goes: the free end of the buffer,
// after moving the unread bytes to its start, grown when they fill it.
func (in *input) space() []byte {
	switch {
	case in.b == nil:
		in.b = make([]byte, 0, inputSize)
	case in.off == len(in.b):
		in.b, in.off = in.b[:0], 0
		if cap(in.b) > inputSize {
			in.b = make([]byte, 0, inputSize) // a burst's buffer goes
		}
	case len(in.b) == cap(in.b):
		n := copy(in.b, in.b[in.off:])
		in.b, in.off = in.b[:n], 0
		if n == cap(in.b) {
			in.b = append(in.b, make([]byte, n)...)[:n]
		}
	}
	return in.b[len(in.b):cap(in.b)]
}

// commit takes n bytes read into space.
func (in *input) commit(n int) { in.b = in.b[:len(in.b)+n] }

// errNotPreface: the connection does not start with HTTP/2's preface.
var errNotPreface = errors.New("not an HTTP/2 client preface")

// consume processes the frames the input holds whole, in order, then
// calls ReadIdle; what is left waits for more bytes. It returns the error
// that ends the connection.
func (sc *serverConn) consume() error {
	for {
		if sc.phase == phasePreface {
			b := sc.in.buffered()
			if !bytes.HasPrefix([]byte(http2.ClientPreface), b[:min(len(b), len(http2.ClientPreface))]) {
				return errNotPreface
			}
			if len(b) < len(http2.ClientPreface) {
				return nil
			}
			sc.in.off += len(http2.ClientPreface)
			sc.phase = phaseSettings
		}
		ready, err := sc.whole()
		if err != nil {
			return sc.connError(err)
		}
		if !ready {
			if sc.srv.ReadIdle != nil && sc.phase == phaseFrames {
				sc.srv.ReadIdle()
			}
			return nil
		}
		f, err := sc.fr.ReadFrame()
		if sc.phase == phaseSettings {
			if err != nil {
				return fmt.Errorf("reading the client's first SETTINGS: %w", err)
			}
			sf, ok := f.(*http2.SettingsFrame)
			if !ok || sf.IsAck() {
				return sc.connError(http2.ConnectionError(http2.ErrCodeProtocol))
			}
			if err := sc.processSettings(sf); err != nil {
				return sc.connError(err)
			}
			sc.phase = phaseFrames
			sc.started()
			continue
		}
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			f, err = sc.blocks.read(sc.fr, hf)
		}
		if err != nil {
			if err = sc.readError(err); err != nil {
				return err
			}
			continue
		}
		if err := sc.process(f); err != nil {
			return sc.connError(err)
		}
	}
}

// whole reports whether the input holds the next frame whole, or, for a
// HEADERS frame that does not end its header block, the frames up to the
// one that does (or up to the first frame that is not its
// CONTINUATION, which the Framer refuses). A frame longer than the Framer
// takes is ready once its header is: the Framer refuses it unread.
func (sc *serverConn) whole() (bool, error) {
	b := sc.in.buffered()
	block := 0
	for first := true; ; first = false {
		if len(b) < frameHeaderLen {
			return false, nil
		}
		length := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags := http2.FrameType(b[3]), http2.Flags(b[4])
		if length > maxFrameSize {
			return true, nil
		}
		if len(b) < frameHeaderLen+length {
			if !first && block+length > sc.maxBlock {
				return false, http2.ConnectionError(http2.ErrCodeProtocol)
			}
			return false, nil
		}
		if first && typ != http2.FrameHeaders || !first && typ != http2.FrameContinuation ||
			flags.Has(http2.FlagHeadersEndHeaders) {
			return true, nil
		}
		block += length
		if block > sc.maxBlock {
			return false, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		b = b[frameHeaderLen+length:]
	}
}

// readEnd is what serve returns when reading the client failed with err
// (io.EOF: the client closed its side).
func (sc *serverConn) readEnd(err error) error {
	switch {
	case sc.phase == phasePreface:
		if errors.Is(err, io.EOF) && len(sc.in.buffered()) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading the client preface: %w", err)
	case sc.phase == phaseSettings:
		return fmt.Errorf("reading the client's first SETTINGS: %w", err)
	case errors.Is(err, io.EOF) && len(sc.in.buffered()) > 0:
		return io.ErrUnexpectedEOF // in the middle of a frame
	}
	return err
}
