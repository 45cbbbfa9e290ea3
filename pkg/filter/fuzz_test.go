package filter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// fuzzSeeds are the seed examples and error cases.
var fuzzSeeds = []string{
	`Department is "Accounts"`, `hasRoles[ "operator" "trading desk" ]`,
	`Department is "Payroll" and Status is "Closed"`,
	`(Department is "Accounts" or Department is "Payroll") and Status is "Closed"`,
	`not Department is "Payroll"`, `not (Department is "Payroll" or Department is "Accounts")`,
	`$Principal is "Alice"`, `Department is "Accounts" and $Country ne "US"`,
	`$Language EQ "en" and $Country NE "US"`,
	`not (Department is "Accounts" or Department is "Payroll") and $Country is "FR"`,
	`Text is "xyz\"\\"`, `hasRoles ["operator"]`,
	`$Transport is "wss" and hasRoles ["accountancy" "administrator"]`,
	`$Version in {"6","7","8"}`, `$Country in ['UK','DE','FR']`, `$Country in 'UK','DE','FR'`,
	`hasRoles ["operator"] and not hasRoles ["administrator"]`, `has Department`, `all`,
	`$Roles eq '"admin","client"'`, `$Country in 'UK' 'DE' and not has x or all`,
	``, `   `, `Department = "Accounts"`, `Department == "Accounts"`, `Department contains "A"`,
	`Department is Accounts`, `Department is "Accounts`, `(Department is "Accounts"`,
	`Department is "Accounts")`, `hasRoles ["a"`, `hasRoles ["a"}`, `a is "x" and`, `a is "x" or`,
	`not`, `a is "x" b is "y"`, `has and`, `is is "x"`, `Text is "a\nb"`, "k is \"\x00\u2028\"",
	"not\u00a0b is 'v'", "k\u2003 in 'a'\v'b'", "has\tk\x85", `a,b is "x"`, `x[0] is "y"`,
}

func FuzzCompile(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := Compile(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Compile(%q): got %T %v, want *SyntaxError", s, err, err)
			}
			if se.Pos < 0 || se.Pos > len(s) {
				t.Fatalf("Compile(%q): position %d outside the input", s, se.Pos)
			}
			return
		}
		if _, err := compileProgram(flt.CEL()); err != nil {
			t.Fatalf("Compile(%q): CEL %s does not compile: %v", s, flt.CEL(), err)
		}
		// The text compiled afresh, not the cached *Filter Compile returned above.
		root, err := parse(s)
		if err != nil {
			t.Fatalf("parse(%q) after Compile: got error %v, want nil", s, err)
		}
		again, err := compileNode(s, root)
		if err != nil {
			t.Fatalf("compileNode(%q) after Compile: got error %v, want nil", s, err)
		}
		canon := flt.Canonical()
		fromCanon, err := Compile(canon)
		switch {
		case len(canon) > MaxLength:
			// The canonical form can be longer than the text (see Canonical).
			if se := (*SyntaxError)(nil); !errors.As(err, &se) {
				t.Fatalf("Compile(Canonical()) of %d bytes: got %v, want a *SyntaxError", len(canon), err)
			}
			fromCanon = again
		case err != nil:
			t.Fatalf("Compile(Canonical() = %q) of %q: got error %v, want nil", canon, s, err)
		case fromCanon.Canonical() != canon:
			t.Fatalf("Canonical of %q not stable: got %q, want %q", s, fromCanon.Canonical(), canon)
		}
		p := flt.Plan()
		for _, props := range sessionsFor(flt.root, len(s)) {
			// The semantics the package documents, evaluated without CEL: the
			// compiled filter, afresh or from its canonical text, must agree.
			want := evalRef(flt.root, props)
			if got := flt.Matches(props); got != want {
				t.Fatalf("filter %q (CEL %s) on %v: got %v, want %v", s, flt.CEL(), props, got, want)
			}
			if again.Matches(props) != want || fromCanon.Matches(props) != want {
				t.Fatalf("filter %q, canonical %q on %v: results differ, want %v", s, canon, props, want)
			}
			// A plan's candidates include every match; an exact plan's are the matches.
			if cand := planSelects(p, props); (want && !cand) || (p.Exact && cand != want) {
				t.Fatalf("filter %q on %v: plan %+v selects it: %v, filter matches: %v", s, props, p, cand, want)
			}
		}
	})
}

// evalRef evaluates a parsed filter over props as the package documentation
// states its semantics, without CEL.
func evalRef(n node, props map[string]string) bool {
	switch n := n.(type) {
	case allNode:
		return true
	case notNode:
		return !evalRef(n.x, props)
	case andNode:
		for _, x := range n.xs {
			if !evalRef(x, props) {
				return false
			}
		}
		return true
	case orNode:
		for _, x := range n.xs {
			if evalRef(x, props) {
				return true
			}
		}
		return false
	case cmpNode:
		v, ok := props[n.key]
		return (ok && v == n.value) != n.ne
	case inNode:
		v, ok := props[n.key]
		return ok && slices.Contains(n.values, v)
	case hasNode:
		_, ok := props[n.key]
		return ok
	case rolesNode:
		roles, err := StringToRoles(props[RolesKey])
		if err != nil {
			return false
		}
		for _, r := range n.roles {
			if !slices.Contains(roles, r) {
				return false
			}
		}
		return true
	}
	panic(fmt.Sprintf("evalRef: unexpected node %T", n))
}

// planSelects reports whether an index following p would select a session with
// props as a candidate.
func planSelects(p Plan, props map[string]string) bool {
	if p.Full {
		return true
	}
	roles, err := StringToRoles(props[RolesKey])
	if err != nil {
		roles = nil
	}
	for _, term := range p.Terms {
		all := true
		for _, a := range term {
			v, ok := props[a.Key]
			switch {
			case a.Role:
				all = slices.Contains(roles, a.Values[0])
			case a.Values == nil:
				all = ok
			default:
				all = ok && slices.Contains(a.Values, v)
			}
			if !all {
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// sessionsFor generates sessions that use the keys, values and roles
// mentioned by the filter n, so that its clauses are exercised both ways.
func sessionsFor(n node, seed int) []map[string]string {
	var keys, values, roles []string
	var walk func(node)
	walk = func(n node) {
		switch n := n.(type) {
		case notNode:
			walk(n.x)
		case andNode:
			for _, x := range n.xs {
				walk(x)
			}
		case orNode:
			for _, x := range n.xs {
				walk(x)
			}
		case cmpNode:
			keys, values = append(keys, n.key), append(values, n.value)
		case inNode:
			keys, values = append(keys, n.key), append(values, n.values...)
		case hasNode:
			keys = append(keys, n.key)
		case rolesNode:
			roles = append(roles, n.roles...)
		}
	}
	walk(n)
	values = append(values, "", "other")
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	sessions := []map[string]string{{}}
	for range 8 {
		props := map[string]string{}
		for _, k := range keys {
			if r.IntN(4) > 0 {
				props[k] = values[r.IntN(len(values))]
			}
		}
		var rs []string
		for _, role := range roles {
			if r.IntN(3) > 0 {
				rs = append(rs, role)
			}
		}
		if _, set := props[RolesKey]; !set {
			props[RolesKey] = RolesToString(rs)
		}
		sessions = append(sessions, props)
	}
	return sessions
}
