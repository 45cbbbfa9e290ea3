package messaging

import (
	"cmp"
	"context"
	"math/bits"
	"slices"
	"strings"
	"sync"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/filter"
)

// index holds every live session of the instance and an inverted index over their
// properties, so that a filter's plan picks candidates without a scan.
//
// Storage is compact because an instance holds every session: strings are interned
// (a key, value or delivery key shared by many sessions is stored once, refcounted),
// each session lives in a small integer slot, its properties are (key, value) pairs
// of string ids, and posting lists are sorted slices of slots (a list of one slot, for
// a value only one session has, is a map entry without a slice). A session costs
// about its id, 8 bytes per property in its entry and 8 per property in posting
// lists (the value list and the "has" list), plus its unique strings.
//
// index is safe for concurrent use: selections share a read lock, changes take the
// write lock, so a session removed by remove is never selected afterwards.
type index struct {
	mu      sync.RWMutex
	strs    interner
	slots   map[string]uint32 // session id -> slot
	entries []entry           // by slot; id == "" marks a free slot
	free    []uint32
	// postings maps (key, value) to the sorted slots of sessions having that
	// property value; (key, 0) to those having the key at all. A list of one slot is
	// in single instead (addPosting).
	postings map[uint64][]uint32
	single   map[uint64]uint32
	// roles maps a role's string id to the sorted slots of sessions having it.
	roles    map[uint32][]uint32
	rolesKey uint32 // string id of "$Roles", held for the index's lifetime
}

// entry is one session.
type entry struct {
	id          string
	deliveryKey uint32   // string id of the connection key of its delivery subjects
	props       []uint32 // key, value string ids, pairs sorted by key id
}

func newIndex() *index {
	ix := &index{
		slots:    map[string]uint32{},
		postings: map[uint64][]uint32{},
		single:   map[uint64]uint32{},
		roles:    map[uint32][]uint32{},
	}
	ix.rolesKey = ix.strs.intern(filter.RolesKey)
	return ix
}

func postingKey(k, v uint32) uint64 { return uint64(k)<<32 | uint64(v) }

// len returns the number of sessions.
func (ix *index) len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.slots)
}

// upsert adds session id, or replaces its delivery key and properties.
func (ix *index) upsert(id, deliveryKey string, props map[string]string) {
	pairs := make([]uint32, 0, 2*len(props))
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for k, v := range props {
		pairs = append(pairs, ix.strs.intern(k), ix.strs.intern(v))
	}
	sortPairs(pairs)
	dk := ix.strs.intern(deliveryKey)

	slot, ok := ix.slots[id]
	if !ok {
		if n := len(ix.free); n > 0 {
			slot = ix.free[n-1]
			ix.free = ix.free[:n-1]
		} else {
			slot = uint32(len(ix.entries))
			ix.entries = append(ix.entries, entry{})
		}
		ix.slots[id] = slot
		ix.entries[slot] = entry{id: id, deliveryKey: dk, props: pairs}
		for i := 0; i < len(pairs); i += 2 {
			ix.addPair(slot, pairs[i], pairs[i+1])
		}
		return
	}
	e := &ix.entries[slot]
	old := e.props
	// Merge the old and new pairs (both sorted by key): postings change only for
	// properties that changed.
	i, j := 0, 0
	for i < len(old) || j < len(pairs) {
		switch {
		case j >= len(pairs) || i < len(old) && old[i] < pairs[j]:
			ix.removePair(slot, old[i], old[i+1])
			i += 2
		case i >= len(old) || pairs[j] < old[i]:
			ix.addPair(slot, pairs[j], pairs[j+1])
			j += 2
		default: // same key
			if old[i+1] != pairs[j+1] {
				ix.changeValue(slot, old[i], old[i+1], pairs[j+1])
			}
			i, j = i+2, j+2
		}
	}
	// Release the old references only now, so strings still used are not freed.
	for _, s := range old {
		ix.strs.release(s)
	}
	ix.strs.release(e.deliveryKey)
	e.props = pairs
	e.deliveryKey = dk
}

