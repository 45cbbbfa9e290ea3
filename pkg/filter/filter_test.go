package filter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// testSessions are the sessions the table tests match filters against.
var testSessions = map[string]map[string]string{
	"acc": {
		"Department": "Accounts", "Status": "Closed", "$Country": "FR", "$Principal": "Alice",
		"$Language": "en", "$Transport": "wss", "$Version": "7", "Text": `xyz"\`,
		"$Roles": `"accountancy","administrator","operator"`,
	},
	"pay": {
		"Department": "Payroll", "Status": "Closed", "$Country": "US", "$Principal": "Bob",
		"$Language": "en", "$Transport": "ws", "$Version": "9",
		"$Roles": `"operator","trading desk"`,
	},
	"bare":  {},
	"empty": {"Department": "", "$Country": "UK", "$Roles": "", "Text": ""},
	"admin": {
		"Department": "Accounts", "Status": "Open", "$Country": "DE", "$Language": "de",
		"$Version": "6", "Città": "Zürich", "$Roles": `"admin","client"`,
	},
	"tricky":    {"$Roles": RolesToString([]string{`a","x`})},
	"malformed": {"$Roles": `"operator`, "$Country": "FR "},
}

func TestMatches(t *testing.T) {
	all := []string{"acc", "admin", "bare", "empty", "malformed", "pay", "tricky"}
	tests := []struct {
		name, expr string
		want       []string // names of the matching sessions
	}{
		// The seed examples.
		{"is", `Department is "Accounts"`, []string{"acc", "admin"}},
		{"hasRoles two", `hasRoles[ "operator" "trading desk" ]`, []string{"pay"}},
		{"and", `Department is "Payroll" and Status is "Closed"`, []string{"pay"}},
		{"parenthesised or", `(Department is "Accounts" or Department is "Payroll") and Status is "Closed"`, []string{"acc", "pay"}},
		{"not clause", `not Department is "Payroll"`, []string{"acc", "admin", "bare", "empty", "malformed", "tricky"}},
		{"not group", `not (Department is "Payroll" or Department is "Accounts")`, []string{"bare", "empty", "malformed", "tricky"}},
		{"principal", `$Principal is "Alice"`, []string{"acc"}},
		{"ne", `Department is "Accounts" and $Country ne "US"`, []string{"acc", "admin"}},
		{"upper EQ NE", `$Language EQ "en" and $Country NE "US"`, []string{"acc"}},
		{"not group and", `not (Department is "Accounts" or Department is "Payroll") and $Country is "FR"`, nil},
		{"escapes", `Text is "xyz\"\\"`, []string{"acc"}},
		{"hasRoles one", `hasRoles ["operator"]`, []string{"acc", "pay"}},
		{"transport and roles", `$Transport is "wss" and hasRoles ["accountancy" "administrator"]`, []string{"acc"}},
		{"in braces", `$Version in {"6","7","8"}`, []string{"acc", "admin"}},
		{"in brackets single quotes", `$Country in ['UK','DE','FR']`, []string{"acc", "admin", "empty"}},
		{"in bare list", `$Country in 'UK','DE','FR'`, []string{"acc", "admin", "empty"}},
		{"roles and not roles", `hasRoles ["operator"] and not hasRoles ["administrator"]`, []string{"pay"}},
		{"has", `has Department`, []string{"acc", "admin", "empty", "pay"}},
		{"all", `all`, all},
		{"roles equality", `$Roles eq '"admin","client"'`, []string{"admin"}},

		// Precedence and the scope of not.
		{"and binds tighter", `Department is "Payroll" or Department is "Accounts" and Status is "Open"`, []string{"admin", "pay"}},
		{"and binds tighter left", `Status is "Open" and Department is "Accounts" or Department is "Payroll"`, []string{"admin", "pay"}},
		{"parentheses override", `(Department is "Payroll" or Department is "Accounts") and Status is "Open"`, []string{"admin"}},
		{"not scope clause", `NOT Department IS "Payroll" AND Status Is "Closed"`, []string{"acc"}},
		{"not group then and", `not (Department is "Accounts" or Department is "Payroll") and $Country is "UK"`, []string{"empty"}},
		{"double not", `not not Department is "Payroll"`, []string{"pay"}},
		{"not all", `not all`, nil},
		{"not not all", `not not all`, all},
		{"not ne", `not Department ne "Payroll"`, []string{"pay"}},
		{"nested parentheses", `((Department is "Payroll"))`, []string{"pay"}},

		// Missing properties and empty values.
		{"ne missing", `Department ne "Accounts"`, []string{"bare", "empty", "malformed", "pay", "tricky"}},
		{"is empty value", `Department is ""`, []string{"empty"}},
		{"has empty value", `has Text`, []string{"acc", "empty"}},
		{"not has", `not has Text`, []string{"admin", "bare", "malformed", "pay", "tricky"}},
		{"has dollar key", `has $Roles`, []string{"acc", "admin", "empty", "malformed", "pay", "tricky"}},
		{"missing key", `Nope is "x"`, nil},
		{"missing key ne", `Nope ne "x"`, all},
		{"in missing", `Nope in ["x", ""]`, nil},
		{"trailing space value", `$Country is "FR "`, []string{"malformed"}},

		// Case sensitivity of keys and values.
		{"value case", `Department is "accounts"`, nil},
		{"key case", `department is "Accounts"`, nil},
		{"keyword case", `HAS Department and HASROLES ["operator"] AnD $Country In {'FR'}`, []string{"acc"}},
		{"ALL", `ALL`, all},
		{"unicode", `Città is "Zürich"`, []string{"admin"}},

		// Strings and lists.
		{"single quoted escapes", `Text is 'xyz"\\'`, []string{"acc"}},
		{"single quoted escaped double quote", `Text is 'xyz\"\\'`, []string{"acc"}},
		{"escaped single quote", `Text is "it\'s"`, nil},
		{"list mixed separators", `$Version in ["6" "7", "8"]`, []string{"acc", "admin"}},
		{"bare list spaces", `$Country in 'UK' 'DE'`, []string{"admin", "empty"}},
		{"bare list then and", `$Country in 'UK','DE' and Status is "Open"`, []string{"admin"}},
		{"bare list then or", `$Country in "UK" or $Country in ["FR"]`, []string{"acc", "empty"}},
		{"bare list in parentheses", `($Country in 'UK' 'FR') and has Text`, []string{"acc", "empty"}},
		{"hasRoles bare", `hasRoles "operator" "trading desk"`, []string{"pay"}},
		{"hasRoles braces", `hasRoles {'client'}`, []string{"admin"}},
		{"no space before bracket", `$Country in['FR']`, []string{"acc"}},

		// Roles are parsed, never matched as substrings.
		{"role prefix", `hasRoles ["admin"]`, []string{"admin"}},
		{"escaped role not split", `hasRoles ["x"]`, nil},
		{"escaped role", `hasRoles ['a","x']`, []string{"tricky"}},
		{"malformed roles", `hasRoles ["operator"] and $Country is "FR "`, nil},
		{"roles all listed", `hasRoles ["operator" "admin"]`, nil},
		{"roles eq empty", `$Roles eq ""`, []string{"empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): got error %v, want nil", tt.expr, err)
			}
			var got []string
			for name, props := range testSessions {
				if f.Matches(props) {
					got = append(got, name)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Compile(%q) matches %v, want %v\nCEL: %s", tt.expr, got, tt.want, f.CEL())
			}
			if f.String() != tt.expr {
				t.Errorf("String(): got %q, want %q", f.String(), tt.expr)
			}
			c, err := Compile(f.Canonical())
			if err != nil {
				t.Fatalf("Compile(Canonical() = %q): got error %v, want nil", f.Canonical(), err)
			}
			for name, props := range testSessions {
				if got, want := c.Matches(props), f.Matches(props); got != want {
					t.Errorf("canonical %q on %s: got %v, want %v", f.Canonical(), name, got, want)
				}
				fixed, user := split(props)
				if got, want := f.MatchesSplit(fixed, user), f.Matches(props); got != want {
					t.Errorf("MatchesSplit on %s: got %v, want %v", name, got, want)
				}
			}
		})
	}
}

