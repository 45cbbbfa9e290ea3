// Package schematest validates messages against the JSON Schemas in schemas/, so
// tests can prove that what the services really send is what the schemas document.
package schematest

import (
	"bytes"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/seed-3c836eab/roster/schemas"
)

const base = "https://schemas.roster.invalid/"

var (
	once     sync.Once
	compiler *jsonschema.Compiler
	loadErr  error
	mu       sync.Mutex
	compiled = map[string]*jsonschema.Schema{}
)

func load() {
	compiler = jsonschema.NewCompiler()
	compiler.DefaultDraft(jsonschema.Draft2020)
	compiler.AssertFormat()
	loadErr = fs.WalkDir(schemas.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		data, err := fs.ReadFile(schemas.FS, path)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return compiler.AddResource(base+path, doc)
	})
}

// Schema compiles the schema named name (a file in schemas/ without .json).
func Schema(name string) (*jsonschema.Schema, error) {
	once.Do(load)
	if loadErr != nil {
		return nil, loadErr
	}
	mu.Lock()
	defer mu.Unlock()
	if s, ok := compiled[name]; ok {
		return s, nil
	}
	s, err := compiler.Compile(base + name + ".json")
	if err != nil {
		return nil, err
	}
	compiled[name] = s
	return s, nil
}

// Check validates data against the schema named name.
func Check(name string, data []byte) error {
	s, err := Schema(name)
	if err != nil {
		return fmt.Errorf("schema %s: %w", name, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("schema %s: message is not JSON: %w", name, err)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("schema %s: %w", name, err)
	}
	return nil
}

// Validate fails the test unless data is valid against the schema named name.
func Validate(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := Check(name, data); err != nil {
		t.Errorf("%v\nmessage: %s", err, data)
	}
}
