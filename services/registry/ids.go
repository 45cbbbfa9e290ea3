package registry

import (
	"crypto/rand"
	"encoding/base64"
	"math/big"
	"strings"
)

// idLength is the length of a session id: 128 random bits in base62.
const idLength = 22

// newID returns a fresh session id: 22 characters of [0-9a-zA-Z] from 128 random
// bits, safe in URLs, NATS subjects and KV keys. With 2^128 values a collision is
// never expected; Create still refuses one, and open retries.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	s := new(big.Int).SetBytes(b[:]).Text(62)
	return strings.Repeat("0", idLength-len(s)) + s
}

// validID reports whether id has the shape of a session id, so that anything else is
// refused before it reaches a KV key or subject.
func validID(id string) bool {
	if len(id) != idLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// newToken returns a fresh secret token: 256 random bits, base64url without padding.
func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