// remove forgets session id; it reports whether the session was known.
func (ix *index) remove(id string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	slot, ok := ix.slots[id]
	if !ok {
		return false
	}
	e := &ix.entries[slot]
	for i := 0; i < len(e.props); i += 2 {
		ix.removePair(slot, e.props[i], e.props[i+1])
	}
	for _, s := range e.props {
		ix.strs.release(s)
	}
	ix.strs.release(e.deliveryKey)
	*e = entry{}
	delete(ix.slots, id)
	ix.free = append(ix.free, slot)
	return true
}

func (ix *index) addPair(slot, k, v uint32) {
	ix.addPosting(postingKey(k, v), slot)
	ix.addPosting(postingKey(k, 0), slot)
	if k == ix.rolesKey {
		ix.forRoles(v, func(role string) {
			r := ix.strs.intern(roleString(role)) // one reference per posting
			ix.roles[r] = insertSorted(ix.roles[r], slot)
		})
	}
}

func (ix *index) removePair(slot, k, v uint32) {
	ix.dropPosting(postingKey(k, v), slot)
	ix.dropPosting(postingKey(k, 0), slot)
	if k == ix.rolesKey {
		ix.forRoles(v, func(role string) {
			r, ok := ix.strs.lookup(roleString(role))
			if !ok {
				return
			}
			if l := removeSorted(ix.roles[r], slot); len(l) == 0 {
				delete(ix.roles, r)
			} else {
				ix.roles[r] = l
			}
			ix.strs.release(r)
		})
	}
}

func (ix *index) changeValue(slot, k, from, to uint32) {
	if k == ix.rolesKey {
		ix.removePair(slot, k, from)
		ix.addPair(slot, k, to)
		return
	}
	ix.dropPosting(postingKey(k, from), slot)
	ix.addPosting(postingKey(k, to), slot)
}

// addPosting adds slot to the posting list of key. A list of one slot — that of a
// value only one session has, such as its id or start time — is kept in ix.single,
// which costs no slice.
func (ix *index) addPosting(key uint64, slot uint32) {
	if l, ok := ix.postings[key]; ok {
		ix.postings[key] = insertSorted(l, slot)
		return
	}
	s, ok := ix.single[key]
	switch {
	case !ok:
		ix.single[key] = slot
	case s != slot:
		delete(ix.single, key)
		ix.postings[key] = []uint32{min(s, slot), max(s, slot)}
	}
}

func (ix *index) dropPosting(key uint64, slot uint32) {
	if s, ok := ix.single[key]; ok {
		if s == slot {
			delete(ix.single, key)
		}
		return
	}
	switch l := removeSorted(ix.postings[key], slot); len(l) {
	case 0:
		delete(ix.postings, key)
	case 1:
		delete(ix.postings, key)
		ix.single[key] = l[0]
	default:
		ix.postings[key] = l
	}
}

// posting returns the posting list of key: callers must not modify it.
func (ix *index) posting(key uint64) []uint32 {
	if l, ok := ix.postings[key]; ok {
		return l
	}
	if s, ok := ix.single[key]; ok {
		return []uint32{s}
	}
	return nil
}

// forRoles calls fn with each distinct role in the canonical roles string with id
// v. A malformed $Roles holds no roles, as for the filter.
func (ix *index) forRoles(v uint32, fn func(role string)) {
	roles, err := filter.StringToRoles(ix.strs.str(v))
	if err != nil {
		return
	}
	slices.Sort(roles)
	for _, r := range slices.Compact(roles) {
		fn(r)
	}
}

// selection is the result of select: the candidate slots and how they were found.
type selection struct {
	slots     []uint32
	indexUsed bool
	// exact: the slots are the sessions the filter matches (filter.Plan.Exact, as
	// long as the index followed the plan).
	exact bool
}

