package policy

import (
	"encoding/json"
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

// TestJSONNullListIsRefused: the JSON a policy.set request carries is decoded with
// encoding/json, which reads "names": null (or "values": null) as an absent list,
// as YAML does — a grant on every name, a rule accepting any value. A tool that
// writes an emptied list as null failed open, where a policy file saying the same
// was refused (TestRemovedLastItemIsRefused). Null is refused in JSON too.
func TestJSONNullListIsRefused(t *testing.T) {
	for name, text := range map[string]string{
		"names":  `{"roles":{"trader":[{"permission":"ACQUIRE_LOCK","names":null}]},"anonymous":{"allowed":false}}`,
		"values": `{"roles":{},"anonymous":{"allowed":false},"properties":{"default":"accept","rules":[{"key":"Department","values":null}]}}`,
	} {
		t.Run(name, func(t *testing.T) {
			var p Policy
			err := json.Unmarshal([]byte(text), &p)
			if err == nil {
				err = p.Validate()
			}
			if err == nil {
				t.Fatalf("got nil, want the null list refused; ACQUIRE_LOCK on x/y: %v, Department=anything kept: %v",
					p.Allowed([]string{"trader"}, AcquireLock, "x/y"), len(must(p.VetProperties(map[string]string{"Department": "anything"}))) == 1)
			}
			if !strings.Contains(err.Error(), "null") {
				t.Fatalf("got %v, want an error saying the list is null", err)
			}
		})
	}
	// Absent lists still mean every name and any value; lists with items decode.
	var p Policy
	if err := json.Unmarshal([]byte(`{"roles":{"admin":[{"permission":"VIEW_LOCKS"},{"permission":"ACQUIRE_LOCK","names":["orders/*"]}]},"anonymous":{"allowed":false}}`), &p); err != nil {
		t.Fatal(err)
	}
	if !p.Allowed([]string{"admin"}, ViewLocks, "") || !p.Allowed([]string{"admin"}, AcquireLock, "orders/1") || p.Allowed([]string{"admin"}, AcquireLock, "x") {
		t.Fatalf("got %+v, want VIEW_LOCKS everywhere and ACQUIRE_LOCK on orders/*", p.Roles)
	}
}

func must[T, U any](t T, _ U) T { return t }