// split divides props as a session record keeps them: the $ properties apart.
func split(props map[string]string) (fixed, user map[string]string) {
	fixed, user = map[string]string{}, map[string]string{}
	for k, v := range props {
		if strings.HasPrefix(k, "$") {
			fixed[k] = v
		} else {
			user[k] = v
		}
	}
	return fixed, user
}

// TestMatchesSplitAsTheUnion: MatchesSplit evaluates over the union of the two maps,
// the fixed one winning for a key in both, as Matches over the merged map does —
// also for what a raw CEL filter can do with the whole map.
func TestMatchesSplitAsTheUnion(t *testing.T) {
	fixed := map[string]string{"$a": "1", "k": "fixed", "$Roles": `"op"`}
	user := map[string]string{"b": "2", "k": "user"}
	merged := map[string]string{"b": "2", "k": "fixed", "$a": "1", "$Roles": `"op"`}
	for _, expr := range []string{
		`props["k"] == "fixed"`,
		`"b" in props && "$a" in props && !("c" in props)`,
		`size(props) == 4`,
		`props.exists(k, k == "b") && props.all(k, k != "c")`,
		`props == {"b": "2", "k": "fixed", "$a": "1", "$Roles": "\"op\""}`,
		`hasRole(props, "op") && roles == ["op"]`,
		`props.filter(k, k.startsWith("$")).size() == 2`,
	} {
		f, err := CompileCEL(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if !f.Matches(merged) {
			t.Fatalf("%s does not match the merged map", expr)
		}
		if !f.MatchesSplit(fixed, user) {
			t.Errorf("%s: MatchesSplit does not match what Matches over the union does", expr)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		name, expr string
		pos        int
		expected   string // substring of SyntaxError.Expected
		found      string // exact SyntaxError.Found
	}{
		{"empty", ``, 0, "a clause", "end of input"},
		{"blank", "  \t\n", 4, "a clause", "end of input"},
		{"equals", `Department = "Accounts"`, 11, `"is", "eq", "ne" or "in"`, `"="`},
		{"double equals", `Department == "Accounts"`, 11, `"is", "eq", "ne" or "in"`, `"=="`},
		{"contains", `Department contains "Acc"`, 11, `"is", "eq", "ne" or "in"`, `"contains"`},
		{"equals no spaces", `Department="Accounts"`, 11, `"is", "eq", "ne" or "in"`, `string "Accounts"`},
		{"missing operator", `Department "Accounts"`, 11, `"is", "eq", "ne" or "in"`, `string "Accounts"`},
		{"unquoted value", `Department is Accounts`, 14, "a quoted string", `"Accounts"`},
		{"unquoted list value", `$Country in [UK]`, 13, "a quoted string", `"UK"`},
		{"unterminated string", `Department is "Accounts`, 14, `closing "`, "end of input"},
		{"unterminated single", `Department is 'Acc\'`, 14, `closing '`, "end of input"},
		{"trailing backslash", `Department is "Acc\`, 14, `closing "`, "end of input"},
		{"bad escape", `Text is "a\nb"`, 10, "after backslash", `"\\n"`},
		{"unclosed paren", `(Department is "Accounts"`, 25, `"and", "or" or ")"`, "end of input"},
		{"extra close paren", `Department is "Accounts")`, 24, `"and", "or" or end of input`, `")"`},
		{"empty parens", `()`, 1, "a clause", `")"`},
		{"unclosed bracket", `hasRoles ["a"`, 13, `a quoted string, "," or "]"`, "end of input"},
		{"mismatched bracket", `hasRoles ["a"}`, 13, `a quoted string, "," or "]"`, `"}"`},
		{"unclosed brace", `$Country in {'UK' and all`, 18, `a quoted string, "," or "}"`, `"and"`},
		{"empty list", `hasRoles []`, 10, "a quoted string", `"]"`},
		{"missing list", `hasRoles`, 8, `a quoted string, "[" or "{"`, "end of input"},
		{"trailing comma", `$Country in 'UK',`, 17, "a quoted string", "end of input"},
		{"double comma", `$Country in ['UK',,'DE']`, 18, "a quoted string", `","`},
		{"dangling and", `Department is "A" and`, 21, "a clause", "end of input"},
		{"dangling or", `Department is "A" or`, 20, "a clause", "end of input"},
		{"dangling not", `not`, 3, "a clause", "end of input"},
		{"not before and", `not and Status is "x"`, 4, "a clause", `"and"`},
		{"two clauses", `Department is "A" Status is "B"`, 18, `"and", "or" or end of input`, `"Status"`},
		{"two alls", `all all`, 4, `"and", "or" or end of input`, `"all"`},
		{"leading and", `and Status is "x"`, 0, "a clause", `"and"`},
		{"keyword as key", `is is "x"`, 0, "a clause", `"is"`},
		{"keyword as key any case", `Or is "x"`, 0, "a clause", `"Or"`},
		{"keyword after has", `has and`, 4, "a property key", `"and"`},
		{"has without key", `has`, 3, "a property key", "end of input"},
		{"has string", `has "Department"`, 4, "a property key", `string "Department"`},
		{"string as key", `"Department" is "A"`, 0, "a clause", `string "Department"`},
		{"comma as clause", `, is "A"`, 0, "a clause", `","`},
		{"invalid utf8", "Text is \"\xff\"", 9, "valid UTF-8", "invalid byte"},
		{"too deep", strings.Repeat("(", MaxDepth+1) + "all" + strings.Repeat(")", MaxDepth+1), MaxDepth, "levels of nesting", `"("`},
		{"too deep not", strings.Repeat("not ", MaxDepth+1) + "all", 4 * MaxDepth, "levels of nesting", `"not"`},
		{"too long", "all" + strings.Repeat(" ", MaxLength), MaxLength, "bytes", "16387 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err == nil {
				t.Fatalf("Compile(%q): got filter with CEL %s, want error", tt.expr, f.CEL())
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Compile(%q): got error %T %v, want *SyntaxError", tt.expr, err, err)
			}
			if se.Pos != tt.pos {
				t.Errorf("Pos: got %d, want %d (%v)", se.Pos, tt.pos, err)
			}
			if !strings.Contains(se.Expected, tt.expected) {
				t.Errorf("Expected: got %q, want it to contain %q", se.Expected, tt.expected)
			}
			if se.Found != tt.found {
				t.Errorf("Found: got %q, want %q", se.Found, tt.found)
			}
		})
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	_, err := Compile(`Department = "Accounts"`)
	want := `filter: syntax error at offset 11: expected "is", "eq", "ne" or "in", found "="`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestMaxDepthAccepted(t *testing.T) {
	expr := strings.Repeat("not (", MaxDepth/2) + `a is "x"` + strings.Repeat(")", MaxDepth/2)
	f, err := Compile(expr)
	if err != nil {
		t.Fatalf("Compile at MaxDepth: got error %v, want nil", err)
	}
	if got, want := f.Matches(map[string]string{"a": "x"}), MaxDepth/2%2 == 0; got != want {
		t.Errorf("Matches: got %v, want %v", got, want)
	}
}

func TestCEL(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`all`, `true`},
		{`Department is "Accounts"`, `("Department" in props && props["Department"] == "Accounts")`},
		{`$Country ne "US"`, `!("$Country" in props && props["$Country"] == "US")`},
		{`k in 'a' "b"`, `("k" in props && props["k"] in ["a", "b"])`},
		{`has $Principal`, `"$Principal" in props`},
		{`hasRoles ['a"b' "c\\d"]`, `(hasRole(props, "a\"b") && hasRole(props, "c\\d"))`},
		{"k is \"\x01\u00e9\u200b\U0001F600\"", `("k" in props && props["k"] == "\u0001é\u200b😀")`},
		{`not has k`, `!("k" in props)`},
		{`not (all or all) and all`, `(!(true || true) && true)`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): got error %v, want nil", tt.expr, err)
			}
			if got := f.CEL(); got != tt.want {
				t.Errorf("CEL(): got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`a IS 'x' AND NOT (b EQ "y" OR c NE "z")`, `a is "x" and not (b is "y" or c ne "z")`},
		{`$Country in 'UK' 'DE'`, `$Country in ["UK", "DE"]`},
		{`HasRoles {'a"b'}`, `hasRoles ["a\"b"]`},
		{`((a is "x"))`, `a is "x"`},
		{`(a is "x" and b is "y") and c is "z"`, `(a is "x" and b is "y") and c is "z"`},
		{`not not has k`, `not not has k`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): got error %v, want nil", tt.expr, err)
			}
			if got := f.Canonical(); got != tt.want {
				t.Errorf("Canonical(): got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestRedacted: the redacted form is the canonical one with every value a property
// is compared with written as ?, roles kept; a CEL filter is ? whole.
func TestRedacted(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`a IS 'secret' AND NOT (b EQ "y" OR c NE "z")`, `a is ? and not (b is ? or c ne ?)`},
		{`$Country in 'UK' 'DE'`, `$Country in [?, ?]`},
		{`HasRoles {'a"b'} and has k`, `hasRoles ["a\"b"] and has k`},
		{`$Roles eq '"admin"'`, `$Roles is ?`},
		{`all`, `all`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): got error %v, want nil", tt.expr, err)
			}
			if got := f.Redacted(); got != tt.want {
				t.Errorf("Redacted(): got %s, want %s", got, tt.want)
			}
		})
	}
	f, err := CompileCEL(`props["a"] == "secret"`)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Redacted(); got != "?" {
		t.Errorf("Redacted() of a CEL filter: got %s, want ?", got)
	}
}