// selectBudget is how many posting-list entries and atom values a plan's lookups may
// visit, under the index's read lock, before the index gives up narrowing: a few scans
// of the index. A filter chooses its plan, and the work of intersecting and merging
// lists is the sum of their lengths: 16 terms of a thousand atoms each selecting
// every session intersected 100,000 sessions 16,000 times, seconds during which every
// session change waited for the lock, with no look at the request's context. Past the
// budget every session is a candidate and CEL confirms each, outside the lock, a
// chunk at a time, as it does for a filter the index cannot narrow.
func (ix *index) selectBudget() int { return 32*len(ix.slots) + 4096 }

// selectPlan returns the slots the plan selects, sorted: every slot when the plan is
// Full or narrowing would cost more than selectBudget. The caller holds ix.mu for
// reading.
func (ix *index) selectPlan(p filter.Plan) selection {
	if !p.Full {
		budget := ix.selectBudget()
		if slots, ok := ix.narrow(p, &budget); ok {
			return selection{slots: slots, indexUsed: true, exact: p.Exact}
		}
	}
	all := make([]uint32, 0, len(ix.slots))
	for slot := range ix.entries {
		if ix.entries[slot].id != "" {
			all = append(all, uint32(slot))
		}
	}
	return selection{slots: all, exact: p.Full && p.Exact}
}

// narrow returns the union of the plan's terms, or false once the lookups have
// visited more than *budget entries.
func (ix *index) narrow(p filter.Plan, budget *int) ([]uint32, bool) {
	lists := make([][]uint32, 0, len(p.Terms))
	for _, term := range p.Terms {
		l, ok := ix.selectTerm(term, budget)
		if !ok {
			return nil, false
		}
		if len(l) > 0 {
			lists = append(lists, l)
		}
	}
	return ix.unionAll(lists), true
}

// selectTerm intersects the lookups of a term's atoms, smallest first, or returns
// false once they have visited more than *budget entries. Intersecting costs at most
// the lengths of the lists, which the lookups charged.
func (ix *index) selectTerm(term []filter.Atom, budget *int) ([]uint32, bool) {
	lists := make([][]uint32, 0, len(term))
	for _, a := range term {
		l := ix.lookup(a, budget)
		if *budget < 0 {
			return nil, false
		}
		if len(l) == 0 {
			return nil, true
		}
		lists = append(lists, l)
	}
	if len(lists) == 0 {
		return nil, true
	}
	slices.SortFunc(lists, func(a, b []uint32) int { return cmp.Compare(len(a), len(b)) })
	out := slices.Clone(lists[0])
	for _, l := range lists[1:] {
		out = intersect(out, l)
		if len(out) == 0 {
			return nil, true
		}
	}
	return out, true
}

// lookup returns the slots one atom selects, charging *budget for each value looked
// up and each entry of the lists found (and a merge's bit per slot); it may stop
// early once *budget is spent. The result may be a posting list itself: callers must
// not modify it.
func (ix *index) lookup(a filter.Atom, budget *int) []uint32 {
	*budget--
	if a.Role {
		if len(a.Values) == 0 {
			return nil
		}
		r, ok := ix.strs.lookup(roleString(a.Values[0]))
		if !ok {
			return nil
		}
		*budget -= len(ix.roles[r])
		return ix.roles[r]
	}
	k, ok := ix.strs.lookup(a.Key)
	if !ok {
		return nil
	}
	if a.Values == nil {
		l := ix.posting(postingKey(k, 0))
		*budget -= len(l)
		return l
	}
	var lists [][]uint32
	for _, v := range a.Values {
		if *budget < 0 {
			return nil
		}
		*budget--
		if vid, ok := ix.strs.lookup(v); ok {
			if l := ix.posting(postingKey(k, vid)); len(l) > 0 {
				*budget -= len(l)
				lists = append(lists, l)
			}
		}
	}
	if len(lists) > 2 {
		*budget -= len(ix.entries) / 64 // unionAll's set
	}
	if *budget < 0 {
		return nil
	}
	return ix.unionAll(lists)
}

