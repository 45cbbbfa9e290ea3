package wire_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// FuzzPath checks that every valid path maps to subject tokens without wildcards or
// white space, and back to itself; and that every invalid path is invalid_name.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"chat", "chat/room1", "a//b", "a.b", "a/>", "*", "_x", "$x", "a b", "x/" + strings.Repeat("y", 70), "é/ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		err := wire.ValidatePath(path)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalidName) {
				t.Fatalf("ValidatePath(%q) = %v, want invalid_name", path, err)
			}
			return
		}
		subject := wire.DeliverSubject("KEY", "SID", path)
		if strings.ContainsAny(subject, "*> \t\r\n") || strings.Contains(subject, "..") {
			t.Fatalf("path %q gives the unsafe subject %q", path, subject)
		}
		key, id, back, err := wire.ParseDeliverSubject(subject)
		if err != nil || key != "KEY" || id != "SID" || back != path {
			t.Fatalf("round trip of %q: got %q, %q, %q, %v", path, key, id, back, err)
		}
		if buf := wire.AppendDeliverSubject(nil, "KEY", "SID", wire.PathTokens(path)); string(buf) != subject {
			t.Fatalf("AppendDeliverSubject = %q, want %q", buf, subject)
		}
	})
}

func ExampleDeliverSubject() {
	fmt.Println(wire.DeliverSubject("UABC", "s1", "chat/room1"))
	fmt.Println(wire.DeliverSubject("", "s1", "chat/room1"))
	fmt.Println(wire.ResultSubject("UABC", "s1", "req-7"))
	_, _, path, _ := wire.ParseDeliverSubject("roster.v1.deliver.UABC.s1.orders.updates")
	fmt.Println(path)
	// Output:
	// roster.v1.deliver.UABC.s1.chat.room1
	// roster.v1.deliver.-.s1.chat.room1
	// roster.v1.deliver.UABC.s1._results.req-7
	// orders/updates
}
