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
	// may skip confirming each with Matches: the filter is "all", or one
	// equality, "in" or "has" clause (or a double negation of one).
	Exact bool `json:"exact"`
}

// MaxPlanTerms caps the number of terms a Plan distributes "and" over "or"
// into. Beyond it the planner keeps only one side of the conjunction.
const MaxPlanTerms = 16

// full is the plan that selects every session.
var full = Plan{Full: true}

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
	p := plan(f.root, false)
	p.Exact = exact(f.root, false)
	return p
}

// exact reports whether n (or "not n" when negated) selects exactly the sessions
// its plan's atoms select.
func exact(n node, negated bool) bool {
	switch n := n.(type) {
	case allNode:
		return !negated
	case notNode:
		return exact(n.x, !negated)
	case cmpNode:
		return negated == n.ne
	case inNode, hasNode:
		return !negated
	}
	return false
}

// plan returns the plan for n, or for "not n" when negated.
func plan(n node, negated bool) Plan {
	switch n := n.(type) {
	case allNode:
		if negated {
			return Plan{}
		}
		return full
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
			return single(Atom{Key: n.key, Values: []string{n.value}})
		}
	case inNode:
		if !negated {
			values := slices.Clone(n.values)
			slices.Sort(values)
			return single(Atom{Key: n.key, Values: slices.Compact(values)})
		}
	case hasNode:
		if !negated {
			return single(Atom{Key: n.key})
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

// single is the plan of one atom.
func single(a Atom) Plan { return Plan{Terms: [][]Atom{{a}}} }

// planOr plans the disjunction of xs (each negated if negated).
func planOr(xs []node, negated bool) Plan {
	var out Plan
	for _, x := range xs {
		p := plan(x, negated)
		if p.Full {
			return full
		}
		out.Terms = append(out.Terms, p.Terms...)
	}
	return out
}

// planAnd plans the conjunction of xs (each negated if negated). The atoms of
// operands with one term, which only add atoms to every term, are collected in
// common and added once, when another operand is distributed or at the end:
// adding them one operand at a time copied every term for each clause, so a
// conjunction of n clauses cost O(n²) time and memory (a 16 KiB filter, over a
// second and 1.5 GB on every send).
func planAnd(xs []node, negated bool) Plan {
	out := full
	var common []Atom // atoms still to be added to every term of out
	for _, x := range xs {
		p := plan(x, negated)
		switch {
		case p.Full:
			continue // not indexable: drop it, CEL confirms later
		case out.Full:
			out = p
		case len(p.Terms) == 1 && len(out.Terms) > 0 && len(out.Terms) <= MaxPlanTerms:
			common = append(common, p.Terms[0]...)
		case len(out.Terms)*len(p.Terms) <= MaxPlanTerms:
			out = product(withAtoms(out, common), p)
			common = nil
		case moreSelective(p, out, len(common)):
			out, common = p, nil
		}
	}
	return withAtoms(out, common)
}

// withAtoms returns p with atoms added to each of its terms.
func withAtoms(p Plan, atoms []Atom) Plan {
	if len(atoms) == 0 {
		return p
	}
	terms := make([][]Atom, len(p.Terms))
	for i, t := range p.Terms {
		terms[i] = append(slices.Clip(t), atoms...)
	}
	return Plan{Terms: terms}
}

// product distributes the conjunction of a and b over their terms.
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