// unionAll merges sorted lists of slots into one sorted list without duplicates, in
// one pass over them and a bit per slot. Merged pairwise, the growing result was
// copied once per list, quadratic in their number: a 16 KiB filter's "in" list over
// 100,000 sessions allocated 170 MB and held the read lock 130 ms on every send. The
// result may be one of the lists itself: callers must not modify it.
func (ix *index) unionAll(lists [][]uint32) []uint32 {
	switch len(lists) {
	case 0:
		return nil
	case 1:
		return lists[0]
	case 2:
		return union(lists[0], lists[1])
	}
	set := make([]uint64, (len(ix.entries)+63)/64)
	n := 0
	for _, l := range lists {
		for _, slot := range l {
			w, bit := &set[slot/64], uint64(1)<<(slot%64)
			if *w&bit == 0 {
				*w |= bit
				n++
			}
		}
	}
	out := make([]uint32, 0, n)
	for i, w := range set {
		for w != 0 {
			out = append(out, uint32(i*64+bits.TrailingZeros64(w)))
			w &= w - 1
		}
	}
	return out
}

// props fills m (cleared first) with the properties of the session in slot.
// The caller holds ix.mu for reading.
func (ix *index) props(slot uint32, m map[string]string) {
	clear(m)
	p := ix.entries[slot].props
	for i := 0; i < len(p); i += 2 {
		m[ix.strs.str(p[i])] = ix.strs.str(p[i+1])
	}
}

// target is a session selected for delivery.
type target struct {
	id          string
	deliveryKey string
}

// selectFilter returns the sessions matching f, the number of candidates the plan
// produced, and whether the index narrowed them. CEL confirms each candidate —
// outside the lock: a filter may cost milliseconds a session, and the view applies
// every session change under its own lock while waiting for this one's, so holding
// it across the evaluation would stall every other request of the process. The
// candidates' properties are copied under the lock a chunk at a time; a candidate
// removed (or its slot reused) since the plan is left out. The confirmation, which
// an expensive filter over many sessions can make last minutes, gives up when ctx
// ends: at the request's deadline (timeout), or when the service stops
// (unavailable).
func (ix *index) selectFilter(ctx context.Context, f *filter.Filter) (targets []target, candidates int, indexUsed bool, err error) {
	plan := f.Plan()
	ix.mu.RLock()
	sel := ix.selectPlan(plan)
	candidates, indexUsed = len(sel.slots), sel.indexUsed
	if sel.exact {
		targets = make([]target, 0, len(sel.slots))
		for _, slot := range sel.slots {
			e := &ix.entries[slot]
			targets = append(targets, target{id: e.id, deliveryKey: ix.strs.str(e.deliveryKey)})
		}
		ix.mu.RUnlock()
		return targets, candidates, indexUsed, nil
	}
	// The plan's slots may be a posting list the index changes once unlocked.
	slots := slices.Clone(sel.slots)
	ids := make([]string, len(slots))
	for i, slot := range slots {
		ids[i] = ix.entries[slot].id
	}
	ix.mu.RUnlock()

	var chunk [confirmChunk]struct {
		t     target
		props map[string]string
	}
	for i := range chunk {
		chunk[i].props = make(map[string]string, 16)
	}
	for start := 0; start < len(slots); start += confirmChunk {
		if err := endpoint.Interrupted(ctx, "the messaging service is stopping"); err != nil {
			return nil, candidates, indexUsed, err
		}
		n := min(confirmChunk, len(slots)-start)
		ix.mu.RLock()
		for j := range n {
			slot, id := slots[start+j], ids[start+j]
			c := &chunk[j]
			if e := &ix.entries[slot]; e.id != id {
				c.t.id = "" // gone since the plan
			} else {
				c.t = target{id: id, deliveryKey: ix.strs.str(e.deliveryKey)}
				ix.props(slot, c.props)
			}
		}
		ix.mu.RUnlock()
		for j := range n {
			if c := &chunk[j]; c.t.id != "" && f.Matches(c.props) {
				targets = append(targets, c.t)
			}
		}
	}
	return targets, candidates, indexUsed, nil
}

