package filter

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"

	"github.com/seed-3c836eab/roster/pkg/sessions"
)

// TestPropertyKeysAreNamedOrRefused: a filter naming a property key the registry
// accepts (sessions.ValidateKey) either selects by that key or is refused; it never
// compiles to a filter about something else. White space in a filter was every
// Unicode space, which keys may hold: the key "not", no-break space, "b" read as
// "not b", so `not<NBSP>b is "v"` matched every session without b, and keys with
// such a space could not be named at all.
func TestPropertyKeysAreNamedOrRefused(t *testing.T) {
	pieces := []string{"a", "b", "not", "NOT", "has", "in", "is", "or", "all", "hasRoles", "$",
		"\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", "\v", "\f", ",", "[", "]", "{", "}", "\x00", "é", "-"}
	r := rand.New(rand.NewPCG(5, 9))
	keys := []string{"not\u00a0b", "a\u00a0b", "Città", "a\vb", "x\u2003y", "\u00a0", "not\u2003not\u2003b"}
	for range 5000 {
		var b strings.Builder
		for range 1 + r.IntN(4) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		keys = append(keys, b.String())
	}
	for _, key := range keys {
		if sessions.ValidateKey(key) != nil {
			continue
		}
		for _, text := range []string{key + ` is "v"`, key + ` eq "v"`, key + ` in ["v"]`, `has ` + key, `not ` + key + ` ne "v"`} {
			f, err := Compile(text)
			if err != nil {
				if se := (*SyntaxError)(nil); !errors.As(err, &se) {
					t.Fatalf("Compile(%q): got %v, want a *SyntaxError", text, err)
				}
				continue
			}
			// Another session has, instead of the key, each of its parts between
			// white space, as a filter splitting the key would name them.
			other := map[string]string{}
			for _, part := range strings.FieldsFunc(key, unicode.IsSpace) {
				if part != key {
					other[part] = "v"
				}
			}
			if !f.Matches(map[string]string{key: "v"}) || f.Matches(other) {
				t.Errorf("Compile(%q) = %s: does not select by the key %q", text, f.Canonical(), key)
			}
		}
	}
	// Keys with white space the registry allows, other than its four, are named.
	for _, key := range []string{"a\u00a0b", "x\u2003y", "a\vb", "a\fb", "n\u0085l", "not\u00a0b"} {
		if _, err := Compile(key + ` is "v"`); err != nil {
			t.Errorf("the key %q cannot be named: %v", key, err)
		}
	}
}
