package main

import (
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/filter"
)

// TestExcludeSessionCompiles: the filter that leaves out the command's own session
// compiles whenever the filter given does, so a valid filter is never refused by
// the service for what the CLI added to it. Parenthesised, a filter already
// filter.MaxDepth deep was one level too deep, and the service answered
// invalid_filter at an offset into text the user never wrote.
func TestExcludeSessionCompiles(t *testing.T) {
	const id = "AbCdEfGhIjKlMnOpQrStUv"
	deep := strings.Repeat("(", filter.MaxDepth) + `Department is "Accounts"` + strings.Repeat(")", filter.MaxDepth)
	notDeep := strings.Repeat("not ", filter.MaxDepth) + `has Department`
	long := `a is "` + strings.Repeat("x", filter.MaxLength-10) + `"`
	for name, text := range map[string]string{
		"empty": "", "plain": `Department is "Accounts"`, "or": `a is "1" or b is "2"`,
		"deep": deep, "deep not": notDeep, "long": long,
	} {
		t.Run(name, func(t *testing.T) {
			if text != "" {
				if _, err := filter.Compile(text); err != nil {
					t.Fatalf("the filter given does not compile: %v", err)
				}
			}
			out := excludeSession(text, id)
			f, err := filter.Compile(out)
			if err != nil {
				t.Fatalf("excludeSession(%.40q…): %v", text, err)
			}
			me := map[string]string{"$SessionId": id, "Department": "Accounts", "a": "1"}
			if out != text && f.Matches(me) {
				t.Errorf("excludeSession(%.40q…) = %.60q… matches the session it leaves out", text, out)
			}
		})
	}
}
