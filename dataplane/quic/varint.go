package quic

// readVarint reads a variable-length integer (RFC 9000 §16) from the front
// of b and returns it with the number of bytes it took. The two high bits of
// the first byte give the length: 1, 2, 4 or 8 bytes. Encodings longer than
// needed are valid everywhere but in a frame type (RFC 9000 §12.4), which
// is read as one byte elsewhere.
func readVarint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0, false
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, n, true
}
