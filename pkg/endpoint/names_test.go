package endpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// FuzzCheckNames compares checkNames, which scans bytes, with a walk over
// encoding/json's tokens (referenceNames): on every body that decodes, both refuse
// or both admit.
func FuzzCheckNames(f *testing.F) {
	for _, seed := range []string{
		`{"session_id":"a","path":"chat/x","headers":{"x-a":"1","x-b":"2"},"payload":"aGk="}`,
		`{"Path":"chat/x","session_id":"a"}`,
		`{"path":"a","path":"b"}`,
		`{"headers":{"x":"1","x":"2"},"path":"a","session_id":"s"}`,
		`{"pa\u0074h":"a","session_id":"s"}`,
		`{"path":"a\"b\\","session_id":"s", "filter" : "x is \"}\"" }`,
		` { "path" : "a" , "headers" : { } , "session_id" : "s" } `,
		`{"path":null,"session_id":"s","payload":null}`,
		`{"path":"a","filter":"","headers":{"x":null}}`,
		`null`,
		`{"path":"a\ud83d\ude00","session_id":"s"}`,
		`{"path":"a\ud83d","session_id":"s"}`,
		`{"path":"a\\ud83d","session_id":"s"}`,
		`{"path":"a","headers":{"\udc00":"1"}}`,
		`{"path":"a","session_id":"s","headers":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1","j":"1","k":"1","l":"1","m":"1","n":"1","o":"1","p":"1","q":"1","a":"2"}}`,
	} {
		f.Add([]byte(seed))
	}
	typ := reflect.TypeFor[*wire.MsgRequestRequest]()
	f.Fuzz(func(t *testing.T, data []byte) {
		var v wire.MsgRequestRequest
		if json.Unmarshal(data, &v) != nil {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		want := referenceNames(dec, typ.Elem(), false)
		got := checkNames(data, typ)
		if errors.Is(got, errSurrogate) {
			// The tokens hold the strings decoded, where half a pair is U+FFFD
			// already; the body must at least escape a surrogate.
			if !surrogateEscape.Match(data) {
				t.Fatalf("%s: checkNames %v, and the body escapes no surrogate", data, got)
			}
			return
		}
		if (got == nil) != (want == nil) {
			t.Fatalf("%s: checkNames %v, reference %v", data, got, want)
		}
	})
}

// surrogateEscape matches an escape of a UTF-16 surrogate.
var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F][0-9a-fA-F]{2}`)

// referenceNames checks the next value of dec, which decodes into t (nil: a type whose
// members are not fields, such as an interface or a json.Unmarshaler), of a field
// tagged roster:"nonempty" when nonEmpty.
func referenceNames(dec *json.Decoder, t reflect.Type, nonEmpty bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil && !nullable(t) {
		return errors.New("null")
	}
	if tok == "" && nonEmpty {
		return errors.New("empty")
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	t = structural(t)
	switch delim {
	case '{':
		fields := fieldsOf(t)
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		seen := map[string]struct{}{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			name, _ := tok.(string)
			if _, dup := seen[name]; dup {
				return fmt.Errorf("member %q appears twice", name)
			}
			seen[name] = struct{}{}
			next, nonEmpty := elem, false
			if fields != nil {
				f, ok := fields[name]
				if !ok {
					return fmt.Errorf("unknown field %q", name)
				}
				next, nonEmpty = f.typ, f.nonEmpty
			}
			if err := referenceNames(dec, next, nonEmpty); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := referenceNames(dec, elem, false); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// TestDecodeRefusesNullAndEmptyIDs: encoding/json reads null into a string, number,
// bool or struct as "leave it alone", the same as absent, and "" for an id the same
// as absent too, where the schemas refuse both. Null where Go has nil (an object
// pointer, a map, a list) still reads as absent, as the schemas say.
func TestDecodeRefusesNullAndEmptyIDs(t *testing.T) {
	type inner struct {
		A string `json:"a,omitempty"`
	}
	type request struct {
		ID      string            `json:"id,omitempty" roster:"nonempty"`
		Filter  string            `json:"filter,omitempty"`
		Limit   int               `json:"limit,omitempty"`
		Closed  bool              `json:"closed,omitempty"`
		Inner   inner             `json:"inner,omitzero"`
		Ptr     *inner            `json:"ptr,omitempty"`
		Headers map[string]string `json:"headers,omitempty"`
		Kinds   []string          `json:"kinds,omitempty"`
	}
	for _, tc := range []struct {
		body, want string // want: "" when the body decodes
	}{
		{`null`, "the body is null"},
		{` null `, "the body is null"},
		{`{"id":null}`, `member "id" is null`},
		{`{"filter":null}`, `member "filter" is null`},
		{`{"limit": null}`, `member "limit" is null`},
		{`{"closed":null}`, `member "closed" is null`},
		{`{"inner":null}`, `member "inner" is null`},
		{`{"ptr":{"a":null}}`, `member "a" is null`},
		{`{"headers":{"x":null}}`, `member "x" is null`},
		{`{"kinds":["a",null]}`, "a list item is null"},
		{`{"id":""}`, `member "id" is empty`},
		{`{"id" : ""}`, `member "id" is empty`},
		{`{}`, ""},
		{``, ""},
		{`{"id":"x","filter":""}`, ""},
		{`{"ptr":null,"headers":null,"kinds":null}`, ""},
		{`{"ptr":{"a":""},"headers":{"x":""},"kinds":[""]}`, ""},
	} {
		var req request
		err := Decode([]byte(tc.body), &req)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want it decoded", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want bad_request saying %q", tc.body, err, tc.want)
		}
		var we *wire.Error
		if err != nil && (!errors.As(err, &we) || we.Code != wire.CodeBadRequest) {
			t.Errorf("%s: got %v, want bad_request", tc.body, err)
		}
	}
}
