package filter

import (
	"fmt"
	"slices"
	"strings"
)

// RolesKey is the fixed session property holding the session's roles in
// canonical form (see RolesToString).
const RolesKey = "$Roles"

// RolesToString returns the canonical form of a set of roles: each role
// double-quoted with '"' and '\' escaped by a backslash, duplicates removed,
// sorted, and joined by commas with no spaces. For example the roles client
// and admin become "admin","client". An empty or nil set yields "".
func RolesToString(roles []string) string {
	sorted := slices.Clone(roles)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var b strings.Builder
	for i, r := range sorted {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(r); j++ {
			if c := r[j]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(r[j])
		}
		b.WriteByte('"')
	}
	return b.String()
}

// StringToRoles parses the canonical form produced by RolesToString and
// returns the roles in the order written. The empty string holds no roles.
// Order and duplicates are not checked, but the syntax is strict: every role
// is double-quoted, only \" and \\ are escapes, roles are separated by a
// single comma, and no white space is allowed. Anything else is an error, and
// a session whose $Roles property does not parse has no roles.
func StringToRoles(s string) ([]string, error) {
	var roles []string
	err := scanRoles(s, func(role string) { roles = append(roles, role) })
	if err != nil {
		return nil, err
	}
	return roles, nil
}

// scanRoles validates s as a canonical roles string, calling emit for each
// role in turn. emit may be nil, in which case nothing is allocated.
func scanRoles(s string, emit func(string)) error {
	if s == "" {
		return nil
	}
	var buf []byte
	i := 0
	for {
		if s[i] != '"' {
			return fmt.Errorf("roles: expected '\"' at offset %d", i)
		}
		i++
		start := i
		buf = buf[:0]
		escaped := false
		for {
			if i >= len(s) {
				return fmt.Errorf("roles: unterminated role starting at offset %d", start-1)
			}
			c := s[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				if i+1 >= len(s) || (s[i+1] != '"' && s[i+1] != '\\') {
					return fmt.Errorf("roles: invalid escape at offset %d", i)
				}
				if emit != nil && !escaped {
					buf = append(buf, s[start:i]...)
				}
				escaped = true
				i++
				c = s[i]
			}
			if emit != nil && escaped {
				buf = append(buf, c)
			}
			i++
		}
		if emit != nil {
			if escaped {
				emit(string(buf))
			} else {
				emit(s[start:i])
			}
		}
		i++ // closing quote
		if i == len(s) {
			return nil
		}
		if s[i] != ',' {
			return fmt.Errorf("roles: expected ',' at offset %d", i)
		}
		i++
		if i == len(s) {
			return fmt.Errorf("roles: trailing ',' at offset %d", i-1)
		}
	}
}

// rolesContain reports whether the canonical roles string s is well formed
// and holds role. It does not allocate.
func rolesContain(s, role string) bool {
	found := false
	i := 0
	for i < len(s) {
		if s[i] != '"' {
			return false
		}
		i++
		j := 0
		same := true
		for {
			if i >= len(s) {
				return false
			}
			c := s[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				i++
				if i >= len(s) || (s[i] != '"' && s[i] != '\\') {
					return false
				}
				c = s[i]
			}
			if same {
				if j < len(role) && role[j] == c {
					j++
				} else {
					same = false
				}
			}
			i++
		}
		if same && j == len(role) {
			found = true
		}
		i++ // closing quote
		if i == len(s) {
			break
		}
		if s[i] != ',' || i+1 == len(s) {
			return false
		}
		i++
	}
	return found
}
