package quic

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// Key sizes of the Initial packet protection, AEAD_AES_128_GCM with
// AES-128 header protection (RFC 9001 §5.2, §5.4.3).
const (
	initialSecretLen = sha256.Size
	keyLen           = 16
	ivLen            = 12
	hpSampleLen      = 16 // RFC 9001 §5.4.2
	tagLen           = 16 // the GCM tag, RFC 5116 §5.1
)

// initialKeys protects a client's Initial packets of one connection: the
// AEAD, its IV and the header protection cipher.
type initialKeys struct {
	aead cipher.AEAD
	iv   [ivLen]byte
	hp   cipher.Block
}

// clientInitialKeys derives the keys with which a client protects its
// Initial packets (RFC 9001 §5.2; RFC 9369 §3.3 for v2's salt and labels):
//
//	initial_secret = HKDF-Extract(initial_salt, client_dst_connection_id)
//	client_initial_secret = HKDF-Expand-Label(initial_secret, "client in", "", 32)
//	key = HKDF-Expand-Label(client_initial_secret, "quic key", "", 16)
//	iv  = HKDF-Expand-Label(client_initial_secret, "quic iv", "", 12)
//	hp  = HKDF-Expand-Label(client_initial_secret, "quic hp", "", 16)
func clientInitialKeys(p versionParams, dcid []byte) (initialKeys, error) {
	var k initialKeys
	initial, err := hkdf.Extract(sha256.New, dcid, p.salt[:])
	if err != nil {
		return k, err
	}
	client, err := expandLabel(initial, "client in", initialSecretLen)
	if err != nil {
		return k, err
	}
	key, err := expandLabel(client, p.keyLabel, keyLen)
	if err != nil {
		return k, err
	}
	iv, err := expandLabel(client, p.ivLabel, ivLen)
	if err != nil {
		return k, err
	}
	hp, err := expandLabel(client, p.hpLabel, keyLen)
	if err != nil {
		return k, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return k, err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return k, err
	}
	if k.hp, err = aes.NewCipher(hp); err != nil {
		return k, err
	}
	copy(k.iv[:], iv)
	return k, nil
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context (RFC 8446
// §7.1), which QUIC uses for all its Initial secrets (RFC 9001 §5.1):
//
//	struct {
//	    uint16 length = Length;
//	    opaque label<7..255> = "tls13 " + Label;
//	    opaque context<0..255> = Context;
//	} HkdfLabel;
func expandLabel(secret []byte, label string, n int) ([]byte, error) {
	const prefix = "tls13 "
	info := make([]byte, 0, 2+1+len(prefix)+len(label)+1)
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	return hkdf.Expand(sha256.New, secret, string(info), n)
}

// nonce is the AEAD nonce of packet number pn: the IV with the packet
// number, left-padded to its size, XORed in (RFC 9001 §5.3).
func (k *initialKeys) nonce(pn uint64) [ivLen]byte {
	n := k.iv
	var be [8]byte
	binary.BigEndian.PutUint64(be[:], pn)
	for i, c := range be {
		n[ivLen-8+i] ^= c
	}
	return n
}
