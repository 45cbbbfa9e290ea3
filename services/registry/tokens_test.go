package registry

import (
	"encoding/base64"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// TestTokensAreUniqueAndFull draws a million tokens: each is 256 bits
// (base64url of 32 bytes) and none repeats. With 2^256 values a repeat would mean a
// broken generator, not bad luck.
func TestTokensAreUniqueAndFull(t *testing.T) {
	t.Parallel()
	const n = 1_000_000
	seen := make(map[[32]byte]struct{}, n)
	var ones [256]int // how often each bit is set
	for i := range n {
		tok := newToken()
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(raw) != 32 {
			t.Fatalf("token %q: got %d bytes (%v), want 32", tok, len(raw), err)
		}
		k := [32]byte(raw)
		if _, dup := seen[k]; dup {
			t.Fatalf("token %d repeats an earlier one", i)
		}
		seen[k] = struct{}{}
		if i < 10_000 {
			for b := range 256 {
				ones[b] += int(raw[b/8] >> (b % 8) & 1)
			}
		}
	}
	// Every one of the 256 bits varies: none is stuck (10 000 draws put each count
	// within 5 000 ± 400 except with probability ~1e-15 per bit).
	for b, c := range ones {
		if c < 4600 || c > 5400 {
			t.Errorf("bit %d was set in %d of 10000 tokens, want about 5000", b, c)
		}
	}
}

// TestTokensComeFromCryptoRand checks that the token and id generators draw from
// crypto/rand: ids.go imports it and no other random source.
func TestTokensComeFromCryptoRand(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "ids.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var crypto bool
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		switch path {
		case "crypto/rand":
			crypto = true
		case "math/rand", "math/rand/v2":
			t.Errorf("ids.go imports %s", path)
		}
	}
	if !crypto {
		t.Error("ids.go does not import crypto/rand")
	}
}
