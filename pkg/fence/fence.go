// Package fence keeps a resource safe from lock holders that lost their lock
// without knowing it.
//
// A lock holder can be paused (a GC pause, a slow network, a laptop lid) for longer
// than its session or connection lasts; the lock service then gives the lock to the
// next waiter, and the first holder, when it wakes, still believes it holds the lock
// and writes. Nothing the holder does can prevent this. The resource can: every
// grant of a Roster lock carries a fencing token that strictly increases per lock
// name (the KV revision of the write that granted it), the holder sends the token
// with every write, and the resource refuses a write whose token is lower than the
// highest it has already seen for that lock. The late writer's token is older than
// the new holder's, so its writes are refused once the new holder has written.
//
// Fencing is for writes made under an exclusive lock. The holders of a shared lock
// hold it at once, each with the token of its own grant (holders granted by one
// write share it): a Guard admits the latest of them and refuses the others as
// stale, although they still hold the lock.
//
// A Guard is the resource-side check for one process. A resource that is itself
// distributed must keep the highest token where it keeps the data, and compare and
// store it in the same atomic step as the write (a conditional update, a
// transaction, a compare-and-set).
package fence

import (
	"errors"
	"fmt"
	"sync"
)

// ErrStale is returned for a write whose token is lower than the highest seen.
var ErrStale = errors.New("fence: stale fencing token")

// ErrNoToken is returned for a write with token 0. Every grant's token is at least
// 1: a 0 is a token the writer never set (a field left empty, a holder that forgot
// its lock), and admitting it while no token had been seen let such a writer in
// until the first real holder wrote.
var ErrNoToken = errors.New("fence: no fencing token (0)")

// Guard remembers the highest fencing token seen per lock name. The zero value is
// ready to use; a Guard is safe for concurrent use. Names are independent: a write
// under one name never waits for a write under another.
type Guard struct {
	mu    sync.Mutex // guards names
	names map[string]*name
}

// name is one lock name's highest token; its mutex is held through Do's write.
type name struct {
	mu      sync.Mutex
	highest uint64
}

// name returns the entry of lock n, made on first use.
func (g *Guard) name(n string) *name {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.names[n]
	if e == nil {
		if g.names == nil {
			g.names = map[string]*name{}
		}
		e = &name{}
		g.names[n] = e
	}
	return e
}

// Check admits a write under lock name with token: it succeeds when token is at
// least the highest token seen for name (a holder writes many times with its one
// token), and records token as the highest. Otherwise it returns an error matching
// ErrStale, or ErrNoToken for token 0, and records nothing.
func (g *Guard) Check(name string, token uint64) error {
	e := g.name(name)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.check(name, token)
}

func (e *name) check(n string, token uint64) error {
	if token == 0 {
		return fmt.Errorf("%w: lock %q", ErrNoToken, n)
	}
	if token < e.highest {
		return fmt.Errorf("%w: lock %q token %d is below %d", ErrStale, n, token, e.highest)
	}
	e.highest = token
	return nil
}

// Do runs write if token is admitted for name, holding name's entry for the
// duration so that no write under name with a lower token can interleave; writes
// under other names run meanwhile. A failed write still records the token: a newer
// holder has shown up, and older ones must stay out.
func (g *Guard) Do(name string, token uint64, write func() error) error {
	e := g.name(name)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check(name, token); err != nil {
		return err
	}
	return write()
}

// Highest returns the highest token seen for name (0 if none).
func (g *Guard) Highest(name string) uint64 {
	g.mu.Lock()
	e := g.names[name]
	g.mu.Unlock()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.highest
}
