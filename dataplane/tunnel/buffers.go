package tunnel

import (
	"sync"
	"sync/atomic"
)

// relayBufferSize is the copy buffer of a tunnel direction: a chunk read
// from the connection is one message, and bigger messages mean fewer
// frames and system calls for bulk transfers (256 KiB instead of 64 KiB:
// about 10% less CPU per byte). It is held only while bytes move.
const relayBufferSize = 256 << 10

// smallBufferSize is the buffer a direction gets once the big ones are all
// taken: a TLS record's worth.
const smallBufferSize = 16 << 10

// DefaultMaxBigBuffers is how many 256 KiB buffers the TCP tunnels of one
// Buffers may hold at once (32 MiB). Bulk transfers on up to 64 tunnels at
// once get them; past that, directions move bytes through 16 KiB buffers.
const DefaultMaxBigBuffers = 128

var (
	relayBuffers = &sync.Pool{New: func() any { b := make([]byte, relayBufferSize); return &b }}
	smallBuffers = &sync.Pool{New: func() any { b := make([]byte, smallBufferSize); return &b }}
)

// Buffers hands out the copy buffers of TCP tunnels and bounds the memory
// they hold. A direction holds a buffer while the bytes it read wait to be
// written, for as long as the peer takes to accept them: a client that
// opens many tunnels to a target that sends and then reads nothing would
// otherwise make the server hold 256 KiB per tunnel direction. Share one
// Buffers between every Handler of a process. The zero value is usable.
type Buffers struct {
	// Pool provides the big buffers (*[]byte, at least 4 KiB). Nil: 256
	// KiB buffers.
	Pool *sync.Pool
	// Max is how many big buffers may be held at once. Zero:
	// DefaultMaxBigBuffers.
	Max int

	held atomic.Int64
}

// get returns a buffer and whether it counts as a big one (pass it to put).
func (b *Buffers) get() (*[]byte, bool) {
	max := int64(b.Max)
	if max <= 0 {
		max = DefaultMaxBigBuffers
	}
	if b.held.Add(1) <= max {
		pool := b.Pool
		if pool == nil {
			pool = relayBuffers
		}
		got := false
		defer func() {
			if !got { // the pool panicked: the slot is not held
				b.held.Add(-1)
			}
		}()
		bp := pool.Get().(*[]byte)
		got = true
		return bp, true
	}
	b.held.Add(-1)
	return smallBuffers.Get().(*[]byte), false
}

func (b *Buffers) put(bp *[]byte, big bool) {
	if !big {
		smallBuffers.Put(bp)
		return
	}
	pool := b.Pool
	if pool == nil {
		pool = relayBuffers
	}
	pool.Put(bp)
	b.held.Add(-1)
}

// HeldBytes is the memory the big buffers handed out hold now, for a gauge.
func (b *Buffers) HeldBytes() int64 { return b.held.Load() * relayBufferSize }
