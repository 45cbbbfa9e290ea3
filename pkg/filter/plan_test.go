package filter

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

func TestPlan(t *testing.T) {
	eq := func(k string, vs ...string) Atom { return Atom{Key: k, Values: vs} }
	role := func(r string) Atom { return Atom{Key: RolesKey, Values: []string{r}, Role: true} }
	terms := func(ts ...[]Atom) Plan { return Plan{Terms: ts} }
	tests := []struct {
		expr string
		want Plan
	}{
		{`a is "x"`, terms([]Atom{eq("a", "x")})},
		{`a EQ "x"`, terms([]Atom{eq("a", "x")})},
		{`a in 'y' 'x' 'y'`, terms([]Atom{eq("a", "x", "y")})},
		{`has a`, terms([]Atom{{Key: "a"}})},
		{`hasRoles ["r1" "r2"]`, terms([]Atom{role("r1"), role("r2")})},
		{`$Roles eq '"admin","client"'`, terms([]Atom{eq("$Roles", `"admin","client"`)})},
		{`all`, full},
		{`a ne "x"`, full},
		{`not a is "x"`, full},
		{`not has a`, full},
		{`not hasRoles ["r"]`, full},
		{`not all`, Plan{}},
		{`not all and a is "x"`, Plan{}},
		{`not all or a is "x"`, terms([]Atom{eq("a", "x")})},
		{`not not a is "x"`, terms([]Atom{eq("a", "x")})},
		{`not a ne "x"`, terms([]Atom{eq("a", "x")})},
		{`a is "x" and b ne "y"`, terms([]Atom{eq("a", "x")})},
		{`a ne "x" and all`, full},
		{`a is "x" and b is "y"`, terms([]Atom{eq("a", "x"), eq("b", "y")})},
		{`a is "x" or b is "y"`, terms([]Atom{eq("a", "x")}, []Atom{eq("b", "y")})},
		{`a is "x" or b ne "y"`, full},
		{`(a is "x" or b is "y") and c is "z"`, terms([]Atom{eq("a", "x"), eq("c", "z")}, []Atom{eq("b", "y"), eq("c", "z")})},
		{`not (a ne "x" or b ne "y")`, terms([]Atom{eq("a", "x"), eq("b", "y")})},
		{`not (a ne "x" and b ne "y")`, terms([]Atom{eq("a", "x")}, []Atom{eq("b", "y")})},
		// 5 x 4 = 20 terms exceeds MaxPlanTerms: keep the side with fewer terms.
		{`(a is "1" or a is "2" or a is "3" or a is "4" or a is "5") and (b is "1" or b is "2" or b is "3" or b is "4")`,
			terms([]Atom{eq("b", "1")}, []Atom{eq("b", "2")}, []Atom{eq("b", "3")}, []Atom{eq("b", "4")})},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): got error %v, want nil", tt.expr, err)
			}
			got := f.Plan()
			got.Exact = false // TestPlanExact checks it
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Plan(): got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Domains for random filters and sessions, kept small so that filters often
// match.
var (
	genKeys   = []string{"a", "b", "$C", "d"}
	genValues = []string{"x", "y", "", `q"\`}
	genRoles  = []string{"r1", "r2", "trading desk", `a","x`, "x"}
)

// filterGen writes random filters in varied but valid syntax.
type filterGen struct{ r *rand.Rand }

func (g filterGen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

// keyword returns kw in a random letter case.
func (g filterGen) keyword(kw string) string {
	switch g.r.IntN(3) {
	case 0:
		return strings.ToUpper(kw)
	case 1:
		return strings.ToLower(kw)
	}
	return kw
}

// str quotes s with a random quote character.
func (g filterGen) str(s string) string {
	q := `"`
	if g.r.IntN(2) == 0 {
		q = `'`
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	return q + strings.ReplaceAll(s, q, `\`+q) + q
}

// list writes 1-3 strings from domain as a bracketed, braced or bare list.
func (g filterGen) list(domain []string) string {
	items := make([]string, 1+g.r.IntN(3))
	for i := range items {
		items[i] = g.str(g.pick(domain))
	}
	sep := []string{" ", ",", ", "}[g.r.IntN(3)]
	body := strings.Join(items, sep)
	switch g.r.IntN(3) {
	case 0:
		return "[" + body + "]"
	case 1:
		return "{" + body + "}"
	}
	return body
}

func (g filterGen) filter(depth int) string {
	n := 6
	if depth > 0 {
		n = 10
	}
	switch g.r.IntN(n) {
	case 0, 1:
		op := g.pick([]string{"is", "eq", "ne", "is"})
		return g.pick(genKeys) + " " + g.keyword(op) + " " + g.str(g.pick(genValues))
	case 2:
		// A bare list is parenthesised so that a following string cannot
		// extend it.
		return "(" + g.pick(genKeys) + " " + g.keyword("in") + " " + g.list(genValues) + ")"
	case 3:
		return g.keyword("has") + " " + g.pick(genKeys)
	case 4:
		return "(" + g.keyword("hasRoles") + " " + g.list(genRoles) + ")"
	case 5:
		if g.r.IntN(4) == 0 {
			return g.keyword("all")
		}
		return g.keyword("has") + " " + g.pick(genKeys)
	case 6:
		return g.keyword("not") + " " + g.filter(depth-1)
	case 7, 8:
		return g.filter(depth-1) + " " + g.keyword("and") + " " + g.filter(depth-1)
	default:
		return "(" + g.filter(depth-1) + " " + g.keyword("or") + " " + g.filter(depth-1) + ")"
	}
}

// session returns random session properties over the generator domains.
func (g filterGen) session() map[string]string {
	props := map[string]string{}
	for _, k := range genKeys {
		if g.r.IntN(3) > 0 {
			props[k] = g.pick(genValues)
		}
	}
	switch g.r.IntN(6) {
	case 0: // no $Roles
	case 1:
		props[RolesKey] = `"r1`
	default:
		var roles []string
		for _, r := range genRoles {
			if g.r.IntN(2) == 0 {
				roles = append(roles, r)
			}
		}
		props[RolesKey] = RolesToString(roles)
	}
	return props
}

// index is a tiny inverted index like the messaging service's.
type index struct {
	all   []int
	eq    map[string]map[string][]int // key -> value -> sessions
	has   map[string][]int            // key -> sessions
	roles map[string][]int            // role -> sessions
}

func newIndex(sessions []map[string]string) *index {
	ix := &index{eq: map[string]map[string][]int{}, has: map[string][]int{}, roles: map[string][]int{}}
	for i, props := range sessions {
		ix.all = append(ix.all, i)
		for k, v := range props {
			if ix.eq[k] == nil {
				ix.eq[k] = map[string][]int{}
			}
			ix.eq[k][v] = append(ix.eq[k][v], i)
			ix.has[k] = append(ix.has[k], i)
		}
		roles, _ := StringToRoles(props[RolesKey])
		for _, r := range roles {
			ix.roles[r] = append(ix.roles[r], i)
		}
	}
	return ix
}

// candidates evaluates a plan against the index.
func (ix *index) candidates(p Plan) map[int]bool {
	out := map[int]bool{}
	if p.Full {
		for _, i := range ix.all {
			out[i] = true
		}
		return out
	}
	for _, term := range p.Terms {
		var set map[int]bool
		for _, a := range term {
			found := map[int]bool{}
			switch {
			case a.Role:
				for _, i := range ix.roles[a.Values[0]] {
					found[i] = true
				}
			case a.Values == nil:
				for _, i := range ix.has[a.Key] {
					found[i] = true
				}
			default:
				for _, v := range a.Values {
					for _, i := range ix.eq[a.Key][v] {
						found[i] = true
					}
				}
			}
			if set == nil {
				set = found
				continue
			}
			for i := range set {
				if !found[i] {
					delete(set, i)
				}
			}
		}
		for i := range set {
			out[i] = true
		}
	}
	return out
}

// TestPlanProperty checks, for random filters over random sessions, that a
// plan's candidates include every matching session, and that confirming the
// candidates with Matches gives exactly the brute-force matches.
func TestPlanProperty(t *testing.T) {
	g := filterGen{r: rand.New(rand.NewPCG(1, 2))}
	sessions := make([]map[string]string, 3000)
	for i := range sessions {
		sessions[i] = g.session()
	}
	ix := newIndex(sessions)
	const filters = 400
	narrowed, matched, exacts := 0, 0, 0
	for range filters {
		expr := g.filter(3)
		f, err := Compile(expr)
		if err != nil {
			t.Fatalf("Compile(%q): got error %v, want nil", expr, err)
		}
		p := f.Plan()
		cands := ix.candidates(p)
		if len(cands) < len(sessions) {
			narrowed++
		}
		var brute, confirmed []int
		for i, props := range sessions {
			m := f.Matches(props)
			if m {
				brute = append(brute, i)
				if !cands[i] {
					t.Fatalf("filter %q: session %d %v matches but is not a candidate of plan %+v", expr, i, props, p)
				}
			}
			if cands[i] && m {
				confirmed = append(confirmed, i)
			}
			if p.Exact && cands[i] && !m {
				t.Fatalf("filter %q: plan %+v is exact, but its candidate %d %v does not match", expr, p, i, props)
			}
		}
		if p.Exact {
			exacts++
		}
		if fmt.Sprint(confirmed) != fmt.Sprint(brute) {
			t.Fatalf("filter %q: confirmed candidates %v, want %v", expr, confirmed, brute)
		}
		if len(brute) > 0 {
			matched++
		}
	}
	// Guard against a degenerate generator or planner making the test vacuous.
	if narrowed < filters/4 || matched < filters/4 || exacts < filters/20 {
		t.Errorf("narrowed %d, matched %d and exact %d of %d filters, want at least %d, %d and %d", narrowed, matched, exacts, filters, filters/4, filters/4, filters/20)
	}
	t.Logf("plans narrowed %d of %d filters, %d of them exact; %d filters matched something", narrowed, filters, exacts, matched)
}

func TestPlanExact(t *testing.T) {
	cases := map[string]bool{
		`all`:                      true,
		`ALL`:                      true,
		`Department is "Sales"`:    true,
		`Department EQ 'it\'s'`:    true,
		`has Department`:           true,
		`Department in ["a", "b"]`: true,
		`not (Department ne "a")`:  true,
		`(Department is "a")`:      true,
		`$Roles eq '"admin"'`:      true,
		`hasRoles ["admin"]`:       false,
		`Department ne "a"`:        false,
		`not has Department`:       false,
		`not all`:                  false,
		// Unions and whole intersections of exact clauses are exact.
		`Department is "a" and all`:                           true,
		`Department is "a" or has b`:                          true,
		`a is "1" or b is "2" or c in ["3", "4"]`:             true,
		`a is "1" and b is "2"`:                               true,
		`(a is "1" or a is "2") and (b is "1" or b in ["2"])`: true,
		`not (a ne "1" or b ne "2")`:                          true,
		`not (a ne "1" and not has b)`:                        true,
		`a is "1" or all`:                                     true,
		// A clause CEL must confirm makes the whole inexact.
		`a is "1" and b ne "2"`:               false,
		`a is "1" or b ne "2"`:                false,
		`a is "1" or hasRoles ["x"]`:          false,
		`a is "1" and hasRoles ["x"]`:         false,
		`not (a is "1" or b is "2")`:          false,
		`(a is "1" or b ne "2") and c is "3"`: false,
		// 2^5 = 32 terms: cut to MaxPlanTerms, the rest left to CEL.
		`(a is "1" or a is "2") and (b is "1" or b is "2") and (c is "1" or c is "2") and (d is "1" or d is "2") and (e is "1" or e is "2")`: false,
	}
	for text, want := range cases {
		f, err := Compile(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if got := f.Plan().Exact; got != want {
			t.Errorf("Plan(%s).Exact: got %v, want %v", text, got, want)
		}
	}
}

// TestPlanLinearInLength plans conjunctions of as many clauses as MaxLength allows:
// Plan runs on every send by filter, so its work must stay proportional to the plan
// it returns. Distributing the conjunction one clause at a time copied every term for
// each clause: a 16 KiB filter took over a second and allocated hundreds of MB. Nested
// conjunctions each copied every term once more: 49 deep, over 16 terms of 1,600
// atoms, 83 MB on every send.
func TestPlanLinearInLength(t *testing.T) {
	// conj is head, clause as many times as fit with tail, then tail.
	conj := func(head, clause, tail string) string {
		var b strings.Builder
		b.WriteString(head)
		for b.Len()+len(clause)+len(tail) <= MaxLength {
			b.WriteString(clause)
		}
		return b.String() + tail
	}
	or16 := "(" + strings.Join(func() []string {
		xs := make([]string, MaxPlanTerms)
		for i := range xs {
			xs[i] = fmt.Sprintf("has k%d", i)
		}
		return xs
	}(), " or ") + ")"
	// nested is the or of 16 clauses and a chain of clauses, in levels nesting it as
	// deep as MaxDepth allows.
	nested := func(level string) string {
		levels := strings.Repeat(level, (MaxDepth-1)/strings.Count(level, ")"))
		return conj(strings.Repeat("(", strings.Count(levels, ")"))+or16, " and has a", levels)
	}
	tests := []struct{ name, expr string }{
		{"and chain", conj("has a", " and has a", "")},
		{"or then and chain", conj(or16, " and has a", "")},
		{"negated or chain", conj("not (a ne 'x'", " or b ne 'y'", ")")},
		{"nested and", nested(") and has b")},
		{"nested and over or", nested(") or not all) and has b")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile: got error %v, want nil", err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			p := f.Plan()
			runtime.ReadMemStats(&after)
			atoms := 0
			for _, term := range p.Terms {
				atoms += len(term)
			}
			if atoms < MaxLength/20 {
				t.Fatalf("plan has %d atoms in %d terms: the filter is not the conjunction meant", atoms, len(p.Terms))
			}
			// The atoms returned, their Values, and the slices grown on the way.
			limit := 8*uint64(atoms)*uint64(unsafe.Sizeof(Atom{})+16) + 1<<20
			if got := after.TotalAlloc - before.TotalAlloc; got > limit {
				t.Errorf("Plan of %d bytes (%d terms, %d atoms) allocated %d KB, want at most %d KB", len(tt.expr), len(p.Terms), atoms, got>>10, limit>>10)
			}
		})
	}
}
