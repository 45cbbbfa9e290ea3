package registry

import (
	"crypto/rand"
	"encoding/base64"
	"math/big"
	"strings"

	"github.com/seed-3c836eab/roster/pkg/sessions"
)

// newID returns a fresh session id: 22 characters of [0-9a-zA-Z] from 128 random
// bits, safe in URLs, NATS subjects and KV keys. With 2^128 values a collision is
// never expected; Create still refuses one, and open retries.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	s := new(big.Int).SetBytes(b[:]).Text(62)
	return strings.Repeat("0", sessions.IDLength-len(s)) + s
}

// newToken returns a fresh secret token: 256 random bits, base64url without padding.
func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
