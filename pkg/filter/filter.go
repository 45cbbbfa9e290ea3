package filter

import (
	"container/list"
	"context"
	"runtime"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// Filter is a compiled session filter. It is immutable and safe for
// concurrent use.
type Filter struct {
	text string      // the filter as written
	root node        // the parsed filter; nil for CompileCEL filters
	cel  string      // the CEL the filter compiled to
	prg  cel.Program // the planned CEL program
}

// Compile parses a filter written in the session-filter language and
// compiles it to a CEL program. Syntax errors are *SyntaxError. Compiled
// filters are cached by their exact text, so compiling the same text again
// is cheap and returns the same *Filter.
func Compile(expr string) (*Filter, error) {
	return CompileContext(context.Background(), expr)
}

// CompileContext is Compile for a server compiling the filters its clients send. A
// filter not in the cache is compiled in one of a few slots (half the CPUs, at least
// one): compiling one near MaxLength costs tens to hundreds of milliseconds of CPU,
// and clients sending distinct ones as fast as they can would otherwise take every
// CPU from every other request. A compile waits for a slot until ctx ends, and then
// returns ctx's error (matching context.DeadlineExceeded or context.Canceled). A
// filter in the cache, or one that does not parse, needs no slot.
func CompileContext(ctx context.Context, expr string) (*Filter, error) {
	key := cacheKey{text: expr}
	if f := filters.get(key); f != nil {
		return f, nil
	}
	root, err := parse(expr)
	if err != nil {
		return nil, err
	}
	select {
	case compileSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-compileSlots }()
	// Compiled meanwhile, by the request that held the slot.
	if f := filters.get(key); f != nil {
		return f, nil
	}
	if compiling != nil {
		compiling(expr)
	}
	f, err := compileNode(expr, root)
	if err != nil {
		return nil, err
	}
	filters.put(key, f)
	return f, nil
}

// compileSlots bounds the compiles of CompileContext running at once.
var compileSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))

// compiling, when set (by tests), is called with the text of a compile holding a
// slot.
var compiling func(expr string)

// compileNode compiles a parsed filter whose text is expr.
func compileNode(expr string, root node) (*Filter, error) {
	src := toCEL(root)
	prg, err := planGenerated(src, countClauses(root))
	if err != nil {
		return nil, err
	}
	return &Filter{text: expr, root: root, cel: src, prg: prg}, nil
}

// CompileCEL compiles a raw CEL expression over the variables props, a
// map(string, string) of the session's properties, and roles, a
// list(string) of the roles in its $Roles property. The function
// hasRole(props, role) is also available. The expression must have type
// bool and an estimated cost within MaxCost; evaluation is stopped, and
// Matches returns false, once its actual cost exceeds MaxCost. The plan of a
// CEL filter is always Full. Compiled expressions are cached by text.
func CompileCEL(expr string) (*Filter, error) {
	key := cacheKey{text: expr, cel: true}
	if f := filters.get(key); f != nil {
		return f, nil
	}
	prg, err := compileProgram(expr)
	if err != nil {
		return nil, err
	}
	f := &Filter{text: expr, cel: expr, prg: prg}
	filters.put(key, f)
	return f, nil
}

// Matches reports whether a session with the given properties matches the
// filter. It returns false if evaluation fails.
func (f *Filter) Matches(props map[string]string) bool {
	out, _, err := f.prg.Eval(activation(props))
	return err == nil && out == types.True
}

// MatchesSplit is Matches over the union of fixed and user, fixed winning for a key
// in both, without building the union: a session record keeps its fixed ($) and
// user properties apart.
func (f *Filter) MatchesSplit(fixed, user map[string]string) bool {
	out, _, err := f.prg.Eval(&splitProps{fixed: fixed, user: user})
	return err == nil && out == types.True
}

// String returns the filter as written.
func (f *Filter) String() string { return f.text }

// CEL returns the CEL expression the filter compiled to.
func (f *Filter) CEL() string { return f.cel }

