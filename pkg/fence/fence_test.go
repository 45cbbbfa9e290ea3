package fence_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/fence"
)

func TestCheck(t *testing.T) {
	var g fence.Guard
	steps := []struct {
		name  string
		token uint64
		ok    bool
	}{
		{"a", 5, true},
		{"a", 5, true}, // the same holder writes again
		{"a", 4, false},
		{"b", 1, true}, // tokens are per lock name
		{"a", 9, true},
		{"a", 5, false},
		{"a", 0, false},
	}
	for i, s := range steps {
		err := g.Check(s.name, s.token)
		if (err == nil) != s.ok || (err != nil && !errors.Is(err, fence.ErrStale) && !errors.Is(err, fence.ErrNoToken)) {
			t.Fatalf("step %d: Check(%s, %d) = %v, want ok=%v", i, s.name, s.token, err, s.ok)
		}
	}
	if got := g.Highest("a"); got != 9 {
		t.Fatalf("got highest %d, want 9", got)
	}
}

// TestTokenZeroIsNeverAdmitted: a grant's token is at least 1, so a write with 0
// carries no token (a field its writer never set). It was admitted under a name no
// token had been seen for yet, until the first real holder wrote.
func TestTokenZeroIsNeverAdmitted(t *testing.T) {
	var g fence.Guard
	if err := g.Check("fresh", 0); !errors.Is(err, fence.ErrNoToken) {
		t.Fatalf("Check of token 0 under a fresh name: %v, want ErrNoToken", err)
	}
	if err := g.Do("fresh", 0, func() error { t.Error("a write with token 0 ran"); return nil }); !errors.Is(err, fence.ErrNoToken) {
		t.Fatalf("Do with token 0: %v, want ErrNoToken", err)
	}
	if got := g.Highest("fresh"); got != 0 {
		t.Fatalf("a refused token 0 recorded %d", got)
	}
	if err := g.Check("fresh", 1); err != nil {
		t.Fatalf("the first real token after a refused 0: %v", err)
	}
}

// TestDoNeverGoesBack: concurrent writers with random tokens; the sequence of
// admitted writes never has a token lower than one admitted before it.
func TestDoNeverGoesBack(t *testing.T) {
	var g fence.Guard
	var mu sync.Mutex
	var admitted []uint64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				tok := uint64((i*7 + w*13) % 97)
				_ = g.Do("r", tok, func() error {
					mu.Lock()
					admitted = append(admitted, tok)
					mu.Unlock()
					return nil
				})
			}
		}()
	}
	wg.Wait()
	for i := 1; i < len(admitted); i++ {
		if admitted[i] < admitted[i-1] {
			t.Fatalf("write %d admitted token %d after %d", i, admitted[i], admitted[i-1])
		}
	}
}

// TestDoKeepsAFailedWritesToken: a write that fails still shows that a holder with
// its token exists, so older tokens stay out.
func TestDoKeepsAFailedWritesToken(t *testing.T) {
	var g fence.Guard
	failed := errors.New("disk full")
	if err := g.Do("c", 8, func() error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("got %v, want the write's error", err)
	}
	if got := g.Highest("c"); got != 8 {
		t.Fatalf("got highest %d after the failed write, want 8", got)
	}
	if err := g.Do("c", 7, func() error { t.Error("a write with token 7 ran after token 8"); return nil }); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("got %v for token 7 after 8, want ErrStale", err)
	}
}

// TestDoHoldsTheGuardDuringTheWrite: a write with a higher token cannot run while a
// lower one's is in progress, or the lower write could land after it. The first
// write waits for the second to finish; while the guard is held through the write,
// the second cannot, and the wait ends with its deadline.
func TestDoHoldsTheGuardDuringTheWrite(t *testing.T) {
	var g fence.Guard
	secondDone := make(chan struct{})
	var overtaken bool
	err := g.Do("r", 5, func() error {
		go func() {
			defer close(secondDone)
			_ = g.Do("r", 7, func() error { return nil })
		}()
		select {
		case <-secondDone:
			overtaken = true
		case <-time.After(100 * time.Millisecond):
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-secondDone
	if overtaken {
		t.Fatal("a write with token 7 ran and finished inside the write with token 5")
	}
	if got := g.Highest("r"); got != 7 {
		t.Fatalf("got highest %d, want 7", got)
	}
}

// TestDoUnderOtherNamesRunsDuringAWrite: the guard serializes the writes under one
// lock name only. A write under "b" runs and finishes while a write under "a" is in
// progress; with one mutex for every name it waited, and a slow resource behind one
// lock held up the writes behind all the others.
func TestDoUnderOtherNamesRunsDuringAWrite(t *testing.T) {
	var g fence.Guard
	err := g.Do("a", 5, func() error {
		done := make(chan error, 1)
		go func() { done <- g.Do("b", 1, func() error { return nil }) }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New(`a write under "b" waited for the write under "a"`)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := g.Highest("a"), g.Highest("b"); a != 5 || b != 1 {
		t.Fatalf("got highest a=%d b=%d, want 5 and 1", a, b)
	}
}

func Example() {
	var store fence.Guard
	write := func(holder string, token uint64) {
		err := store.Do("orders/42", token, func() error { return nil /* the real write */ })
		fmt.Printf("%s (token %d): %v\n", holder, token, err)
	}
	write("first holder", 17)
	// The first holder pauses, loses its lock, and the next holder is granted it.
	write("second holder", 23)
	// The first holder wakes up and writes with its old token.
	write("first holder", 17)
	// Output:
	// first holder (token 17): <nil>
	// second holder (token 23): <nil>
	// first holder (token 17): fence: stale fencing token: lock "orders/42" token 17 is below 23
}
