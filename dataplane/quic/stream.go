package quic

// TLS handshake framing (RFC 8446 §4): msg_type, then a 24-bit length.
const (
	handshakeHeaderLen   = 4
	handshakeClientHello = 1
)

// cryptoStream reassembles the client's Initial CRYPTO stream (RFC 9000
// §19.6), which holds exactly one ClientHello (RFC 9001 §4.1.3: the client
// sends nothing else at the Initial level), from frames that may come in
// any order, overlap, and repeat.
//
// A bitmap says which bytes are in; bytes received twice must agree (see
// ErrCryptoConflict). Memory is bounded by the limit add is given: the
// buffer and its bitmap grow to the highest offset seen, never past it.
type cryptoStream struct {
	data   []byte   // received bytes at their offsets; len is the highest end seen
	have   []uint64 // bit i set: data[i] was received
	filled int      // how many bits are set
	total  int      // the ClientHello's length with its header, once known; 0 before
}

// add takes the bytes b of a CRYPTO frame at offset off. limit caps the
// stream (Limits.MaxHelloBytes).
func (s *cryptoStream) add(off uint64, b []byte, limit int) error {
	end := off + uint64(len(b)) // no overflow: off < 2^62, len(b) < 2^16
	if end > uint64(limit) {
		return ErrTooLarge
	}
	if s.total > 0 && end > uint64(s.total) {
		return ErrClientHello // bytes past the ClientHello
	}
	s.grow(int(end), limit)
	for j := int(off); j < int(end); {
		w, bit := j/64, uint64(1)<<(j%64)
		if j%64 == 0 && j+64 <= int(end) && s.have[w] == 0 {
			// A whole word of new bytes, the common case of frames in
			// order without overlap.
			copy(s.data[j:j+64], b[j-int(off):])
			s.have[w] = ^uint64(0)
			s.filled += 64
			j += 64
			continue
		}
		c := b[j-int(off)]
		if s.have[w]&bit != 0 {
			if s.data[j] != c {
				return ErrCryptoConflict
			}
		} else {
			s.have[w] |= bit
			s.data[j] = c
			s.filled++
		}
		j++
	}
	if len(s.data) > 0 && s.have[0]&1 != 0 && s.data[0] != handshakeClientHello {
		return ErrClientHello
	}
	if s.total == 0 && len(s.data) >= handshakeHeaderLen && s.have[0]&0x0f == 0x0f {
		s.total = handshakeHeaderLen + (int(s.data[1])<<16 | int(s.data[2])<<8 | int(s.data[3]))
		switch {
		case s.total > limit:
			return ErrTooLarge
		case len(s.data) > s.total:
			return ErrClientHello
		}
	}
	return nil
}

// grow makes room for the stream's first n bytes, n ≤ limit. Capacity
// doubles, up to the ClientHello's length once known and never past limit,
// so a stream that arrives in order costs a few allocations.
func (s *cryptoStream) grow(n, limit int) {
	if n <= len(s.data) {
		return
	}
	words := (n + 63) / 64
	if n <= cap(s.data) {
		s.data = s.data[:n]
		s.have = s.have[:words] // cap(s.have) covers cap(s.data)
		return
	}
	size := min(max(n, 2*cap(s.data)), limit)
	if s.total > 0 {
		size = max(n, s.total)
	}
	data := make([]byte, n, size)
	copy(data, s.data)
	have := make([]uint64, words, (size+63)/64)
	copy(have, s.have)
	s.data, s.have = data, have
}

// complete reports whether the whole ClientHello is in.
func (s *cryptoStream) complete() bool {
	return s.total > 0 && s.filled == s.total
}

// hello is the ClientHello, header included; valid once complete.
func (s *cryptoStream) hello() []byte {
	return s.data[:s.total]
}
