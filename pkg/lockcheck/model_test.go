package lockcheck_test

import (
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/seed-3c836eab/roster/pkg/lockcheck"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// step is one operation of a sequential history: each returns before the next is
// called, so the history has exactly one order to check.
type step struct {
	session string
	op      string // acquire or release
	mode    wire.LockMode
	out     lockcheck.Output
}

func acq(session string, mode wire.LockMode, ok bool, token uint64) step {
	return step{session, "acquire", mode, lockcheck.Output{OK: ok, Token: token}}
}

func rel(session string, ok bool) step {
	return step{session, "release", "", lockcheck.Output{OK: ok}}
}

func history(steps ...step) []porcupine.Operation {
	var ops []porcupine.Operation
	for i, s := range steps {
		in := lockcheck.Input{Name: "l", Session: s.session, Op: s.op, Mode: s.mode}
		ops = append(ops, porcupine.Operation{ClientId: i, Input: in, Call: int64(2 * i), Output: s.out, Return: int64(2*i + 1)})
	}
	return ops
}

func TestModelRejectsOverlap(t *testing.T) {
	m := lockcheck.Model()
	op := func(c int, call, ret int64, in lockcheck.Input, out lockcheck.Output) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
	}
	a := lockcheck.Input{Name: "l", Session: "sessA", Op: "acquire", Mode: wire.LockExclusive}
	b := lockcheck.Input{Name: "l", Session: "sessB", Op: "acquire", Mode: wire.LockExclusive}
	good := []porcupine.Operation{
		op(0, 0, 1, a, lockcheck.Output{true, 5}),
		op(0, 2, 3, lockcheck.Input{Name: "l", Session: "sessA", Op: "release"}, lockcheck.Output{OK: true}),
		op(1, 1, 4, b, lockcheck.Output{true, 7}),
	}
	if !porcupine.CheckOperations(m, good) {
		t.Fatal("a valid history was rejected")
	}
	for name, bad := range map[string][]porcupine.Operation{
		"two exclusive holders": {op(0, 0, 1, a, lockcheck.Output{true, 5}), op(1, 2, 3, b, lockcheck.Output{true, 7})},
		"token goes back": {op(0, 0, 1, a, lockcheck.Output{true, 5}), op(0, 2, 3, lockcheck.Input{Name: "l", Session: "sessA", Op: "release"}, lockcheck.Output{OK: true}),
			op(1, 4, 5, b, lockcheck.Output{true, 5})},
		"refused while free": {op(1, 0, 1, b, lockcheck.Output{})},
	} {
		if porcupine.CheckOperations(m, bad) {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestModelSequentialHistories checks the model on histories with one possible
// order, so that each case accepts or rejects for the one reason it names: the
// linearizability test is only as strict as this model.
func TestModelSequentialHistories(t *testing.T) {
	x, sh := wire.LockExclusive, wire.LockShared
	for _, tc := range []struct {
		name  string
		steps []step
		want  bool
	}{
		{"shared holders granted by one write", []step{acq("A", sh, true, 5), acq("B", sh, true, 5)}, true},
		{"shared joining later with a higher token", []step{acq("A", sh, true, 5), acq("B", sh, true, 9)}, true},
		{"repeated acquire returns the equal lock", []step{acq("A", x, true, 5), acq("A", x, true, 5)}, true},
		{"refused while held", []step{acq("A", x, true, 5), acq("B", sh, false, 0), acq("B", x, false, 0)}, true},
		{"release of a lock not held refused", []step{rel("A", false), acq("A", x, true, 3), rel("B", false), rel("A", true), rel("A", false)}, true},
		{"a new holder after a release, with a higher token", []step{acq("A", x, true, 5), rel("A", true), acq("B", sh, true, 6)}, true},

		{"exclusive beside shared", []step{acq("A", sh, true, 5), acq("B", x, true, 6)}, false},
		{"shared beside exclusive", []step{acq("A", x, true, 5), acq("B", sh, true, 6)}, false},
		{"exclusive beside exclusive", []step{acq("A", x, true, 5), acq("B", x, true, 6)}, false},
		{"shared joining with a lower token", []step{acq("A", sh, true, 5), acq("B", sh, true, 4)}, false},
		{"shared joining with an older holder's token", []step{acq("A", sh, true, 5), acq("B", sh, true, 7), rel("B", true), acq("C", sh, true, 6)}, false},
		{"shared after a release with the last token", []step{acq("A", sh, true, 5), rel("A", true), acq("B", sh, true, 5)}, false},
		{"repeated acquire with another token", []step{acq("A", x, true, 5), acq("A", x, true, 6)}, false},
		{"repeated acquire refused", []step{acq("A", x, true, 5), acq("A", x, false, 0)}, false},
		{"release refused while held", []step{acq("A", x, true, 5), rel("A", false)}, false},
		{"release of a lock not held", []step{rel("A", true)}, false},
		{"released lock still held", []step{acq("A", x, true, 5), rel("A", true), acq("B", x, false, 0)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(lockcheck.Model(), history(tc.steps...)); got != tc.want {
				t.Fatalf("got accepted=%v, want %v", got, tc.want)
			}
		})
	}
}
