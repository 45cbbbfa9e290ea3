package policy

import (
	"strings"
	"testing"
)

// TestRemovedLastItemIsRefused: in YAML block style an operator removes the last
// pattern of a grant (or the last accepted value of a rule) by deleting its "- …"
// line, which leaves "names:" (or "values:") with nothing: YAML null. Decoded, that
// is an absent list — every name, any value — so the grant failed open. It is
// refused like an empty list.
func TestRemovedLastItemIsRefused(t *testing.T) {
	for name, text := range map[string]string{
		"names": `
roles:
  trader:
    - permission: ACQUIRE_LOCK
      names:
anonymous: {allowed: false}
`,
		"names null": `
roles:
  trader:
    - {permission: SEND_TO_FILTER, names: null}
anonymous: {allowed: false}
`,
		"values": `
roles: {}
anonymous: {allowed: false}
properties:
  default: accept
  rules:
    - key: Department
      values:
`,
		"values tilde": `
roles: {}
anonymous: {allowed: false}
properties:
  rules:
    - {key: Department, values: ~}
`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(text))
			if err == nil {
				t.Fatal("got nil, want the list without items refused")
			}
			if !strings.Contains(err.Error(), "no items") {
				t.Fatalf("got %v, want an error saying the list has no items", err)
			}
		})
	}
	// A grant without the key at all still holds for every name.
	p, err := Parse([]byte("roles:\n  admin:\n    - permission: VIEW_LOCKS\nanonymous: {allowed: false}\n"))
	if err != nil || !p.Allowed([]string{"admin"}, ViewLocks, "") {
		t.Fatalf("got %v, want a grant without names", err)
	}
}
