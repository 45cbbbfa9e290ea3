// Package filter compiles session filters to CEL programs, matches them
// against session properties, and plans index lookups for them.
//
// Sessions have string properties. Fixed properties start with '$' ($SessionId,
// $Principal, $Roles, $Country, ...). $Roles holds the session's roles in
// canonical form: each role double-quoted, with '"' and '\' escaped by a
// backslash, sorted, deduplicated and joined by commas with no spaces, e.g.
// "admin","client" (see RolesToString and StringToRoles).
//
// # Grammar
//
// A filter is a query over properties in Diffusion's session-filter language:
//
//	filter  = or
//	or      = and { "or" and }
//	and     = unary { "and" unary }
//	unary   = "not" unary | primary
//	primary = "(" or ")" | "all" | "has" key | "hasRoles" list
//	        | key ("is" | "eq" | "ne") string | key "in" list
//	list    = "[" items "]" | "{" items "}" | items
//	items   = string { [","] string }
//	string  = '…' or "…"; inside, \" \' and \\ escape a quote or a backslash
//	key     = a run of characters other than white space, quotes, ( ) [ ] { } and ,
//
// White space, which separates tokens, is space, tab, CR and LF: the characters
// seed 002 forbids in property keys. Any other character, a no-break space or a
// control character included, is part of a key or keyword.
//
// Keywords (all, and, eq, has, hasRoles, in, is, ne, not, or) are matched
// without regard to case and are reserved: a keyword in any letter case is
// never a property key, so "has and" and "Is is 'x'" are errors. Property keys
// and values are case-sensitive. A session may have a property whose key no
// filter can name, one holding [ ] { } or , or spelled as a keyword: naming it
// is a syntax error. A backslash in a string must be followed by a quote or a
// backslash; any other escape is an error. EscapeString escapes a value for
// either quote. Filters must be valid UTF-8, at most MaxLength bytes long, and
// nest parentheses and "not" at most MaxDepth deep.
//
// Examples:
//
//	Department is "Accounts"
//	(Department is "Accounts" or Department is "Payroll") and Status is "Closed"
//	not (Department is "Payroll" or Department is "Accounts")
//	$Language EQ "en" and $Country NE "US"
//	$Country in 'UK','DE','FR'
//	hasRoles ["operator"] and not hasRoles ["administrator"]
//	$Roles eq '"admin","client"'
//
// # Semantics
//
//   - k is v and k eq v: the property k is present and equal to v.
//   - k ne v: exactly not (k is v); a session without k is "not equal".
//   - k in [v1, v2]: k is present and equal to one of the values.
//   - has k: k is present; an empty value counts.
//   - hasRoles [r1 r2]: the session has every listed role, and maybe others.
//     Roles are parsed from $Roles, never matched as substrings; a session
//     whose $Roles is missing or malformed has no roles.
//   - all: every session.
//   - "and" binds tighter than "or"; parentheses override; "not" applies to the
//     clause or parenthesised group after it.
//
// # CEL mapping
//
// Compile translates the filter to CEL over the variable props, a
// map(string, string), and compiles it once in a shared environment:
//
//	k is "v", k eq "v"   ("k" in props && props["k"] == "v")
//	k ne "v"             !("k" in props && props["k"] == "v")
//	k in ["a", "b"]      ("k" in props && props["k"] in ["a", "b"])
//	has k                "k" in props
//	hasRoles ["a" "b"]   (hasRole(props, "a") && hasRole(props, "b"))
//	all                  true
//	not x                !x
//	x and y, x or y      (x && y), (x || y)
//
// Keys and values become double-quoted CEL string literals with quotes,
// backslashes and non-printable runes escaped. hasRole is a Go function that
// parses $Roles without allocating.
//
// CompileCEL accepts a raw CEL expression of type bool over props, roles (a
// list(string) parsed from $Roles) and hasRole. Its estimated cost, for a
// session of at most MaxCELProperties properties and roles with keys, values
// and roles at most MaxCELValueLen long, must not exceed MaxCost, and each
// evaluation stops at an actual cost of MaxCost. Matches returns false when
// evaluation fails for any reason.
//
// Compiled filters are cached by text in a bounded LRU cache shared by the
// package; filters are immutable and safe for concurrent use.
//
// # Index plans
//
// Filter.Plan describes how a service keeping an inverted index
// (property, value) -> sessions and role -> sessions can select candidates:
// the union over Plan.Terms of the intersection of each term's atoms, or
// every session when Plan.Full is set. The candidates are always a superset
// of the sessions the filter matches; Matches confirms each one, unless
// Plan.Exact says the candidates are exactly the matches ("all", equality, "in"
// and "has" clauses, and "and", "or" and "not" of those, as long as no conjunction
// was cut to MaxPlanTerms). Equality,
// "in", "has" and "hasRoles" are indexable; "ne", negated clauses and "all"
// are not. "not" is pushed inwards first, so "not (a ne 'x')" is indexable.
// A conjunction drops non-indexable operands (Full only if none is left) and
// distributes over disjunctions while the number of terms stays within
// MaxPlanTerms, otherwise keeping its most selective-looking operand. A
// disjunction with any Full operand is Full. $Roles eq '…' is an ordinary
// equality atom on the key $Roles. A CompileCEL filter's plan is Full.
//
// # Errors
//
// Compile reports filters outside the grammar as *SyntaxError. Its Pos is a
// 0-based byte offset into the filter text: the start of the offending token,
// the opening quote of an unterminated string, the backslash of a bad
// escape, or len(text) at the end of the input. Expected says what the
// grammar allows there and Found what was there instead.
package filter