// Canonical returns the filter printed from its parsed form: keywords in
// lower case, strings double-quoted, lists bracketed, and parentheses around
// every nested "and" or "or". It compiles to a filter matching the same
// sessions, provided it is at most MaxLength bytes long: it can be longer than
// the text (a list such as 'a' 'b' becomes ["a", "b"], '"' becomes "\""),
// so the canonical form of a filter near MaxLength may not compile. For a
// CompileCEL filter it returns the CEL as written.
func (f *Filter) Canonical() string {
	if f.root == nil {
		return f.text
	}
	var b strings.Builder
	f.root.print(&b, false)
	return b.String()
}

// Redacted returns the canonical form with every value compared with a property
// written as ?: the filter's keys, operators and roles without the values it looks
// for, which may be anything a session keeps in a property (a name, an e-mail
// address). It is what may go where the filter's sender is not the only reader, as
// traces. A CompileCEL filter, whose values are not told apart, is ?.
func (f *Filter) Redacted() string {
	if f.root == nil {
		return "?"
	}
	var b strings.Builder
	f.root.print(&b, true)
	return b.String()
}

// cacheSize bounds the number of compiled filters kept; cacheBudget their memory,
// as estimated by Filter.weight. Anyone allowed to send to a filter chooses its text,
// so a count alone would let 4,096 filters of MaxLength keep over 4 GB.
const (
	cacheSize   = 4096
	cacheBudget = 32 << 20
)

// Weights of a compiled filter, measured (TestWeightCoversMemory) and rounded up.
// What a filter keeps does not follow its text's length alone: 16 KiB of roles
// (hasRoles and empty strings, two bytes a role) keep 4.4 MB, 16 KiB of values in
// one "in" list 0.3 MB when they repeat and 0.74 MB when they differ (4,096 values of
// two characters, which byte and clause alone weighed at 0.39 MB).
const (
	weightBase    = 2048 // a filter of one short clause
	weightByte    = 24   // per byte of text: the text, the parsed values, the CEL and its constants
	weightClause  = 1536 // per equality, "ne" or "in" clause: its CEL calls and their planning
	weightCheap   = 640  // per "has" clause, and per role of a hasRoles clause
	weightValue   = 128  // per distinct value of an "in" list: its entry in the set a checked program looks values up in, and its type
	weightCELByte = 70   // per byte of a CompileCEL expression, whose structure is not known here
)

// weighNode estimates the memory the clauses of n keep once compiled.
func weighNode(n node) int {
	return sumLeaves(n, func(leaf node) int {
		switch leaf := leaf.(type) {
		case cmpNode:
			return weightClause
		case inNode:
			values := slices.Clone(leaf.values)
			slices.Sort(values)
			return weightClause + weightValue*len(slices.Compact(values))
		case hasNode:
			return weightCheap
		case rolesNode:
			return weightCheap * len(leaf.roles)
		}
		return 0
	})
}

// weight is the memory the cache counts f at: an estimate, from its clauses when
// it was written in the filter language.
func (f *Filter) weight() int {
	if f.root == nil {
		return weightBase + weightCELByte*len(f.text)
	}
	return weightBase + weightByte*len(f.text) + weighNode(f.root)
}

// filters caches compiled filters by text.
var filters = newCache(cacheSize, cacheBudget)

// cacheKey identifies a compiled filter: its text and which compiler.
type cacheKey struct {
	text string
	cel  bool
}

type cacheEntry struct {
	key    cacheKey
	f      *Filter
	weight int
}

// cache is a concurrency-safe LRU cache of compiled filters, bounded in count and in
// estimated memory.
type cache struct {
	mu     sync.Mutex
	max    int
	budget int
	used   int
	order  *list.List // of *cacheEntry, most recently used first
	items  map[cacheKey]*list.Element
}

func newCache(size, budget int) *cache {
	return &cache{max: size, budget: budget, order: list.New(), items: make(map[cacheKey]*list.Element)}
}

func (c *cache) get(k cacheKey) *Filter {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).f
}

func (c *cache) put(k cacheKey, f *Filter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return
	}
	w := f.weight()
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, f: f, weight: w})
	c.used += w
	for c.order.Len() > c.max || c.used > c.budget {
		last := c.order.Back()
		ce := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.items, ce.key)
		c.used -= ce.weight
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
