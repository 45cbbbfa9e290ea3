package filter

import "fmt"

// MaxLength is the longest filter text, in bytes, that Compile accepts.
const MaxLength = 16 << 10

// MaxDepth is the deepest nesting of parentheses and "not" that Compile
// accepts.
const MaxDepth = 50

// SyntaxError reports a filter that does not follow the grammar.
type SyntaxError struct {
	Pos      int    // byte offset (0-based) in the filter text where the problem was found
	Expected string // what the grammar allows at Pos
	Found    string // what was there instead
}

// Error implements the error interface.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("filter: syntax error at offset %d: expected %s, found %s", e.Pos, e.Expected, e.Found)
}

// What the parser expects at various points, used in syntax errors.
const (
	expClause   = `a clause (property key, "(", "not", "has", "hasRoles" or "all")`
	expOperator = `"is", "eq", "ne" or "in"`
	expKey      = "a property key"
	expString   = "a quoted string"
	expAndOr    = `"and", "or" or end of input`
	expRParen   = `"and", "or" or ")"`
)

// parser is a recursive-descent parser over the tokens of one filter.
type parser struct {
	toks  []token
	i     int
	depth int
}

// parse parses a complete filter.
func parse(input string) (node, error) {
	if len(input) > MaxLength {
		return nil, &SyntaxError{Pos: MaxLength, Expected: fmt.Sprintf("at most %d bytes", MaxLength), Found: fmt.Sprintf("%d bytes", len(input))}
	}
	toks, err := lex(input)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, p.errorf(t, expAndOr)
	}
	return n, nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *parser) errorf(t token, expected string) error {
	return &SyntaxError{Pos: t.pos, Expected: expected, Found: t.describe()}
}

// or parses: and { "or" and }.
func (p *parser) or() (node, error) {
	first, err := p.and()
	if err != nil {
		return nil, err
	}
	xs := []node{first}
	for p.peek().keyword("or") {
		p.next()
		x, err := p.and()
		if err != nil {
			return nil, err
		}
		xs = append(xs, x)
	}
	if len(xs) == 1 {
		return first, nil
	}
	return orNode{xs: xs}, nil
}

// and parses: unary { "and" unary }.
func (p *parser) and() (node, error) {
	first, err := p.unary()
	if err != nil {
		return nil, err
	}
	xs := []node{first}
	for p.peek().keyword("and") {
		p.next()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		xs = append(xs, x)
	}
	if len(xs) == 1 {
		return first, nil
	}
	return andNode{xs: xs}, nil
}

// enter records one more level of nesting, failing beyond MaxDepth.
func (p *parser) enter(t token) error {
	p.depth++
	if p.depth > MaxDepth {
		return &SyntaxError{Pos: t.pos, Expected: fmt.Sprintf("at most %d levels of nesting", MaxDepth), Found: t.describe()}
	}
	return nil
}

// unary parses: "not" unary | primary.
func (p *parser) unary() (node, error) {
	t := p.peek()
	if !t.keyword("not") {
		return p.primary()
	}
	p.next()
	if err := p.enter(t); err != nil {
		return nil, err
	}
	x, err := p.unary()
	if err != nil {
		return nil, err
	}
	p.depth--
	return notNode{x: x}, nil
}

// primary parses a parenthesised filter or a single clause.
func (p *parser) primary() (node, error) {
	t := p.next()
	switch {
	case t.kind == tokLParen:
		if err := p.enter(t); err != nil {
			return nil, err
		}
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tokRParen {
			return nil, p.errorf(c, expRParen)
		}
		p.depth--
		return x, nil
	case t.keyword("all"):
		return allNode{}, nil
	case t.keyword("has"):
		k := p.next()
		if k.kind != tokWord || isKeyword(k.text) {
			return nil, p.errorf(k, expKey)
		}
		return hasNode{key: k.text}, nil
	case t.keyword("hasRoles"):
		roles, err := p.list()
		if err != nil {
			return nil, err
		}
		return rolesNode{roles: roles}, nil
	case t.kind != tokWord || isKeyword(t.text):
		return nil, p.errorf(t, expClause)
	}
	op := p.next()
	switch {
	case op.keyword("is"), op.keyword("eq"), op.keyword("ne"):
		v := p.next()
		if v.kind != tokString {
			return nil, p.errorf(v, expString)
		}
		return cmpNode{key: t.text, value: v.text, ne: op.keyword("ne")}, nil
	case op.keyword("in"):
		values, err := p.list()
		if err != nil {
			return nil, err
		}
		return inNode{key: t.text, values: values}, nil
	}
	return nil, p.errorf(op, expOperator)
}

// list parses: "[" items "]" | "{" items "}" | items, where
// items = string { [","] string }.
func (p *parser) list() ([]string, error) {
	closer := tokEOF // none: a bare list
	var closeText string
	switch p.peek().kind {
	case tokLBracket:
		closer, closeText = tokRBracket, `"]"`
		p.next()
	case tokLBrace:
		closer, closeText = tokRBrace, `"}"`
		p.next()
	}
	first := p.next()
	if first.kind != tokString {
		if closer == tokEOF {
			return nil, p.errorf(first, `a quoted string, "[" or "{"`)
		}
		return nil, p.errorf(first, expString)
	}
	values := []string{first.text}
	for {
		t := p.peek()
		switch {
		case t.kind == tokString:
			p.next()
			values = append(values, t.text)
			continue
		case t.kind == tokComma:
			p.next()
			v := p.next()
			if v.kind != tokString {
				return nil, p.errorf(v, expString)
			}
			values = append(values, v.text)
			continue
		case closer == tokEOF:
			return values, nil
		case t.kind == closer:
			p.next()
			return values, nil
		}
		return nil, p.errorf(t, `a quoted string, "," or `+closeText)
	}
}
