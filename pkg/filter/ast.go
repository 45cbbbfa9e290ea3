package filter

import "strings"

// node is a node of a parsed filter.
type node interface {
	// print appends the canonical text of the node to b.
	print(b *strings.Builder)
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

func (allNode) print(b *strings.Builder) { b.WriteString("all") }

func (n notNode) print(b *strings.Builder) {
	b.WriteString("not ")
	printOperand(b, n.x)
}

func (n andNode) print(b *strings.Builder) {
	for i, x := range n.xs {
		if i > 0 {
			b.WriteString(" and ")
		}
		printOperand(b, x)
	}
}

func (n orNode) print(b *strings.Builder) {
	for i, x := range n.xs {
		if i > 0 {
			b.WriteString(" or ")
		}
		printOperand(b, x)
	}
}

func (n cmpNode) print(b *strings.Builder) {
	b.WriteString(n.key)
	if n.ne {
		b.WriteString(" ne ")
	} else {
		b.WriteString(" is ")
	}
	quote(b, n.value)
}

func (n inNode) print(b *strings.Builder) {
	b.WriteString(n.key)
	b.WriteString(" in ")
	printList(b, n.values)
}

func (n hasNode) print(b *strings.Builder) {
	b.WriteString("has ")
	b.WriteString(n.key)
}

func (n rolesNode) print(b *strings.Builder) {
	b.WriteString("hasRoles ")
	printList(b, n.roles)
}

// printOperand prints x as the operand of "not", "and" or "or",
// parenthesising it when it is itself an "and" or an "or" so that the output
// never depends on precedence.
func printOperand(b *strings.Builder, x node) {
	switch x.(type) {
	case andNode, orNode:
		b.WriteByte('(')
		x.print(b)
		b.WriteByte(')')
	default:
		x.print(b)
	}
}

// printList prints values as a bracketed, comma-separated list.
func printList(b *strings.Builder, values []string) {
	b.WriteByte('[')
	for i, v := range values {
		if i > 0 {
			b.WriteString(", ")
		}
		quote(b, v)
	}
	b.WriteByte(']')
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
