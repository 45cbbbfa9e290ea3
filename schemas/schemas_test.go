package schemas_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/schemas"
)

var update = flag.Bool("update", false, "rewrite generated files (errors.json)")

// renderErrors renders the error-code registry of pkg/wire as errors.json.
func renderErrors(t *testing.T) []byte {
	t.Helper()
	var codes []string
	for _, c := range wire.Codes() {
		codes = append(codes, string(c.Code))
	}
	doc := map[string]any{
		"$schema":     "https://json-schema.org/draft/2020-12/schema",
		"$id":         "errors.json",
		"title":       "Error codes",
		"description": "The stable error codes of Roster's wire protocol, with their HTTP-like status class. Generated from pkg/wire (make generate); a test fails when they differ.",
		"$defs": map[string]any{
			"code": map[string]any{"type": "string", "enum": codes},
		},
		"codes": wire.Codes(),
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func TestErrorRegistryIsGenerated(t *testing.T) {
	want := renderErrors(t)
	if *update {
		if err := os.WriteFile("errors.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := fs.ReadFile(schemas.FS, "errors.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) && !*update {
		t.Fatalf("schemas/errors.json differs from the registry in pkg/wire: run make generate")
	}
}

func TestEverySchemaCompiles(t *testing.T) {
	entries, err := fs.ReadDir(schemas.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		n++
		if _, err := schematest.Schema(name); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
	}
	if n < 4 {
		t.Fatalf("found %d schemas, want at least 4", n)
	}
}

func TestErrorBodySchema(t *testing.T) {
	for _, c := range wire.Codes() {
		_, _, body := wire.EncodeError(&wire.Error{Code: c.Code, Message: "m"})
		if err := schematest.Check("error", body); err != nil {
			t.Errorf("code %s: %v", c.Code, err)
		}
	}
	if schematest.Check("error", []byte(`{"error":{"code":"no_such_code","message":"x"}}`)) == nil {
		t.Fatal("error schema accepted an unregistered code")
	}
}