func TestCompileCached(t *testing.T) {
	const expr = `cached is "yes"`
	a, err := Compile(expr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(expr)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("Compile twice: got distinct filters %p and %p, want the cached one", a, b)
	}
	c, err := CompileCEL(`props["cached"] == "yes"`)
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Errorf("CompileCEL shares a cache entry with Compile")
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(3, cacheBudget)
	fs := make([]*Filter, 5)
	for i := range fs {
		fs[i] = &Filter{text: string(rune('a' + i))}
		c.put(cacheKey{text: fs[i].text}, fs[i])
		if i == 2 {
			c.get(cacheKey{text: "a"}) // a is now most recently used
		}
	}
	if got := c.len(); got != 3 {
		t.Errorf("len: got %d, want 3", got)
	}
	for key, want := range map[string]*Filter{"a": fs[0], "b": nil, "c": nil, "d": fs[3], "e": fs[4]} {
		if got := c.get(cacheKey{text: key}); got != want {
			t.Errorf("get(%q): got %v, want %v", key, got, want)
		}
	}
}

// TestCacheBoundedInMemory: long filters weigh more; the cache keeps as many as its
// memory budget allows, the most recently used, whatever the count allows.
func TestCacheBoundedInMemory(t *testing.T) {
	text := func(i int) string { return fmt.Sprint(i, strings.Repeat("x", 1000)) }
	budget := 3 * (&Filter{text: text(0)}).weight()
	c := newCache(100, budget)
	for i := range 5 {
		c.put(cacheKey{text: text(i)}, &Filter{text: text(i)})
	}
	if got := c.len(); got != 3 {
		t.Errorf("len: got %d long filters, want the 3 the budget holds", got)
	}
	if c.used > budget {
		t.Errorf("used %d of a budget of %d", c.used, budget)
	}
	for i, want := range []bool{false, false, true, true, true} {
		if got := c.get(cacheKey{text: text(i)}) != nil; got != want {
			t.Errorf("filter %d cached: got %v, want %v", i, got, want)
		}
	}
	// The default budget holds the full count of ordinary filters.
	c = newCache(cacheSize, cacheBudget)
	for i := range cacheSize {
		k := fmt.Sprintf(`Department is "Accounts %d" and $Country ne "US"`, i)
		root, err := parse(k)
		if err != nil {
			t.Fatal(err)
		}
		c.put(cacheKey{text: k}, &Filter{text: k, root: root})
	}
	if got := c.len(); got != cacheSize {
		t.Errorf("len: got %d, want %d ordinary filters", got, cacheSize)
	}
}

