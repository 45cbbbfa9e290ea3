package filter

import "slices"

// Atom is one index lookup.
type Atom struct {
	Key    string   `json:"key"`              // property key; for a role atom, "$Roles"
	Values []string `json:"values,omitempty"` // equality: sessions whose Key equals any of Values; nil: sessions that have Key (has)
	Role   bool     `json:"role,omitempty"`   // Role atom: sessions having the role Values[0]
}

// Plan selects candidates: the union over Terms of the intersection of each
// term's atoms. Full means the index cannot narrow the set: every session is
// a candidate. A Plan that is not Full and has no Terms selects no session.
type Plan struct {
	Full  bool     `json:"full"`
	Terms [][]Atom `json:"terms"`
	// Exact means the candidates are exactly the matching sessions, so a caller
	// may skip confirming each with Matches: the filter is "all", an equality,
	// "in" or "has" clause, or "and", "or" and "not" of exact filters whose
	// conjunctions were distributed whole (none dropped an operand or was cut to
	// MaxPlanTerms).
	Exact bool `json:"exact"`
}

// MaxPlanTerms caps the number of terms a Plan distributes "and" over "or"
// into. Beyond it the planner keeps only one side of the conjunction.
const MaxPlanTerms = 16

// full is the plan that selects every session, as candidates; every is the plan of
// "all", whose candidates are the matches.
var (
	full  = Plan{Full: true}
	every = Plan{Full: true, Exact: true}
)

// Plan returns an index plan whose candidates are always a superset of the
// sessions f matches. The caller owns the returned slices.
//
// The plan is built from the filter in disjunctive normal form. Equality,
// "in", "has" and "hasRoles" clauses become atoms. "not" is pushed inwards
// (De Morgan), so "not not" and "ne" under "not" stay indexable; a negated
// equality, "has" or "hasRoles" and "all" are not indexable, and "not all"
// selects nothing. A conjunction drops its non-indexable (Full) operands and
// is Full only when none is left. It then distributes over its operands'
// terms while the product stays within MaxPlanTerms; past that it keeps the
// operand that looks most selective: fewest terms, then most atoms per term.
// A disjunction is Full if any operand is Full, else the union of their
// terms. A filter from CompileCEL always has a Full plan.
func (f *Filter) Plan() Plan {
	if f.root == nil {
		return full
	}
	return plan(f.root, false)
}

// plan returns the plan for n, or for "not n" when negated. Its Exact is set as
// it is built: an equality, "in" or "has" atom selects exactly its matches, and
// so do unions and fully distributed intersections of exact plans. "hasRoles" is
// left to CEL, as is "not all", which selects nothing anyway.
func plan(n node, negated bool) Plan {
	switch n := n.(type) {
	case allNode:
		if negated {
			return Plan{}
		}
		return every
	case notNode:
		return plan(n.x, !negated)
	case andNode:
		if negated {
			return planOr(n.xs, true)
		}
		return planAnd(n.xs, false)
	case orNode:
		if negated {
			return planAnd(n.xs, true)
		}
		return planOr(n.xs, false)
	case cmpNode:
		if negated == n.ne {
			return exactly(Atom{Key: n.key, Values: []string{n.value}})
		}
	case inNode:
		if !negated {
			values := slices.Clone(n.values)
			slices.Sort(values)
			return exactly(Atom{Key: n.key, Values: slices.Compact(values)})
		}
	case hasNode:
		if !negated {
			return exactly(Atom{Key: n.key})
		}
	case rolesNode:
		if !negated {
			term := make([]Atom, 0, len(n.roles))
			for _, r := range n.roles {
				term = append(term, Atom{Key: RolesKey, Values: []string{r}, Role: true})
			}
			return Plan{Terms: [][]Atom{term}}
		}
	}
	return full
}

// exactly is the plan of one atom that selects exactly its matches.
func exactly(a Atom) Plan { return Plan{Terms: [][]Atom{{a}}, Exact: true} }

// planOr plans the disjunction of xs (each negated if negated). The union is exact
// when every operand is; an operand that selects every session makes it so, and
// exact when that operand is ("all").
func planOr(xs []node, negated bool) Plan {
	out := Plan{Exact: true}
	for _, x := range xs {
		p := plan(x, negated)
		if p.Full {
			return p
		}
		out.Terms = append(out.Terms, p.Terms...)
		out.Exact = out.Exact && p.Exact
	}
	return out
}

// planAnd plans the conjunction of xs (each negated if negated). The atoms of
// operands with one term, which only add atoms to every term, are collected in
// common and added once, when another operand is distributed or at the end:
// adding them one operand at a time copied every term for each clause, so a
// conjunction of n clauses cost O(n²) time and memory (a 16 KiB filter, over a
// second and 1.5 GB on every send).
//
// The intersection is exact when every operand is and none was left out: an
// operand selecting every session exactly ("all") leaves out nothing, one the
// index cannot narrow or one dropped for MaxPlanTerms leaves CEL to confirm.
func planAnd(xs []node, negated bool) Plan {
	out := every
	var common []Atom // atoms still to be added to every term of out
	for _, x := range xs {
		p := plan(x, negated)
		exact := out.Exact && p.Exact
		switch {
		case p.Full:
			// not indexable (or "all"): drop it, CEL confirms later
		case out.Full:
			out = p
		case len(p.Terms) == 1 && len(out.Terms) > 0 && len(out.Terms) <= MaxPlanTerms:
			common = append(common, p.Terms[0]...)
		case len(out.Terms)*len(p.Terms) <= MaxPlanTerms:
			out = product(withAtoms(out, common), p)
			common = nil
		case moreSelective(p, out, len(common)):
			out, common = p, nil
			exact = false
		default:
			exact = false
		}
		out.Exact = exact
	}
	return withAtoms(out, common)
}

// withAtoms returns p with atoms added to each of its terms, in place: every term
// of a plan being built is its own array, used by that plan alone (exactly and
// hasRoles make new ones, product copies, planOr and planAnd pass them on), so
// appending grows it as a slice grows. Copying each term first made a conjunction
// nested n deep copy every term n times: a 16 KiB filter of 49 nested "and" over
// 16 terms of 1,600 atoms allocated 83 MB and took 80 ms on every send.
func withAtoms(p Plan, atoms []Atom) Plan {
	for i := range p.Terms {
		p.Terms[i] = append(p.Terms[i], atoms...)
	}
	return p
}

// product distributes the conjunction of a and b over their terms. Exact is the
// caller's to set.
func product(a, b Plan) Plan {
	if len(a.Terms) == 0 || len(b.Terms) == 0 {
		return Plan{} // one side selects nothing
	}
	terms := make([][]Atom, 0, len(a.Terms)*len(b.Terms))
	for _, ta := range a.Terms {
		for _, tb := range b.Terms {
			terms = append(terms, append(slices.Clip(ta), tb...))
		}
	}
	return Plan{Terms: terms}
}

// moreSelective guesses, without statistics, whether a narrows the candidate
// set more than b with bExtra more atoms in each of its terms: fewer terms (a
// smaller union) first, then more atoms in its smallest term (a tighter
// intersection).
func moreSelective(a, b Plan, bExtra int) bool {
	if len(a.Terms) != len(b.Terms) {
		return len(a.Terms) < len(b.Terms)
	}
	return minAtoms(a) > minAtoms(b)+bExtra
}

func minAtoms(p Plan) int {
	m := -1
	for _, t := range p.Terms {
		if m < 0 || len(t) < m {
			m = len(t)
		}
	}
	return m
}
