package policy

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// Actions for proposed properties no rule names.
const (
	// Veto drops the property (the default).
	Veto = "veto"
	// Accept keeps it as proposed.
	Accept = "accept"
)

// Properties decides what happens to the user properties a client proposes when it
// opens a session, and to those a session sets or removes on itself later
// (Policy.VetChange): each proposed key is checked against Rules in order and the first
// rule whose Key matches decides; keys no rule matches get Default. Fixed properties
// (keys starting with "$") are never accepted from a client.
type Properties struct {
	Rules []PropertyRule `json:"rules,omitempty" yaml:"rules,omitempty"`
	// Default is "veto" (or empty) or "accept".
	Default string `json:"default,omitempty" yaml:"default,omitempty"`
	// MaxValueLength vetoes longer values (0: 1024).
	MaxValueLength int `json:"max_value_length,omitempty" yaml:"max_value_length,omitempty"`
}

// PropertyRule is one decision about proposed properties.
type PropertyRule struct {
	// Key is a key or a glob over keys (path.Match syntax: * ? [..]).
	Key string `json:"key" yaml:"key"`
	// Veto drops the property.
	Veto bool `json:"veto,omitempty" yaml:"veto,omitempty"`
	// Values, if not empty, are the values accepted; any other value is vetoed.
	Values List `json:"values,omitempty" yaml:"values,omitempty"`
	// Set, if not nil, rewrites the proposed value to this one.
	Set *string `json:"set,omitempty" yaml:"set,omitempty"`
}

const defaultMaxValueLength = 1024

func (p *Properties) validate() error {
	var errs []error
	switch p.Default {
	case "", Veto, Accept:
	default:
		errs = append(errs, fmt.Errorf("policy: properties: default %q: want veto or accept", p.Default))
	}
	if p.MaxValueLength < 0 {
		errs = append(errs, errors.New("policy: properties: max_value_length is negative"))
	}
	for i, r := range p.Rules {
		if r.Key == "" {
			errs = append(errs, fmt.Errorf("policy: properties: rule %d has no key", i))
			continue
		}
		if r.Values != nil && len(r.Values) == 0 {
			errs = append(errs, fmt.Errorf("policy: properties: rule %d: values is empty; use veto, or omit values to accept any", i))
		}
		if strings.ContainsAny(r.Key, " \t\r\n\"'()") {
			errs = append(errs, fmt.Errorf("policy: properties: rule %d: key %q can match no property key", i, r.Key))
		}
		if _, err := path.Match(r.Key, ""); err != nil {
			errs = append(errs, fmt.Errorf("policy: properties: rule %d: key %q: %w", i, r.Key, err))
		}
		if r.Veto && (r.Set != nil || len(r.Values) > 0) {
			errs = append(errs, fmt.Errorf("policy: properties: rule %d: veto with values or set", i))
		}
	}
	return errors.Join(errs...)
}

// ValidPropertyKey reports whether key may name a user property: not empty, and none
// of space, tab, CR, LF, quotes or parentheses.
func ValidPropertyKey(key string) bool {
	return key != "" && !strings.ContainsAny(key, " \t\r\n\"'()")
}

// VetProperties applies the policy to the properties a client proposed. It returns
// the properties the session gets (accepted or rewritten) and the sorted keys that
// were vetoed.
func (p *Policy) VetProperties(proposed map[string]string) (map[string]string, []string) {
	out := make(map[string]string, len(proposed))
	var vetoed []string
	for k, v := range proposed {
		nv, ok := p.vetProperty(k, v)
		if !ok {
			vetoed = append(vetoed, k)
			continue
		}
		out[k] = nv
	}
	slices.Sort(vetoed)
	return out, vetoed
}

// VetChange applies the same rules to a session changing its own properties after
// open (MODIFY_OWN_PROPERTIES says which keys it may change at all): it returns the
// values to store — rewritten where a rule sets one — and why each refused key was
// refused ("Tier": not a value the rules accept), the keys set first, then those
// removed, each sorted. A value set is
// refused where it would have been vetoed at open. A key removed is refused where
// the rules veto it whatever its value (a veto rule, or no rule and the default
// veto): the client could not have proposed it, so what it holds came from an
// authenticator or an administrator, and a removal would undo that as surely as a
// new value.
func (p *Policy) VetChange(set map[string]string, remove []string) (map[string]string, []string) {
	out := make(map[string]string, len(set))
	var refused []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if nv, ok := p.vetProperty(k, set[k]); ok {
			out[k] = nv
		} else {
			refused = append(refused, fmt.Sprintf("%q: %s", k, p.whyVetoed(k, set[k])))
		}
	}
	for _, k := range slices.Sorted(slices.Values(remove)) {
		if p.vetoesKey(k) {
			refused = append(refused, fmt.Sprintf("%q: the rules veto the key, so it may not be removed either", k))
		}
	}
	return out, refused
}

// whyVetoed says why vetProperty vetoes key=value.
func (p *Policy) whyVetoed(key, value string) string {
	if limit := p.maxValueLength(); p != nil && len(value) > limit {
		return fmt.Sprintf("the value is %d bytes, over max_value_length %d", len(value), limit)
	}
	if p.vetoesKey(key) {
		return "the rules veto the key"
	}
	return "not a value the rules accept"
}

// vetoesKey reports whether the rules veto key whatever its value.
func (p *Policy) vetoesKey(key string) bool {
	if p == nil || strings.HasPrefix(key, "$") || !ValidPropertyKey(key) {
		return true
	}
	for _, r := range p.Properties.Rules {
		if keyMatch(r.Key, key) {
			return r.Veto
		}
	}
	return p.Properties.Default != Accept
}

func (p *Policy) maxValueLength() int {
	if p == nil || p.Properties.MaxValueLength == 0 {
		return defaultMaxValueLength
	}
	return p.Properties.MaxValueLength
}

func (p *Policy) vetProperty(key, value string) (string, bool) {
	if p == nil || strings.HasPrefix(key, "$") || !ValidPropertyKey(key) {
		return "", false
	}
	if len(value) > p.maxValueLength() {
		return "", false
	}
	for _, r := range p.Properties.Rules {
		if !keyMatch(r.Key, key) {
			continue
		}
		switch {
		case r.Veto:
			return "", false
		case len(r.Values) > 0 && !slices.Contains(r.Values, value):
			return "", false
		case r.Set != nil:
			return *r.Set, true
		default:
			return value, true
		}
	}
	return value, p.Properties.Default == Accept
}

// keyMatch is path.Match over property keys, which are not paths: '/' is an
// ordinary character that * and ? match too. Space never occurs in a key (nor, after
// validation, in a rule's key), so it stands in for '/'.
func keyMatch(pattern, key string) bool {
	ok, _ := path.Match(strings.ReplaceAll(pattern, "/", " "), strings.ReplaceAll(key, "/", " "))
	return ok
}