func TestConcurrentUse(t *testing.T) {
	exprs := []string{`Department is "Accounts"`, `hasRoles ["operator"]`, `$Country in 'UK' 'FR'`, `not has Text`}
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func() {
			var err error
			for i := 0; i < 200 && err == nil; i++ {
				var f *Filter
				f, err = Compile(exprs[(g+i)%len(exprs)])
				if err == nil {
					for _, props := range testSessions {
						f.Matches(props)
					}
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestLargeFilters checks filters beyond checkedClauses, which are planned
// without type checking, against the same filters' expected results.
func TestLargeFilters(t *testing.T) {
	many := func(clause, op string, n int) string {
		return strings.TrimSuffix(strings.Repeat(clause+" "+op+" ", n), " "+op+" ")
	}
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"or", many(`Nope is "x"`, "or", 2*checkedClauses) + ` or Department is "Payroll"`, []string{"pay"}},
		{"and", many(`Department is "Accounts"`, "and", 2*checkedClauses) + ` and $Country ne "FR"`, []string{"admin"}},
		{"roles", "hasRoles " + strings.Repeat(`"operator" `, 2*checkedClauses) + ` "trading desk"`, []string{"pay"}},
		{"in and not has", many(`$Country in 'DE' 'US'`, "and", 2*checkedClauses) + ` and not has Text`, []string{"admin", "pay"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile: got error %v, want nil", err)
			}
			if n := countClauses(f.root); n <= checkedClauses {
				t.Fatalf("countClauses: got %d, want more than %d", n, checkedClauses)
			}
			var got []string
			for _, name := range sortedSessionNames() {
				if f.Matches(testSessions[name]) {
					got = append(got, name)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("matches %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCacheMemoryBounded compiles 100 distinct filters of MaxLength (a sender
// chooses the text of every filter it sends): the cache keeps about its budget of
// them, not 100 × 1.1 MB — 4,096 of them, the count the cache allowed before, kept
// over 4 GB.
func TestCacheMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles 100 long filters")
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	for i := range 100 {
		var b strings.Builder
		fmt.Fprintf(&b, `k is "%d"`, i)
		for b.Len() < MaxLength-40 {
			b.WriteString(` or a in ['x','y','z','w','v']`)
		}
		if _, err := Compile(b.String()); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := int64(ms.HeapAlloc) - int64(before)
	t.Logf("100 filters of %d bytes compiled: %d MB held", MaxLength, held>>20)
	// Twice the budget (32 MB): an estimate, and what the compiler keeps around.
	if held > 64<<20 {
		t.Fatalf("the cache holds %d MB; its budget is 32 MB", held>>20)
	}
}

// TestCanonicalLongerThanMaxLength: the canonical form can be longer than the text,
// and past MaxLength it does not compile, as Canonical says.
func TestCanonicalLongerThanMaxLength(t *testing.T) {
	expr := "a in " + strings.Repeat("'x'", (MaxLength-5)/3)
	f, err := Compile(expr)
	if err != nil {
		t.Fatalf("Compile of %d bytes: got error %v, want nil", len(expr), err)
	}
	canon := f.Canonical()
	if len(canon) <= MaxLength {
		t.Fatalf("Canonical of %d bytes: got %d bytes, want more than MaxLength", len(expr), len(canon))
	}
	var se *SyntaxError
	if _, err := Compile(canon); !errors.As(err, &se) {
		t.Errorf("Compile(Canonical()) of %d bytes: got %v, want a *SyntaxError", len(canon), err)
	}
}

// TestWeightCoversMemory: the weight the cache counts a compiled filter at is at
// least the memory it keeps, for every shape of filter, not only the one it was
// measured on. By text length alone, a filter of MaxLength was 1.1 MB whatever it
// held, and 16 KiB of roles (hasRoles and empty strings, two bytes a role) keep
// 4.4 MB: the 32 MB budget let the cache keep 127 MB of them.
func TestWeightCoversMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles long filters")
	}
	long := func(head, rep string) func(int) string {
		return func(i int) string {
			var b strings.Builder
			fmt.Fprintf(&b, head, i)
			for b.Len()+len(rep) <= MaxLength {
				b.WriteString(rep)
			}
			return b.String()
		}
	}
	shapes := []struct {
		name string
		n    int
		text func(int) string
	}{
		{"ordinary", 1000, func(i int) string { return fmt.Sprintf(`Department is "Accounts %d" and $Country ne "US"`, i) }},
		{"roles", 5, long(`hasRoles '%d'`, `''`)},
		{"ne", 5, long(`k is "%d"`, ` or a ne''`)},
		{"not and", 5, long(`k is "%d"`, ` or not (a is''and b is'')`)},
		{"has", 5, long(`k is "%d"`, ` or has a`)},
		{"in", 5, long(`k is "%d"`, ` or a in ['x','y','z','w','v']`)},
		{"values", 5, long(`a in '%d'`, `''`)},
		// Distinct values: a checked "in" keeps a set entry and a type for each.
		{"distinct values", 5, distinct(`a in '%d'`, `'%s'`)},
		{"distinct values, many clauses", 5, func(i int) string {
			var b strings.Builder
			fmt.Fprintf(&b, `k is "%d"`, i)
			for c := 0; b.Len()+300 <= MaxLength; c++ {
				b.WriteString(" or a in ")
				for j := range 60 {
					fmt.Fprintf(&b, `'%s'`, twoChars(c*60+j))
				}
			}
			return b.String()
		}},
	}
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.HeapAlloc
			kept, weight := make([]*Filter, s.n), 0
			for i := range kept {
				root, err := parse(s.text(i))
				if err != nil {
					t.Fatal(err)
				}
				if kept[i], err = compileNode(s.text(i), root); err != nil {
					t.Fatal(err)
				}
				weight += kept[i].weight()
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			held := int64(ms.HeapAlloc) - int64(before)
			runtime.KeepAlive(kept)
			t.Logf("%d filters of %d bytes: %d KB held, weighed at %d KB", s.n, len(s.text(0)), held>>10, weight>>10)
			if held > int64(weight) {
				t.Errorf("%d filters keep %d KB; the cache weighs them at %d KB", s.n, held>>10, weight>>10)
			}
		})
	}
}

// distinct returns the filters head (with its number) and rep repeated up to
// MaxLength, rep's %s a different two-character value each time.
func distinct(head, rep string) func(int) string {
	return func(i int) string {
		var b strings.Builder
		fmt.Fprintf(&b, head, i)
		for j := 0; ; j++ {
			r := fmt.Sprintf(rep, twoChars(j))
			if b.Len()+len(r) > MaxLength {
				return b.String()
			}
			b.WriteString(r)
		}
	}
}

// twoChars returns one of 3,844 distinct values of two letters or digits.
func twoChars(j int) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	return string([]byte{alphabet[j%62], alphabet[j/62%62]})
}

// TestEscapeString: a value escaped and put between either quotes stands for itself,
// whatever it holds; unescaped, a value with a quote ends the string early (seed 002
// names EscapeString for this; the package had none).
func TestEscapeString(t *testing.T) {
	values := []string{"", "plain", `"`, `'`, `\`, `\\"`, `it's`, `a"b'c\d`, `x" or all or a is "`,
		`x' or all or a is '`, "é\x00\n", `\"`, `"\`}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		var b strings.Builder
		for range r.IntN(8) {
			b.WriteByte(`"'\ ax`[r.IntN(6)])
		}
		values = append(values, b.String())
	}
	for _, v := range values {
		for _, q := range []string{`"`, `'`} {
			text := `k is ` + q + EscapeString(v) + q + ` and has k`
			f, err := Compile(text)
			if err != nil {
				t.Fatalf("Compile(%q): %v", text, err)
			}
			if !f.Matches(map[string]string{"k": v}) || f.Matches(map[string]string{"k": v + "x"}) || f.Matches(map[string]string{"a": "", "k": ""}) && v != "" {
				t.Errorf("Compile(%q) = %s: does not select k = %q alone", text, f.Canonical(), v)
			}
		}
	}
	if got := EscapeString(`a"b'c\d`); got != `a\"b\'c\\d` {
		t.Errorf(`EscapeString(a"b'c\d) = %s, want a\"b\'c\\d`, got)
	}
}
