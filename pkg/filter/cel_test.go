package filter

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCompileCEL(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"index", `props["Department"] == "Accounts"`, []string{"acc", "admin"}},
		{"select", `props.Status == "Open"`, []string{"admin"}},
		{"presence", `has(props.Text)`, []string{"acc", "empty"}},
		{"roles list", `"client" in roles`, []string{"admin"}},
		{"roles size", `size(roles) == 2`, []string{"admin", "pay"}},
		{"roles tricky", `roles == ['a","x']`, []string{"tricky"}},
		{"hasRole", `hasRole(props, "operator")`, []string{"acc", "pay"}},
		{"macro", `props.exists(k, k.startsWith("$Tr"))`, []string{"acc", "pay"}},
		{"missing key error is false", `props["Nope"] == "x" || props["Department"] == "Payroll"`, []string{"pay"}},
		{"error is false", `props["Nope"] == "x"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := CompileCEL(tt.expr)
			if err != nil {
				t.Fatalf("CompileCEL(%q): got error %v, want nil", tt.expr, err)
			}
			var got []string
			for _, name := range sortedSessionNames() {
				if f.Matches(testSessions[name]) {
					got = append(got, name)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("CompileCEL(%q) matches %v, want %v", tt.expr, got, tt.want)
			}
			if p := f.Plan(); !p.Full {
				t.Errorf("Plan(): got %+v, want Full", p)
			}
			if f.String() != tt.expr || f.CEL() != tt.expr || f.Canonical() != tt.expr {
				t.Errorf("String, CEL, Canonical: got %q, %q, %q, want %q", f.String(), f.CEL(), f.Canonical(), tt.expr)
			}
		})
	}
}

func TestCompileCELErrors(t *testing.T) {
	tests := []struct{ name, expr, want string }{
		{"parse error", `props["a"] ==`, "invalid CEL"},
		{"unknown variable", `session.a == "x"`, "undeclared reference"},
		{"not bool", `props["a"]`, "has type string, want bool"},
		{"int", `1 + 2`, "has type int, want bool"},
		{"too expensive", `props.all(a, props.all(b, props.all(c, a + b + c != "")))`, "too expensive"},
		{"empty", ``, "invalid CEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileCEL(tt.expr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CompileCEL(%q): got error %v, want one containing %q", tt.expr, err, tt.want)
			}
		})
	}
}

func TestCompileCELCostLimit(t *testing.T) {
	// The estimate assumes at most MaxCELProperties properties, each value
	// at most MaxCELValueLen long, so this compiles, but a session with far
	// longer values exceeds MaxCost at run time.
	f, err := CompileCEL(`props.all(k, !props[k].contains("zzz"))`)
	if err != nil {
		t.Fatalf("CompileCEL: got error %v, want nil", err)
	}
	small := map[string]string{"a": "b"}
	if !f.Matches(small) {
		t.Fatalf("Matches(small): got false, want true")
	}
	long := strings.Repeat("v", 100*MaxCELValueLen)
	big := make(map[string]string, MaxCELProperties)
	for i := range MaxCELProperties {
		big[strconv.Itoa(i)] = long
	}
	if f.Matches(big) {
		t.Errorf("Matches(big): got true, want false (cost limit exceeded)")
	}
}

// FuzzCELQuote checks that every valid string survives quoting as a CEL
// literal: the literal parses and equals the string.
func FuzzCELQuote(f *testing.F) {
	for _, s := range []string{"", `"`, `\`, "\x00", "\n\t\r", "\u2028", "\U0001F600", "\ufeff", "\x7f", "\u00ad", "\uffff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		var b strings.Builder
		celQuote(&b, s)
		prg, err := compileProgram(`props["k"] == ` + b.String())
		if err != nil {
			t.Fatalf("quoting %q as %s: got error %v, want nil", s, b.String(), err)
		}
		out, _, err := prg.Eval(activation{"k": s})
		if err != nil || out.Value() != true {
			t.Fatalf("quoting %q as %s: got %v, %v, want true", s, b.String(), out, err)
		}
	})
}

func sortedSessionNames() []string {
	names := make([]string, 0, len(testSessions))
	for name := range testSessions {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
