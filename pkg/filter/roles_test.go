package filter

import (
	"slices"
	"testing"
)

func TestRolesToString(t *testing.T) {
	tests := []struct {
		name  string
		roles []string
		want  string
	}{
		{"nil", nil, ``},
		{"sorted", []string{"client", "admin"}, `"admin","client"`},
		{"deduplicated", []string{"b", "a", "b", "a"}, `"a","b"`},
		{"escaped", []string{`a","x`, `back\slash`}, `"a\",\"x","back\\slash"`},
		{"space kept", []string{"trading desk"}, `"trading desk"`},
		{"empty role", []string{""}, `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RolesToString(tt.roles); got != tt.want {
				t.Errorf("RolesToString(%q): got %s, want %s", tt.roles, got, tt.want)
			}
		})
	}
}

func TestRolesToStringDoesNotModifyInput(t *testing.T) {
	in := []string{"b", "a", "b"}
	RolesToString(in)
	if want := []string{"b", "a", "b"}; !slices.Equal(in, want) {
		t.Errorf("input: got %q, want %q", in, want)
	}
}

func TestStringToRoles(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		wantErr  bool
	}{
		{"empty", ``, nil, false},
		{"two", `"admin","client"`, []string{"admin", "client"}, false},
		{"order kept", `"b","a"`, []string{"b", "a"}, false},
		{"escapes", `"a\",\"x","back\\slash"`, []string{`a","x`, `back\slash`}, false},
		{"empty role", `""`, []string{""}, false},
		{"unquoted", `admin`, nil, true},
		{"unterminated", `"admin`, nil, true},
		{"space after comma", `"a", "b"`, nil, true},
		{"trailing comma", `"a",`, nil, true},
		{"leading comma", `,"a"`, nil, true},
		{"missing comma", `"a""b"`, nil, true},
		{"bad escape", `"a\n"`, nil, true},
		{"trailing backslash", `"a\`, nil, true},
		{"single quotes", `'a'`, nil, true},
		{"junk after", `"a"x`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StringToRoles(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("StringToRoles(%s): got error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("StringToRoles(%s): got %q, want %q", tt.in, got, tt.want)
			}
			for _, role := range []string{"a", "b", "admin", `a","x`, "x", ""} {
				want := err == nil && slices.Contains(got, role)
				if c := rolesContain(tt.in, role); c != want {
					t.Errorf("rolesContain(%s, %q): got %v, want %v", tt.in, role, c, want)
				}
			}
		})
	}
}

func FuzzRoles(f *testing.F) {
	for _, s := range []string{``, `"a"`, `"admin","client"`, `"a\",\"x"`, `"a\\"`, `"a",`, `"a\`, `x`} {
		f.Add(s, "a")
	}
	f.Fuzz(func(t *testing.T, s, role string) {
		roles, err := StringToRoles(s)
		want := err == nil && slices.Contains(roles, role)
		if got := rolesContain(s, role); got != want {
			t.Fatalf("rolesContain(%q, %q): got %v, want %v", s, role, got, want)
		}
		if err != nil {
			return
		}
		canon := RolesToString(roles)
		back, err := StringToRoles(canon)
		if err != nil {
			t.Fatalf("StringToRoles(RolesToString(%q) = %q): got error %v, want nil", roles, canon, err)
		}
		sorted := slices.Clone(roles)
		slices.Sort(sorted)
		if sorted = slices.Compact(sorted); !slices.Equal(back, sorted) {
			t.Fatalf("round trip of %q: got %q, want %q", roles, back, sorted)
		}
	})
}
