// Package lockcheck is a linearizability model of Roster's locks for the porcupine
// checker, shared by the lock service's tests and the cluster tests in integration/.
//
// The state is, per lock name, the holders (session, mode, token) and the highest
// token granted so far. Operations are acquire (granted with a token, or not) and
// release. A history is accepted only if no exclusive holder ever overlaps another
// holder, and every grant's token is higher than every earlier one (or, for shared
// holders granted by one write, equal to the current shared holders' token).
package lockcheck

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Input is one operation: an acquire or a release of a lock by a session.
type Input struct {
	Name    string
	Session string
	Op      string // "acquire" or "release"
	Mode    wire.LockMode
}

// Output is an operation's outcome: granted (with the fencing token) or released.
type Output struct {
	OK    bool
	Token uint64
}

type hold struct {
	session string
	mode    wire.LockMode
	token   uint64
}

type lockState struct {
	holders []hold // sorted by session
	max     uint64
}

func (s lockState) find(session string) (hold, bool) {
	for _, h := range s.holders {
		if h.session == session {
			return h, true
		}
	}
	return hold{}, false
}

// Model returns the porcupine model of Roster's locks, partitioned by lock name.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byName := map[string][]porcupine.Operation{}
			var names []string
			for _, op := range history {
				n := op.Input.(Input).Name
				if _, ok := byName[n]; !ok {
					names = append(names, n)
				}
				byName[n] = append(byName[n], op)
			}
			var out [][]porcupine.Operation
			for _, n := range names {
				out = append(out, byName[n])
			}
			return out
		},
		Init: func() any { return lockState{} },
		Step: func(state, input, output any) (bool, any) {
			st, in, out := state.(lockState), input.(Input), output.(Output)
			h, holds := st.find(in.Session)
			switch in.Op {
			case "release":
				if !out.OK || !holds {
					return !out.OK && !holds, st
				}
				next := lockState{max: st.max}
				for _, x := range st.holders {
					if x.session != in.Session {
						next.holders = append(next.holders, x)
					}
				}
				return true, next
			default: // acquire
				if holds {
					// A repeated acquire returns the equal lock.
					return out.OK && out.Token == h.token, st
				}
				if !out.OK {
					// Refused (try once, or its wait ended) only while someone holds it.
					return len(st.holders) > 0, st
				}
				compatible := len(st.holders) == 0 || (in.Mode == wire.LockShared && st.holders[0].mode == wire.LockShared)
				if !compatible {
					return false, st
				}
				if out.Token <= st.max {
					joins := in.Mode == wire.LockShared && out.Token == st.max && len(st.holders) > 0 &&
						slices.ContainsFunc(st.holders, func(x hold) bool { return x.token == st.max })
					if !joins {
						return false, st
					}
				}
				next := lockState{max: max(st.max, out.Token), holders: slices.Clone(st.holders)}
				next.holders = append(next.holders, hold{in.Session, in.Mode, out.Token})
				slices.SortFunc(next.holders, func(a, b hold) int { return strings.Compare(a.session, b.session) })
				return true, next
			}
		},
		Equal: func(a, b any) bool {
			x, y := a.(lockState), b.(lockState)
			return x.max == y.max && slices.Equal(x.holders, y.holders)
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(Input), output.(Output)
			if in.Op == "release" {
				return fmt.Sprintf("%s release(%s) -> %v", tail(in.Session), in.Name, out.OK)
			}
			return fmt.Sprintf("%s acquire(%s, %s) -> %v token %d", tail(in.Session), in.Name, in.Mode, out.OK, out.Token)
		},
	}
}

func tail(s string) string {
	if len(s) <= 4 {
		return s
	}
	return s[len(s)-4:]
}

// Recorder collects a history with timestamps from one monotonic clock; it is safe
// for concurrent use.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewRecorder starts a history.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now returns the time to pass as an operation's call time.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Add records an operation of client that was called at call and returns now.
func (r *Recorder) Add(client int, in Input, call int64, out Output) {
	ret := r.Now()
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
}

// Operations returns the history so far.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// Grants counts the granted acquires in ops.
func Grants(ops []porcupine.Operation) int {
	n := 0
	for _, op := range ops {
		if op.Input.(Input).Op == "acquire" && op.Output.(Output).OK {
			n++
		}
	}
	return n
}
