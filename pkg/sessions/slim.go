package sessions

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"unique"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// held is what a Slim view keeps of a session: 80 bytes plus its connection and
// deliver key, where a decoded record with a dozen short properties takes about
// 1.7 KB. The fields few sessions differ in are interned together (slimMeta).
type held struct {
	rev        uint64
	hash       [sha256.Size]byte // the token hash, when slimMeta.hashed
	connection string
	deliverKey string
	meta       unique.Handle[slimMeta]
}

// slimMeta holds the fields of a slim record that take few distinct values, so that
// sessions share one copy.
type slimMeta struct {
	// principal is shared by the sessions of one principal: the messaging service
	// bounds the requests they have in progress together.
	principal string
	state     wire.SessionState
	reason    wire.CloseReason
	roles     string // packed by packRoles
	nilRoles  bool
	// hashed reports that held.hash holds the token hash, which is then the lowercase
	// hex of 32 bytes, as HashToken writes it. Any other token hash (none the
	// registry writes) is kept as is in tokenHash.
	hashed    bool
	tokenHash string
}

// hold returns what a slim view keeps of r.
func hold(r *Record) *held {
	h := &held{rev: r.Revision, connection: r.Connection, deliverKey: r.DeliverKey}
	m := slimMeta{principal: r.Principal, state: r.State, reason: r.CloseReason, roles: packRoles(r.Roles), nilRoles: r.Roles == nil}
	if canonicalHash(r.TokenHash) {
		_, _ = hex.Decode(h.hash[:], []byte(r.TokenHash))
		m.hashed = true
	} else {
		m.tokenHash = r.TokenHash
	}
	h.meta = unique.Make(m)
	return h
}

// record builds the slim record of session id from h: only the fields hold keeps
// are set.
func (h *held) record(id string) *Record {
	m := h.meta.Value()
	r := &Record{
		ID:          id,
		Principal:   m.principal,
		Roles:       unpackRoles(m.roles, m.nilRoles),
		State:       m.state,
		CloseReason: m.reason,
		TokenHash:   m.tokenHash,
		Connection:  h.connection,
		DeliverKey:  h.deliverKey,
		Revision:    h.rev,
	}
	if m.hashed {
		r.TokenHash = hex.EncodeToString(h.hash[:])
	}
	return r
}

// canonicalHash reports whether s is the lowercase hex of sha256.Size bytes.
func canonicalHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// packRoles encodes roles as one string: each role preceded by its length (uvarint),
// so that any role, whatever bytes it holds, comes back unchanged.
func packRoles(roles []string) string {
	var b []byte
	for _, r := range roles {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return string(b)
}

// unpackRoles decodes packRoles's string; the roles share its memory.
func unpackRoles(s string, isNil bool) []string {
	if isNil {
		return nil
	}
	roles := []string{}
	for len(s) > 0 {
		var n uint64
		for shift := 0; ; shift += 7 { // the uvarint written by packRoles
			c := s[0]
			s = s[1:]
			n |= uint64(c&0x7f) << shift
			if c < 0x80 {
				break
			}
		}
		roles = append(roles, s[:n])
		s = s[n:]
	}
	return roles
}
