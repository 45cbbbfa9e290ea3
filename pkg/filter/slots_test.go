package filter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCompilesWaitForASlot: while every compile slot is busy, a filter not in the
// cache waits for one and gives up when its context ends, with the context's error;
// a cached filter, and text that does not parse, need no slot. Before, any number of
// compiles ran at once: clients sending distinct filters of 16 KiB (tens to hundreds
// of milliseconds of CPU each) took every CPU.
func TestCompilesWaitForASlot(t *testing.T) {
	// Texts of their own in every run: a run's compiles are cached for the next.
	run := time.Now().UnixNano()
	waiting := fmt.Sprintf(`Department is "slots-waiting-%d"`, run)
	cached, err := Compile(fmt.Sprintf(`Department is "slots-cached-%d"`, run))
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	compiling = func(expr string) {
		if strings.Contains(expr, "slots-holder") {
			held <- struct{}{}
			<-release
		}
	}
	t.Cleanup(func() { compiling = nil })
	// Take every slot with compiles the hook holds.
	done := make(chan error, cap(compileSlots))
	for i := range cap(compileSlots) {
		go func() {
			_, err := Compile(fmt.Sprintf(`Department is "slots-holder-%d-%d"`, run, i))
			done <- err
		}()
		<-held
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := CompileContext(ctx, waiting); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a compile with every slot busy: got %v, want the context's deadline", err)
	}
	if f, err := CompileContext(ctx, cached.String()); err != nil || f != cached {
		t.Errorf("a cached filter with every slot busy: got %v, %v; want it at once", f, err)
	}
	var se *SyntaxError
	if _, err := CompileContext(ctx, `Department is`); !errors.As(err, &se) {
		t.Errorf("text that does not parse with every slot busy: got %v, want its syntax error", err)
	}

	close(release)
	for range cap(compileSlots) {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := CompileContext(context.Background(), waiting); err != nil {
		t.Fatalf("once a slot is free: %v", err)
	}
}
