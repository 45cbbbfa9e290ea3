package fence_test

import (
	"errors"
	"fmt"

	"github.com/seed-3c836eab/roster/pkg/fence"
)

// A holder paused past its lock's end writes with its old token after the next
// holder has written with a newer one: the Guard refuses it. The tokens stand for
// (*client.Lock).Token of two grants of an exclusive lock.
func ExampleGuard() {
	var g fence.Guard
	const old, newer = 1765432109876543, 1765432109876550
	write := func(token uint64) error {
		return g.Do("orders/42", token, func() error { return nil /* the write itself */ })
	}
	fmt.Println("first holder:", write(old))
	fmt.Println("next holder:", write(newer))
	fmt.Println("first holder again, stale:", errors.Is(write(old), fence.ErrStale))
	// Output:
	// first holder: <nil>
	// next holder: <nil>
	// first holder again, stale: true
}
