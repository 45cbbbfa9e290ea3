package lockcheck_test

import (
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/seed-3c836eab/roster/pkg/lockcheck"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

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
