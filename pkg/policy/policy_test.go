package policy

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"orders/*", "orders/42", true},
		{"orders/*", "orders", false},
		{"orders/*", "orders/42/lines", false},
		{"orders/**", "orders", true},
		{"orders/**", "orders/42", true},
		{"orders/**", "orders/42/lines", true},
		{"orders/**", "ordersx/1", false},
		{"update-topic/a", "update-topic/a", true},
		{"update-topic/a", "update-topic/b", false},
		{"*", "a", true},
		{"*", "a/b", false},
		{"**", "a/b/c", true},
		{"*/x", "a/x", true},
		{"*/x", "a/y", false},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/d", false},
		{"a/b", "a", false},
		{"a", "a/b", false},
		{"a", "", false},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q): got %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	for _, bad := range []string{"", "a//b", "a/**/b", "a*", "/a", "a/"} {
		if ValidatePattern(bad) == nil {
			t.Errorf("ValidatePattern(%q): got nil, want an error", bad)
		}
	}
	for _, good := range []string{"a", "a/*", "a/**", "**", "*/b"} {
		if err := ValidatePattern(good); err != nil {
			t.Errorf("ValidatePattern(%q): got %v, want nil", good, err)
		}
	}
}

func TestAllowed(t *testing.T) {
	p := &Policy{Roles: map[string][]Grant{
		"trader": {{Permission: AcquireLock, Names: []string{"update-topic/a"}}, {Permission: ViewSession}},
		"admin":  {{Permission: ModifySecurity}},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		roles []string
		perm  Permission
		name  string
		want  bool
	}{
		{[]string{"trader"}, AcquireLock, "update-topic/a", true},
		{[]string{"trader"}, AcquireLock, "update-topic/b", false},
		{[]string{"trader"}, ViewSession, "", true},
		{[]string{"trader"}, ModifySecurity, "", false},
		{[]string{"trader", "admin"}, ModifySecurity, "", true},
		{nil, ViewSession, "", false},
		{[]string{"unknown"}, ViewSession, "", false},
	}
	for _, c := range cases {
		if got := p.Allowed(c.roles, c.perm, c.name); got != c.want {
			t.Errorf("Allowed(%v, %s, %q): got %v, want %v", c.roles, c.perm, c.name, got, c.want)
		}
	}
	bad := &Policy{Roles: map[string][]Grant{"x": {{Permission: "FLY"}, {Permission: AcquireLock, Names: []string{"a/**/b"}}}}}
	if bad.Validate() == nil {
		t.Fatal("Validate accepted an unknown permission and a bad pattern")
	}
}

// TestValidateRefusesNamesOnUnscopedPermissions: Allowed checks an unscoped
// permission with no name, which only "**" matches, so names on such a grant mean
// everything or nothing, silently.
func TestValidateRefusesNamesOnUnscopedPermissions(t *testing.T) {
	for _, perm := range Permissions() {
		p := &Policy{Roles: map[string][]Grant{"r": {{Permission: perm, Names: List{"a/**"}}}}}
		err := p.Validate()
		if perm.Scoped() && err != nil {
			t.Errorf("%s with names: %v, want valid", perm, err)
		}
		if !perm.Scoped() && (err == nil || !strings.Contains(err.Error(), "not granted per name")) {
			t.Errorf("%s with names: %v, want refused", perm, err)
		}
	}
}
