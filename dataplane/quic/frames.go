package quic

// Frame types a client's Initial packet may carry (RFC 9000 §12.4, Table 3;
// encodings in §19). Each is one byte: a frame type must be encoded in as
// few bytes as it needs (RFC 9000 §12.4), so a first byte of 0x40 or more
// is a longer encoding or a type an Initial may not carry, refused either
// way.
const (
	framePadding         = 0x00 // RFC 9000 §19.1
	framePing            = 0x01 // RFC 9000 §19.2
	frameACK             = 0x02 // RFC 9000 §19.3
	frameACKECN          = 0x03 // RFC 9000 §19.3, with ECN counts
	frameCrypto          = 0x06 // RFC 9000 §19.6
	frameConnectionClose = 0x1c // RFC 9000 §19.19, QUIC layer
)

// walkFrames reads the frames of one decrypted Initial packet and hands the
// CRYPTO data to s: PADDING, PING and ACK are skipped; CONNECTION_CLOSE and
// every frame an Initial packet may not carry are ErrFrame; a frame that
// runs past the packet is ErrMalformed. Its cost is linear in len(p): every
// step consumes at least one byte.
func walkFrames(p []byte, s *cryptoStream, limit int) error {
	for len(p) > 0 {
		switch p[0] {
		case framePadding, framePing:
			p = p[1:]
		case frameACK, frameACKECN:
			n, ok := ackFrameLen(p)
			if !ok {
				return ErrMalformed
			}
			p = p[n:]
		case frameCrypto:
			// Type, Offset (varint), Length (varint), Crypto Data.
			off, w1, ok1 := readVarint(p[1:])
			n, w2, ok2 := readVarint(p[min(1+w1, len(p)):])
			start := 1 + w1 + w2
			if !ok1 || !ok2 || n > uint64(len(p)-start) {
				return ErrMalformed
			}
			end := start + int(n)
			if err := s.add(off, p[start:end], limit); err != nil {
				return err
			}
			p = p[end:]
		default:
			return ErrFrame
		}
	}
	return nil
}

// ackFrameLen returns the length of the ACK frame at the start of p (RFC
// 9000 §19.3): Largest Acknowledged, ACK Delay, ACK Range Count, First ACK
// Range, the ranges as Gap and ACK Range Length pairs, and with type 0x03
// three ECN counts. A range that would acknowledge a packet number below
// zero is malformed (RFC 9000 §19.3.1). The ranges are read, not trusted:
// a count larger than the bytes left fails when the bytes run out.
func ackFrameLen(p []byte) (int, bool) {
	pos := 1
	next := func() (uint64, bool) {
		v, n, ok := readVarint(p[pos:])
		pos += n
		return v, ok
	}
	largest, ok1 := next()
	_, ok2 := next() // ACK Delay
	count, ok3 := next()
	first, ok4 := next()
	if !ok1 || !ok2 || !ok3 || !ok4 || first > largest {
		return 0, false
	}
	smallest := largest - first
	for range count {
		gap, ok5 := next()
		length, ok6 := next()
		// The next range's largest is smallest - gap - 2, and its
		// smallest that minus length (RFC 9000 §19.3.1).
		if !ok5 || !ok6 || gap+2 > smallest || length > smallest-gap-2 {
			return 0, false
		}
		smallest = smallest - gap - 2 - length
	}
	if p[0] == frameACKECN {
		for range 3 { // ECT0, ECT1, ECN-CE counts
			if _, ok := next(); !ok {
				return 0, false
			}
		}
	}
	return pos, true
}
