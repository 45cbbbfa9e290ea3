package filter

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"sync"
	"unicode"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/checker"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
)

// Names visible to CEL expressions.
const (
	propsVar    = "props"   // map(string, string): the session's properties
	rolesVar    = "roles"   // list(string): the roles parsed from $Roles
	hasRoleFunc = "hasRole" // hasRole(map(string, string), string) -> bool
)

// Bounds applied to CompileCEL expressions. The cost estimate assumes a
// session of at most MaxCELProperties properties, each key and value at most
// MaxCELValueLen characters long, and at most MaxCELProperties roles.
const (
	MaxCost          = 1_000_000
	MaxCELProperties = 256
	MaxCELValueLen   = 1024
)

// celEnv is the one CEL environment shared by all filters. A *cel.Env is safe
// for concurrent use once built.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	propsType := cel.MapType(cel.StringType, cel.StringType)
	return cel.NewEnv(
		cel.Variable(propsVar, propsType),
		cel.Variable(rolesVar, cel.ListType(cel.StringType)),
		// A singleton binding skips the per-call runtime check of the
		// argument types, which would iterate over the whole map.
		cel.Function(hasRoleFunc,
			cel.Overload("hasRole_map_string",
				[]*cel.Type{propsType, cel.StringType}, cel.BoolType),
			cel.SingletonBinaryBinding(hasRole)),
		cel.ParserExpressionSizeLimit(16*MaxLength),
	)
})

// hasRole implements hasRole(props, role): whether the canonical roles
// string in props["$Roles"] is well formed and holds role.
func hasRole(m, r ref.Val) ref.Val {
	role, ok := r.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(r)
	}
	var roles string
	switch mm := m.(type) {
	case propMap:
		roles = mm[RolesKey]
	case *splitProps:
		roles, _ = mm.lookup(RolesKey)
	case traits.Mapper:
		v, found := mm.Find(types.String(RolesKey))
		s, isString := v.(types.String)
		if !found || !isString {
			return types.False
		}
		roles = string(s)
	default:
		return types.MaybeNoSuchOverloadErr(m)
	}
	return types.Bool(rolesContain(roles, string(role)))
}

// toCEL translates a parsed filter to CEL text over props.
func toCEL(n node) string {
	var b strings.Builder
	writeCEL(&b, n)
	return b.String()
}

func writeCEL(b *strings.Builder, n node) {
	switch n := n.(type) {
	case allNode:
		b.WriteString("true")
	case notNode:
		if _, bare := n.x.(hasNode); bare {
			b.WriteString("!(")
			writeCEL(b, n.x)
			b.WriteString(")")
			return
		}
		b.WriteString("!")
		writeCEL(b, n.x)
	case andNode:
		writeJoined(b, n.xs, " && ")
	case orNode:
		writeJoined(b, n.xs, " || ")
	case cmpNode:
		if n.ne {
			b.WriteString("!")
		}
		b.WriteString("(")
		writePresent(b, n.key)
		b.WriteString(" && ")
		writeIndex(b, n.key)
		b.WriteString(" == ")
		celQuote(b, n.value)
		b.WriteString(")")
	case inNode:
		b.WriteString("(")
		writePresent(b, n.key)
		b.WriteString(" && ")
		writeIndex(b, n.key)
		b.WriteString(" in [")
		for i, v := range n.values {
			if i > 0 {
				b.WriteString(", ")
			}
			celQuote(b, v)
		}
		b.WriteString("])")
	case hasNode:
		writePresent(b, n.key)
	case rolesNode:
		b.WriteString("(")
		for i, r := range n.roles {
			if i > 0 {
				b.WriteString(" && ")
			}
			b.WriteString(hasRoleFunc + "(" + propsVar + ", ")
			celQuote(b, r)
			b.WriteString(")")
		}
		b.WriteString(")")
	default:
		panic(fmt.Sprintf("filter: unexpected node %T", n))
	}
}

func writeJoined(b *strings.Builder, xs []node, op string) {
	b.WriteString("(")
	for i, x := range xs {
		if i > 0 {
			b.WriteString(op)
		}
		writeCEL(b, x)
	}
	b.WriteString(")")
}

// writePresent writes the presence test `"key" in props`.
func writePresent(b *strings.Builder, key string) {
	celQuote(b, key)
	b.WriteString(" in " + propsVar)
}

// writeIndex writes the lookup `props["key"]`.
func writeIndex(b *strings.Builder, key string) {
	b.WriteString(propsVar + "[")
	celQuote(b, key)
	b.WriteString("]")
}

