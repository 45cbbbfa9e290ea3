package endpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// checkNames walks the JSON value data, already decoded into a value of type t, and
// refuses what encoding/json lets through: a member whose name matches a field only
// in another letter case ("Path" fills path; the schemas, and every other client,
// see an unknown property), a member named twice in one object (encoding/json
// keeps the last, other parsers the first, so two readers of one request would act
// on different values), null where Go has no nil (see nullable), and an empty
// string in a field tagged roster:"nonempty". It runs on every request, so it scans
// the bytes itself, allocating nothing for names without escapes: json.Decoder's
// tokens cost more than the decoding it checks.
func checkNames(data []byte, t reflect.Type) error {
	s := nameScanner{data: data}
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem() // the request itself: a body of null is no request
	}
	if s.space(); !nullable(t) && s.null() {
		return errors.New("the body is null; send an object")
	}
	return s.value(t)
}

// nullable reports whether JSON null is a value of t: where Go has nil (a pointer,
// map, slice or interface) null reads as absent, and a type with its own
// UnmarshalJSON decides for itself. Elsewhere encoding/json leaves the zero value,
// so that null would silently read as "", 0 or false, which the schemas refuse.
func nullable(t reflect.Type) bool {
	if t == nil {
		return true
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return true
	}
	return reflect.PointerTo(t).Implements(unmarshalerType)
}

// null reports whether the value at the scanner's position is null.
func (s *nameScanner) null() bool {
	return s.i < len(s.data) && s.data[s.i] == 'n'
}

