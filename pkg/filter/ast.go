package filter

import "strings"

// node is a node of a parsed filter.
type node interface {
	// print appends the canonical text of the node to b; with hide, every value
	// compared with a property is written as ? (Filter.Redacted).
	print(b *strings.Builder, hide bool)
}

// allNode matches every session.
type allNode struct{}

// notNode negates x.
type notNode struct{ x node }

// andNode matches when every one of xs matches (len(xs) >= 2).
type andNode struct{ xs []node }

// orNode matches when any of xs matches (len(xs) >= 2).
type orNode struct{ xs []node }

// cmpNode is "key is value" or, when ne is set, "key ne value".
type cmpNode struct {
	key, value string
	ne         bool
}

// inNode is "key in [values]".
type inNode struct {
	key    string
	values []string
}

// hasNode is "has key".
type hasNode struct{ key string }

// rolesNode is "hasRoles [roles]".
type rolesNode struct{ roles []string }

func (allNode) print(b *strings.Builder, _ bool) { b.WriteString("all") }

func (n notNode) print(b *strings.Builder, hide bool) {
	b.WriteString("not ")
	printOperand(b, n.x, hide)
}

func (n andNode) print(b *strings.Builder, hide bool) {
	for i, x := range n.xs {
		if i > 0 {
			b.WriteString(" and ")
		}
		printOperand(b, x, hide)
	}
}

func (n orNode) print(b *strings.Builder, hide bool) {
	for i, x := range n.xs {
		if i > 0 {
			b.WriteString(" or ")
		}
		printOperand(b, x, hide)
	}
}

func (n cmpNode) print(b *strings.Builder, hide bool) {
	b.WriteString(n.key)
	if n.ne {
		b.WriteString(" ne ")
	} else {
		b.WriteString(" is ")
	}
	printValue(b, n.value, hide)
}

func (n inNode) print(b *strings.Builder, hide bool) {
	b.WriteString(n.key)
	b.WriteString(" in ")
	printList(b, n.values, hide)
}

func (n hasNode) print(b *strings.Builder, _ bool) {
	b.WriteString("has ")
	b.WriteString(n.key)
}

// print writes the roles even with hide: they are the policy's names, not values
// of a session's properties.
func (n rolesNode) print(b *strings.Builder, _ bool) {
	b.WriteString("hasRoles ")
	printList(b, n.roles, false)
}

// printOperand prints x as the operand of "not", "and" or "or",
// parenthesising it when it is itself an "and" or an "or" so that the output
// never depends on precedence.
func printOperand(b *strings.Builder, x node, hide bool) {
	switch x.(type) {
	case andNode, orNode:
		b.WriteByte('(')
		x.print(b, hide)
		b.WriteByte(')')
	default:
		x.print(b, hide)
	}
}

// printList prints values as a bracketed, comma-separated list.
func printList(b *strings.Builder, values []string, hide bool) {
	b.WriteByte('[')
	for i, v := range values {
		if i > 0 {
			b.WriteString(", ")
		}
		printValue(b, v, hide)
	}
	b.WriteByte(']')
}

// printValue writes s quoted, or ? with hide.
func printValue(b *strings.Builder, s string, hide bool) {
	if hide {
		b.WriteByte('?')
		return
	}
	quote(b, s)
}

// quote writes s as a double-quoted filter string.
func quote(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// EscapeString returns s with a backslash before every quote, single or double,
// and every backslash, so that it can be put between either quotes in a filter and
// stand for s, whatever s holds (seed 002's EscapeString): a value written into a
// filter unescaped can end the string and add clauses of its own.
func EscapeString(s string) string {
	if !strings.ContainsAny(s, `"'\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\'' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
