package policy

import (
	"strings"
	"testing"
)

// TestEmptyListsAreRefused: a grant whose names list is present but empty, or a
// property rule whose values list is, would be stored without the list (omitempty)
// and read back as every name, any value — failing open for an operator who removed
// the last pattern. Both are refused.
func TestEmptyListsAreRefused(t *testing.T) {
	for _, text := range []string{`
roles:
  trader:
    - permission: ACQUIRE_LOCK
      names: []
anonymous: {allowed: false}
`, `
roles: {}
anonymous: {allowed: false}
properties:
  rules:
    - key: Department
      values: []
`} {
		if _, err := Parse([]byte(text)); err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Errorf("got %v, want the empty list refused:%s", err, text)
		}
	}
}

// TestPropertyGlobsMatchSlash: property keys are not paths, so * and ? match '/' in
// them: the veto rule Internal* vetoes Internal/Role too (path.Match let it through
// to the default, accept here).
func TestPropertyGlobsMatchSlash(t *testing.T) {
	p := &Policy{Properties: Properties{Default: Accept, Rules: []PropertyRule{{Key: "Internal*", Veto: true}, {Key: "a?c", Veto: true}}}}
	got, _ := p.VetProperties(map[string]string{"InternalRole": "x", "Internal/Role": "x", "a/c": "x", "Other/Key": "x"})
	for _, k := range []string{"InternalRole", "Internal/Role", "a/c"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s was not vetoed: got %v", k, got)
		}
	}
	if got["Other/Key"] != "x" {
		t.Errorf("Other/Key was vetoed: got %v", got)
	}
}
