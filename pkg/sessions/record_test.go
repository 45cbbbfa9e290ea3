package sessions_test

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestCheckTokenAnswersAlike checks that every wrong token gets the same answer,
// whatever its length or how much of it matches. CheckToken hashes the token and
// compares the fixed-length hex hashes with crypto/subtle, so the comparison takes
// the same time for every wrong token of any length; only hashing depends on the
// length, which says nothing about the secret. A test cannot measure timing reliably
// on a shared machine: TestCheckTokenIsConstantTime checks the code instead.
func TestCheckTokenAnswersAlike(t *testing.T) {
	const good = "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c"
	rec := &sessions.Record{ID: "s", State: wire.StateActive, TokenHash: sessions.HashToken(good)}
	if err := rec.CheckToken(good); err != nil {
		t.Fatalf("the right token: got %v, want nil", err)
	}
	want := rec.CheckToken("x").Error()
	for _, tc := range []struct{ name, token string }{
		{"empty", ""},
		{"one character", "q"},
		{"prefix", good[:len(good)-1]},
		{"last character differs", good[:len(good)-1] + "d"},
		{"first character differs", "Q" + good[1:]},
		{"longer", good + "x"},
		{"much longer", strings.Repeat(good, 10)},
		{"the hash itself", sessions.HashToken(good)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rec.CheckToken(tc.token)
			if !errors.Is(err, wire.ErrInvalidToken) || err.Error() != want {
				t.Fatalf("got %v, want %q", err, want)
			}
		})
	}
}

// TestCheckTokenIsConstantTime checks that CheckToken compares with
// crypto/subtle.ConstantTimeCompare and nothing else: no ==, bytes.Equal or
// strings.Compare on the token or the hash.
func TestCheckTokenIsConstantTime(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "record.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fn *ast.FuncDecl
	for _, d := range f.Decls {
		if d, ok := d.(*ast.FuncDecl); ok && d.Name.Name == "CheckToken" {
			fn = d
		}
	}
	if fn == nil {
		t.Fatal("no CheckToken in record.go")
	}
	subtle := false
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if x, ok := n.X.(*ast.Ident); ok {
				switch x.Name + "." + n.Sel.Name {
				case "subtle.ConstantTimeCompare":
					subtle = true
				case "bytes.Equal", "bytes.Compare", "strings.Compare", "strings.EqualFold":
					t.Errorf("CheckToken uses %s.%s", x.Name, n.Sel.Name)
				}
			}
		case *ast.BinaryExpr:
			// Only the emptiness check and the comparison of subtle's result may
			// use == or !=.
			if n.Op == token.EQL || n.Op == token.NEQ {
				lit, isLit := n.Y.(*ast.BasicLit)
				if !isLit || (lit.Value != `""` && lit.Value != "1") {
					t.Errorf("CheckToken compares with %s against %T", n.Op, n.Y)
				}
			}
		}
		return true
	})
	if !subtle {
		t.Error("CheckToken does not use crypto/subtle.ConstantTimeCompare")
	}
}

// TestEncodeKeepsToItsFormat: Encode writes every record in Format, whatever it was
// read in (none, before the format was kept), and refuses one read in a later format
// with ErrNewerFormat — matched by IsNewerFormat, and unavailable on the wire — while
// another unavailable error is not taken for it.
func TestEncodeKeepsToItsFormat(t *testing.T) {
	for _, read := range []int{0, sessions.Format} {
		data, err := sessions.Encode(&sessions.Record{ID: "s", Format: read})
		if err != nil {
			t.Fatalf("format %d: %v", read, err)
		}
		r, err := sessions.Decode(data, 1)
		if err != nil || r.Format != sessions.Format {
			t.Errorf("read in format %d: written in %d (%v), want %d", read, r.Format, err, sessions.Format)
		}
	}
	_, err := sessions.Encode(&sessions.Record{ID: "s", Format: sessions.Format + 1})
	if !sessions.IsNewerFormat(err) || !errors.Is(err, wire.ErrUnavailable) {
		t.Errorf("got %v, want ErrNewerFormat, unavailable", err)
	}
	if sessions.IsNewerFormat(wire.Errorf(wire.CodeUnavailable, "storage")) {
		t.Error("IsNewerFormat took another unavailable error for it")
	}
}

// TestChangeTraceIsTheLastWritesOwn: a record gives the trace of the request whose
// change its own write made — the event that write staged, last in the outbox and
// without its revision yet — and none when its write staged no event (the events
// before it are earlier writes', their revisions filled in) or the server's own.
func TestChangeTraceIsTheLastWritesOwn(t *testing.T) {
	const earlier, closer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name   string
		outbox []sessions.PendingEvent
		want   string
	}{
		{"no outbox", nil, ""},
		{"its own event", []sessions.PendingEvent{
			{MsgID: "s-1", Trace: earlier, Event: wire.SessionEvent{Revision: 4}},
			{MsgID: "s-closed", Trace: closer},
		}, closer},
		{"the server's own change", []sessions.PendingEvent{
			{MsgID: "s-1", Trace: earlier, Event: wire.SessionEvent{Revision: 4}},
			{MsgID: "s-closed"},
		}, ""},
		{"a write without an event", []sessions.PendingEvent{
			{MsgID: "s-1", Trace: earlier, Event: wire.SessionEvent{Revision: 4}},
		}, ""},
	} {
		rec := &sessions.Record{ID: "s", Outbox: tc.outbox}
		if got := rec.ChangeTrace(); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