// celQuote writes s as a double-quoted CEL string literal. Quotes and
// backslashes are escaped, as is every rune that is not printable, so the
// literal never spans lines or hides control characters. s must be valid
// UTF-8.
func celQuote(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x80 && r >= 0x20 && r != 0x7f, r >= 0x80 && unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x10000:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			fmt.Fprintf(b, `\U%08x`, r)
		}
	}
	b.WriteByte('"')
}

// compileProgram type-checks CEL text, which must yield a bool, and plans it.
// Its estimated cost must be within MaxCost, and each evaluation is stopped
// once it exceeds MaxCost.
func compileProgram(expr string) (cel.Program, error) {
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("filter: building CEL environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("filter: invalid CEL: %w", iss.Err())
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("filter: CEL expression has type %s, want bool", t)
	}
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, fmt.Errorf("filter: estimating CEL cost: %w", err)
	}
	if est.Max > MaxCost {
		return nil, fmt.Errorf("filter: CEL expression too expensive: estimated cost up to %d, limit %d", est.Max, MaxCost)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(MaxCost))
	if err != nil {
		return nil, fmt.Errorf("filter: planning CEL: %w", err)
	}
	return prg, nil
}

// checkedClauses is the most clauses a generated expression may have for
// planGenerated to type-check it. The checker's time grows quadratically
// with the number of operators (each resolution of a generic overload copies
// the type mapping), passing 50ms near 100 clauses; a checked program is
// about twice as fast to evaluate and allocates less.
const checkedClauses = 32

// planGenerated plans CEL generated from a parsed filter of the given number
// of clauses. The text is well typed by construction, so beyond
// checkedClauses it is only parsed, keeping compilation linear in the
// filter's length. The program's cost is linear in the filter's length and
// the session's $Roles, so it needs no runtime cost limit.
func planGenerated(expr string, clauses int) (cel.Program, error) {
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("filter: building CEL environment: %w", err)
	}
	var ast *cel.Ast
	var iss *cel.Issues
	if clauses <= checkedClauses {
		ast, iss = env.Compile(expr)
	} else {
		ast, iss = env.Parse(expr)
	}
	if iss.Err() != nil {
		return nil, fmt.Errorf("filter: generated invalid CEL: %w", iss.Err())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("filter: planning CEL: %w", err)
	}
	return prg, nil
}

// countClauses returns the number of clauses in n, counting each role of a
// hasRoles clause.
func countClauses(n node) int {
	return sumLeaves(n, func(leaf node) int {
		if r, ok := leaf.(rolesNode); ok {
			return len(r.roles)
		}
		return 1
	})
}

// sumLeaves adds up value over the clauses of n: the nodes below its not, and and
// or.
func sumLeaves(n node, value func(node) int) int {
	switch n := n.(type) {
	case notNode:
		return sumLeaves(n.x, value)
	case andNode:
		return sumEach(n.xs, value)
	case orNode:
		return sumEach(n.xs, value)
	}
	return value(n)
}

func sumEach(xs []node, value func(node) int) int {
	total := 0
	for _, x := range xs {
		total += sumLeaves(x, value)
	}
	return total
}

// sizeEstimator bounds the sizes of props and roles for cost estimation.
type sizeEstimator struct{}

// EstimateSize implements checker.CostEstimator.
func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	path := n.Path()
	switch {
	case len(path) == 1 && (path[0] == propsVar || path[0] == rolesVar):
		return &checker.SizeEstimate{Min: 0, Max: MaxCELProperties}
	case len(path) == 2 && (path[0] == propsVar || path[0] == rolesVar):
		return &checker.SizeEstimate{Min: 0, Max: MaxCELValueLen}
	}
	return nil
}

// EstimateCallCost implements checker.CostEstimator.
func (sizeEstimator) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}

// activation binds props and roles to one session's properties without
// copying them. Being a map type, converting it to an interface does not
// allocate.
type activation map[string]string

// ResolveName implements interpreter.Activation.
func (a activation) ResolveName(name string) (any, bool) {
	switch name {
	case propsVar:
		return propMap(a), true
	case rolesVar:
		roles, err := StringToRoles(a[RolesKey])
		if err != nil {
			roles = nil
		}
		return types.NewStringList(types.DefaultTypeAdapter, roles), true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (activation) Parent() interpreter.Activation { return nil }

// propMap presents a map[string]string to CEL as a map(string, string)
// without copying it. Lookups do not allocate beyond boxing the result.
type propMap map[string]string

// boxed returns the stock CEL wrapper, used for the rarely needed operations.
func (m propMap) boxed() traits.Mapper {
	return types.NewStringStringMap(types.DefaultTypeAdapter, m)
}

// ConvertToNative implements ref.Val.
func (m propMap) ConvertToNative(t reflect.Type) (any, error) { return m.boxed().ConvertToNative(t) }

// ConvertToType implements ref.Val.
func (m propMap) ConvertToType(t ref.Type) ref.Val { return m.boxed().ConvertToType(t) }

// Equal implements ref.Val.
func (m propMap) Equal(other ref.Val) ref.Val { return m.boxed().Equal(other) }

// Type implements ref.Val.
func (propMap) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (m propMap) Value() any { return map[string]string(m) }

// Contains implements traits.Container.
func (m propMap) Contains(key ref.Val) ref.Val {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key)
	}
	_, found := m[string(k)]
	return types.Bool(found)
}