// confirmChunk is how many candidates selectFilter copies per hold of the lock.
const confirmChunk = 64

// get returns the delivery target of session id.
func (ix *index) get(id string) (target, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	slot, ok := ix.slots[id]
	if !ok {
		return target{}, false
	}
	return target{id: id, deliveryKey: ix.strs.str(ix.entries[slot].deliveryKey)}, true
}

// sortPairs sorts (key, value) pairs by key.
func sortPairs(p []uint32) {
	n := len(p) / 2
	// Insertion sort: sessions have few properties.
	for i := 1; i < n; i++ {
		for j := i; j > 0 && p[2*j] < p[2*(j-1)]; j-- {
			p[2*j], p[2*(j-1)] = p[2*(j-1)], p[2*j]
			p[2*j+1], p[2*(j-1)+1] = p[2*(j-1)+1], p[2*j+1]
		}
	}
}

func insertSorted(l []uint32, x uint32) []uint32 {
	i, found := slices.BinarySearch(l, x)
	if found {
		return l
	}
	return slices.Insert(l, i, x)
}

func removeSorted(l []uint32, x uint32) []uint32 {
	i, found := slices.BinarySearch(l, x)
	if !found {
		return l
	}
	l = slices.Delete(l, i, i+1)
	if cap(l) > 64 && len(l) < cap(l)/4 {
		l = slices.Clip(slices.Clone(l)) // give memory back after mass removals
	}
	return l
}

// union merges two sorted lists into a new sorted list without duplicates.
func union(a, b []uint32) []uint32 {
	if len(a) == 0 {
		return slices.Clone(b)
	}
	if len(b) == 0 {
		return a
	}
	out := make([]uint32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// intersect keeps in a (modified in place) the elements also in b.
func intersect(a, b []uint32) []uint32 {
	out := a[:0]
	j := 0
	for _, x := range a {
		// Galloping would help for very unequal sizes; binary search does.
		if len(b)-j > 8*len(a) {
			k, found := slices.BinarySearch(b[j:], x)
			j += k
			if found {
				out = append(out, x)
			}
			continue
		}
		for j < len(b) && b[j] < x {
			j++
		}
		if j < len(b) && b[j] == x {
			out = append(out, x)
		}
	}
	return out
}

// roleString is how a role is interned: prefixed with a NUL byte, so that roles and
// property strings are separate namespaces with separate references.
func roleString(r string) string { return "\x00" + r }

// interner maps strings to small ids, refcounted so that unused strings are freed.
// Id 0 is never used (it marks "any value" in posting keys).
type interner struct {
	ids  map[string]uint32
	strs []string
	refs []uint32
	free []uint32
}

func (in *interner) intern(s string) uint32 {
	if in.ids == nil {
		in.ids = map[string]uint32{}
		in.strs = []string{""}
		in.refs = []uint32{0}
	}
	if id, ok := in.ids[s]; ok {
		in.refs[id]++
		return id
	}
	s = strings.Clone(s) // own it: do not pin the buffer the caller's string lives in
	var id uint32
	if n := len(in.free); n > 0 {
		id = in.free[n-1]
		in.free = in.free[:n-1]
		in.strs[id], in.refs[id] = s, 1
	} else {
		id = uint32(len(in.strs))
		in.strs = append(in.strs, s)
		in.refs = append(in.refs, 1)
	}
	in.ids[s] = id
	return id
}

func (in *interner) lookup(s string) (uint32, bool) {
	id, ok := in.ids[s]
	return id, ok
}

func (in *interner) str(id uint32) string { return in.strs[id] }

func (in *interner) release(id uint32) {
	if id == 0 {
		return
	}
	in.refs[id]--
	if in.refs[id] == 0 {
		delete(in.ids, in.strs[id])
		in.strs[id] = ""
		in.free = append(in.free, id)
	}
}
