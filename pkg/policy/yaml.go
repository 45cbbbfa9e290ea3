package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// MaxSize bounds a policy document in bytes.
const MaxSize = 1 << 20

// Parse decodes a policy from YAML (JSON is YAML too) strictly: unknown fields are
// errors, and the result is validated.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("policy: document is %d bytes; the limit is %d", len(data), MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("policy: empty document")
		}
		return nil, fmt.Errorf("policy: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy: more than one YAML document")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := listsWithoutItems(&doc); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// LoadFile reads and parses a policy file.
func LoadFile(name string) (*Policy, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// listsWithoutItems refuses a grant's names or a property rule's values written
// with no items: "names:" left behind when an operator deletes the last "- …" line
// of a block list, or an explicit null. Decoded, either is an absent list, which
// holds for every name or any value; like an empty list (Policy.Validate) it would
// fail open.
func listsWithoutItems(doc *yaml.Node) error {
	root := deref(doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = deref(root.Content[0])
	}
	var errs []error
	if roles := field(root, "roles"); roles != nil && roles.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(roles.Content); i += 2 {
			role, grants := roles.Content[i].Value, deref(roles.Content[i+1])
			if grants.Kind != yaml.SequenceNode {
				continue
			}
			for _, g := range grants.Content {
				g = deref(g)
				if names := field(g, "names"); names != nil && isNull(names) {
					perm := ""
					if v := field(g, "permission"); v != nil {
						perm = v.Value
					}
					errs = append(errs, fmt.Errorf("policy: role %q: %s: names has no items; omit it to grant on every name", role, perm))
				}
			}
		}
	}
	if rules := field(field(root, "properties"), "rules"); rules != nil && rules.Kind == yaml.SequenceNode {
		for i, r := range rules.Content {
			if values := field(deref(r), "values"); values != nil && isNull(values) {
				errs = append(errs, fmt.Errorf("policy: properties: rule %d: values has no items; use veto, or omit values to accept any", i))
			}
		}
	}
	return errors.Join(errs...)
}

// field returns the value of key in mapping node m, or nil.
func field(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return deref(m.Content[i+1])
		}
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}