// emptyString reports whether the value at the scanner's position is "".
func (s *nameScanner) emptyString() bool {
	return s.i+1 < len(s.data) && s.data[s.i] == '"' && s.data[s.i+1] == '"'
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// nameScanner walks JSON that is known to be valid (it decoded).
type nameScanner struct {
	data []byte
	i    int
}

// value checks the value at the scanner's position, which decodes into t (nil: a
// type whose members are not fields, such as an interface or a json.Unmarshaler),
// and moves past it.
func (s *nameScanner) value(t reflect.Type) error {
	s.space()
	if s.i >= len(s.data) {
		return nil
	}
	switch s.data[s.i] {
	case '{':
		return s.object(structural(t))
	case '[':
		t = structural(t)
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		s.i++
		for s.space(); s.i < len(s.data) && s.data[s.i] != ']'; s.space() {
			if elem != nil && !nullable(elem) && s.null() {
				return errors.New("a list item is null")
			}
			if err := s.value(elem); err != nil {
				return err
			}
			s.space()
			if s.i < len(s.data) && s.data[s.i] == ',' {
				s.i++
			}
		}
		s.i++
	case '"':
		if _, err := s.str(); err != nil {
			return err
		}
	default: // a number, true, false or null
		for s.i < len(s.data) && !endsScalar(s.data[s.i]) {
			s.i++
		}
	}
	return nil
}

func endsScalar(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// manyMembers is the size beyond which an object's names are checked for repeats
// with a map rather than by comparing each with those before it.
const manyMembers = 16

func (s *nameScanner) object(t reflect.Type) error {
	fields := fieldsOf(t)
	var elem reflect.Type
	if t != nil && t.Kind() == reflect.Map {
		elem = t.Elem()
	}
	var few [manyMembers][]byte
	seen := few[:0]
	var many map[string]struct{}
	s.i++
	for s.space(); s.i < len(s.data) && s.data[s.i] != '}'; s.space() {
		name, err := s.name()
		if err != nil {
			return err
		}
		if many == nil && len(seen) == manyMembers {
			many = make(map[string]struct{}, 2*manyMembers)
			for _, n := range seen {
				many[string(n)] = struct{}{}
			}
		}
		dup := false
		if many != nil {
			_, dup = many[string(name)]
			many[string(name)] = struct{}{}
		} else {
			for _, n := range seen {
				dup = dup || bytes.Equal(n, name)
			}
			seen = append(seen, name)
		}
		if dup {
			return fmt.Errorf("member %q appears twice", name)
		}
		next, nonEmpty := elem, false
		if fields != nil {
			f, ok := fields[string(name)]
			if !ok {
				return fmt.Errorf("unknown field %q", name)
			}
			next, nonEmpty = f.typ, f.nonEmpty
		}
		s.space()
		s.i++ // the colon
		s.space()
		switch {
		case !nullable(next) && s.null():
			return fmt.Errorf("member %q is null; omit it or give it a value", name)
		case nonEmpty && s.emptyString():
			return fmt.Errorf("member %q is empty; omit it or give it a value", name)
		}
		if err := s.value(next); err != nil {
			return err
		}
		s.space()
		if s.i < len(s.data) && s.data[s.i] == ',' {
			s.i++
		}
	}
	s.i++
	return nil
}

// name returns the member name at the scanner's position, unescaped.
func (s *nameScanner) name() ([]byte, error) {
	start := s.i
	escaped, err := s.str()
	if err != nil {
		return nil, err
	}
	raw := s.data[start+1 : s.i-1]
	if !escaped {
		return raw, nil
	}
	var name string
	if err := json.Unmarshal(s.data[start:s.i], &name); err != nil {
		return nil, err
	}
	return []byte(name), nil
}

// str moves past the string at the scanner's position and reports whether it holds
// an escape. It refuses an escape of half a UTF-16 surrogate pair, which
// encoding/json reads as U+FFFD.
func (s *nameScanner) str() (escaped bool, err error) {
	for s.i++; s.i < len(s.data); s.i++ {
		switch s.data[s.i] {
		case '\\':
			escaped = true
			s.i++
			if s.i < len(s.data) && s.data[s.i] == 'u' {
				if err := s.surrogates(); err != nil {
					return escaped, err
				}
			}
		case '"':
			s.i++
			return escaped, nil
		}
	}
	return escaped, nil
}

// surrogates checks the \u escape whose u is at the scanner's position: a high
// surrogate must be followed by an escaped low one, and a low one must follow a
// high one. It leaves the scanner on the last character of what it read.
func (s *nameScanner) surrogates() error {
	r := s.hex4(s.i + 1)
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return errSurrogate
	case r < 0xD800 || r > 0xDBFF:
		s.i += 4
		return nil
	}
	// A high surrogate: the next six characters must escape a low one.
	if next := s.i + 5; next+1 < len(s.data) && s.data[next] == '\\' && s.data[next+1] == 'u' {
		if lo := s.hex4(next + 2); lo >= 0xDC00 && lo <= 0xDFFF {
			s.i = next + 5
			return nil
		}
	}
	return errSurrogate
}

// errSurrogate refuses an escape of half a UTF-16 surrogate pair.
var errSurrogate = errors.New("a string holds an escape of half a UTF-16 surrogate pair")

// hex4 returns the value of the four hexadecimal digits at data[i:], or -1.
func (s *nameScanner) hex4(i int) rune {
	if i+4 > len(s.data) {
		return -1
	}
	var r rune
	for _, c := range s.data[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}

func (s *nameScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// structural returns t without pointers, or nil when encoding/json does not fill it
// member by member (an interface, a type with its own UnmarshalJSON).
func structural(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		if t.Implements(unmarshalerType) {
			return nil
		}
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	return t
}

// field is what the scanner knows of a struct field.
type field struct {
	typ reflect.Type
	// nonEmpty: the field is tagged roster:"nonempty". Absent, it takes its zero
	// value; present, it must not be "", which encoding/json cannot tell from
	// absent. Ids are tagged: an empty one is more likely a client's unset variable
	// than a wish for the default, which (the caller's own session, for one) may act
	// on something else than was meant.
	nonEmpty bool
}

var fieldCache sync.Map // reflect.Type -> map[string]field

// fieldsOf returns the JSON names of struct type t's fields, those of embedded
// structs included; nil when t is not a struct.
func fieldsOf(t reflect.Type) map[string]field {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]field)
	}
	m := map[string]field{}
	addFields(m, t)
	fieldCache.Store(t, m)
	return m
}

func addFields(m map[string]field, t reflect.Type) {
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = field{typ: f.Type, nonEmpty: f.Tag.Get("roster") == "nonempty"}
	}
	// An embedded struct's fields are promoted unless a shallower field has the name.
	for _, et := range embedded {
		inner := map[string]field{}
		addFields(inner, et)
		for name, ft := range inner {
			if _, ok := m[name]; !ok {
				m[name] = ft
			}
		}
	}
}
