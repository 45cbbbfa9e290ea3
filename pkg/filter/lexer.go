package filter

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// tokenKind classifies a lexical token.
type tokenKind int

const (
	tokEOF      tokenKind = iota
	tokWord               // a key or a keyword
	tokString             // a quoted string; text holds the unescaped value
	tokLParen             // (
	tokRParen             // )
	tokLBracket           // [
	tokRBracket           // ]
	tokLBrace             // {
	tokRBrace             // }
	tokComma              // ,
)

// token is one lexical token of a filter.
type token struct {
	kind tokenKind
	pos  int    // byte offset of the token's first byte in the input
	text string // the word, the unescaped string value, or the punctuation
}

// describe renders the token for a syntax error message.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of input"
	case tokString:
		return "string " + strconv.Quote(t.text)
	default:
		return strconv.Quote(t.text)
	}
}

// keyword reports whether the token is the keyword kw, ignoring case.
func (t token) keyword(kw string) bool {
	return t.kind == tokWord && strings.EqualFold(t.text, kw)
}

// keywords are the reserved words of the filter language. They are matched
// without regard to case and are never accepted as property keys.
var keywords = [...]string{"all", "and", "eq", "has", "hasRoles", "in", "is", "ne", "not", "or"}

// isKeyword reports whether word is a reserved word in any letter case.
func isKeyword(word string) bool {
	for _, kw := range keywords {
		if strings.EqualFold(word, kw) {
			return true
		}
	}
	return false
}

// isSpace reports whether r separates tokens: the four white-space characters
// seed 002 forbids in property keys. Any other rune, a no-break space or \v
// included, can be part of a key, so that every key the registry accepts is one
// word: with every Unicode space separating tokens, the key "not", no-break space,
// "b" read as "not b", and a key ending in one named the key without it.
func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' }

// isKeyRune reports whether r may appear in an unquoted key.
func isKeyRune(r rune) bool {
	switch r {
	case '"', '\'', '(', ')', '[', ']', '{', '}', ',':
		return false
	}
	return !isSpace(r)
}

// lex splits input into tokens, ending with a tokEOF token.
func lex(input string) ([]token, error) {
	if !utf8.ValidString(input) {
		pos := 0
		for pos < len(input) {
			r, n := utf8.DecodeRuneInString(input[pos:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			pos += n
		}
		return nil, &SyntaxError{Pos: pos, Expected: "valid UTF-8", Found: "invalid byte"}
	}
	var toks []token
	i := 0
	for i < len(input) {
		r, n := utf8.DecodeRuneInString(input[i:])
		switch {
		case isSpace(r):
			i += n
		case r == '"' || r == '\'':
			tok, next, err := lexString(input, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, tok)
			i = next
		case !isKeyRune(r):
			toks = append(toks, token{kind: punctuation(r), pos: i, text: string(r)})
			i += n
		default:
			start := i
			for i < len(input) {
				r, n := utf8.DecodeRuneInString(input[i:])
				if !isKeyRune(r) {
					break
				}
				i += n
			}
			toks = append(toks, token{kind: tokWord, pos: start, text: input[start:i]})
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(input)}), nil
}

// punctuation returns the kind of a single-character token.
func punctuation(r rune) tokenKind {
	switch r {
	case '(':
		return tokLParen
	case ')':
		return tokRParen
	case '[':
		return tokLBracket
	case ']':
		return tokRBracket
	case '{':
		return tokLBrace
	case '}':
		return tokRBrace
	default:
		return tokComma
	}
}

// lexString scans the quoted string starting at input[start], returning the
// token and the offset just past the closing quote.
func lexString(input string, start int) (token, int, error) {
	quote := input[start]
	var b strings.Builder
	i := start + 1
	for i < len(input) {
		c := input[i]
		switch c {
		case quote:
			return token{kind: tokString, pos: start, text: b.String()}, i + 1, nil
		case '\\':
			if i+1 >= len(input) {
				return token{}, 0, &SyntaxError{Pos: start, Expected: "closing " + string(quote), Found: "end of input"}
			}
			switch e := input[i+1]; e {
			case '"', '\'', '\\':
				b.WriteByte(e)
				i += 2
			default:
				r, _ := utf8.DecodeRuneInString(input[i+1:])
				return token{}, 0, &SyntaxError{Pos: i, Expected: `\", \' or \\ after backslash`, Found: strconv.Quote(`\` + string(r))}
			}
		default:
			b.WriteByte(c)
			i++
		}
	}
	return token{}, 0, &SyntaxError{Pos: start, Expected: "closing " + string(quote), Found: "end of input"}
}