// Get implements traits.Indexer.
func (m propMap) Get(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

// Find implements traits.Mapper.
func (m propMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	v, found := m[string(k)]
	if !found {
		return nil, false
	}
	return types.String(v), true
}

// Iterator implements traits.Iterable. It iterates over the keys in an
// unspecified order, as CEL maps do.
func (m propMap) Iterator() traits.Iterator {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return &keyIterator{keys: keys}
}

// keyIterator iterates over a snapshot of a propMap's keys.
type keyIterator struct {
	keys []string
	next int
}

// ConvertToNative implements ref.Val.
func (it *keyIterator) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("filter: cannot convert a map iterator to a native type")
}

// ConvertToType implements ref.Val.
func (it *keyIterator) ConvertToType(ref.Type) ref.Val {
	return types.NewErrFromString("filter: cannot convert a map iterator to a CEL type")
}

// Equal implements ref.Val.
func (it *keyIterator) Equal(other ref.Val) ref.Val { return types.Bool(it == other) }

// Type implements ref.Val.
func (it *keyIterator) Type() ref.Type { return types.IteratorType }

// Value implements ref.Val.
func (it *keyIterator) Value() any { return it }

// HasNext implements traits.Iterator.
func (it *keyIterator) HasNext() ref.Val { return types.Bool(it.next < len(it.keys)) }

// Next implements traits.Iterator.
func (it *keyIterator) Next() ref.Val {
	if it.next >= len(it.keys) {
		return nil
	}
	k := it.keys[it.next]
	it.next++
	return types.String(k)
}

// Size implements traits.Sizer.
func (m propMap) Size() ref.Val { return types.Int(len(m)) }

// splitProps binds props to the union of two maps without building it: fixed (the
// $ properties) and user, fixed winning for a key in both, as a record's merged
// properties do. A session record keeps the two maps; a merged copy kept beside
// them cost a full view ~1.8 KB per session with a dozen properties.
type splitProps struct{ fixed, user map[string]string }

// ResolveName implements interpreter.Activation.
func (p *splitProps) ResolveName(name string) (any, bool) {
	switch name {
	case propsVar:
		return p, true
	case rolesVar:
		v, _ := p.lookup(RolesKey)
		roles, err := StringToRoles(v)
		if err != nil {
			roles = nil
		}
		return types.NewStringList(types.DefaultTypeAdapter, roles), true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (*splitProps) Parent() interpreter.Activation { return nil }

func (p *splitProps) lookup(k string) (string, bool) {
	if v, ok := p.fixed[k]; ok {
		return v, true
	}
	v, ok := p.user[k]
	return v, ok
}

// merged builds the union, for the rarely needed operations.
func (p *splitProps) merged() propMap {
	m := make(map[string]string, len(p.fixed)+len(p.user))
	maps.Copy(m, p.user)
	maps.Copy(m, p.fixed)
	return m
}

// ConvertToNative implements ref.Val.
func (p *splitProps) ConvertToNative(t reflect.Type) (any, error) {
	return p.merged().ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (p *splitProps) ConvertToType(t ref.Type) ref.Val { return p.merged().ConvertToType(t) }

// Equal implements ref.Val.
func (p *splitProps) Equal(other ref.Val) ref.Val { return p.merged().Equal(other) }

// Type implements ref.Val.
func (*splitProps) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (p *splitProps) Value() any { return map[string]string(p.merged()) }

// Contains implements traits.Container.
func (p *splitProps) Contains(key ref.Val) ref.Val {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key)
	}
	_, found := p.lookup(string(k))
	return types.Bool(found)
}

// Get implements traits.Indexer.
func (p *splitProps) Get(key ref.Val) ref.Val {
	v, found := p.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

// Find implements traits.Mapper.
func (p *splitProps) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	v, found := p.lookup(string(k))
	if !found {
		return nil, false
	}
	return types.String(v), true
}

// Iterator implements traits.Iterable.
func (p *splitProps) Iterator() traits.Iterator { return p.merged().Iterator() }

// Size implements traits.Sizer.
func (p *splitProps) Size() ref.Val { return p.merged().Size() }
