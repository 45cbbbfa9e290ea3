// Package docs_test holds the documentation to the code: the tests the documents
// name as evidence must exist.
package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// documents are the files whose claims cite tests by name.
var documents = []string{"architecture.md", "../README.md", "../deploy/README.md"}

var (
	cited   = regexp.MustCompile(`\bTest[A-Z][A-Za-z0-9_]*`)
	defined = regexp.MustCompile(`(?m)^func (Test[A-Z][A-Za-z0-9_]*)\(`)
)

// TestCitedTestsExist: every test a document names exists, so that a test renamed or
// removed does not leave a claim resting on nothing.
func TestCitedTestsExist(t *testing.T) {
	have := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range defined.FindAllSubmatch(src, -1) {
			have[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !have["TestCitedTestsExist"] {
		t.Fatal("the walk did not find this very test: it looked in the wrong place")
	}
	for _, doc := range documents {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range cited.FindAllString(string(text), -1) {
			if !have[name] {
				t.Errorf("%s cites %s, which no test file defines", doc, name)
			}
		}
	}
}
