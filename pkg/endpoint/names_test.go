package endpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
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
		want := referenceNames(dec, typ)
		got := checkNames(data, typ)
		if (got == nil) != (want == nil) {
			t.Fatalf("%s: checkNames %v, reference %v", data, got, want)
		}
	})
}

// referenceNames checks the next value of dec, which decodes into t (nil: a type whose
// members are not fields, such as an interface or a json.Unmarshaler).
func referenceNames(dec *json.Decoder, t reflect.Type) error {
	tok, err := dec.Token()
	if err != nil {
		return err
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
			next := elem
			if fields != nil {
				ft, ok := fields[name]
				if !ok {
					return fmt.Errorf("unknown field %q", name)
				}
				next = ft
			}
			if err := referenceNames(dec, next); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := referenceNames(dec, elem); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}
