package client_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/client"
)

// TestRepeatedMessageIsTraced: a copy of a message a registration has taken — a
// request sent again with its message id, answered from the registration's memory
// of its answers without running the handler, or a send's copy, dropped — had no
// span: the repeat's trace showed the fan-out reaching the receiver and nothing
// after it. Each copy now has the receiver's consumer span, with roster.duplicate
// and an event saying what became of it; the handler still runs once.
func TestRepeatedMessageIsTraced(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	receiver := tr.open(t, p.ClientURL(), client.Options{})
	var c counter
	if _, err := receiver.Handle("work", c.handler(func(*client.Message, int) ([]byte, error) { return []byte("done"), nil })); err != nil {
		t.Fatal(err)
	}
	sender := tr.open(t, p.ClientURL(), client.Options{})
	to := client.ToSession(receiver.ID())
	// consumer waits for the receiver's span of root's delivery.
	consumer := func(t *testing.T, root trace.SpanContext) sdktrace.ReadOnlySpan {
		t.Helper()
		return tr.find(t, root, "the receiver's span", func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == trace.SpanKindConsumer && s.Name() == "process work"
		})
	}
	hasEvent := func(s sdktrace.ReadOnlySpan, name string) bool {
		for _, ev := range s.Events() {
			if ev.Name == name {
				return true
			}
		}
		return false
	}

	t.Run("request", func(t *testing.T) {
		ask := func(name string) trace.SpanContext {
			return tr.root(name, func(ctx context.Context) {
				res, err := sender.Request(ctx, to, "work", []byte("job"), 5*time.Second, client.MessageID("job-1"))
				if err != nil || len(res.Results) != 1 || string(res.Results[0].Payload) != "done" {
					t.Fatalf("%s: got %+v, %v; want the answer done", name, res, err)
				}
			})
		}
		first, again := ask("first"), ask("again")
		if n := c.get("job"); n != 1 {
			t.Fatalf("the handler ran %d times, want once", n)
		}
		if s := consumer(t, first); attr(s, "roster.duplicate") == "true" {
			t.Errorf("the first copy's span is marked a duplicate")
		}
		s := consumer(t, again)
		if attr(s, "roster.duplicate") != "true" || !hasEvent(s, "answered from memory") {
			t.Errorf("the repeated request's span: attributes %v, events %v; want roster.duplicate and the event answered from memory", s.Attributes(), s.Events())
		}
	})

	t.Run("send", func(t *testing.T) {
		send := func(name string) trace.SpanContext {
			return tr.root(name, func(ctx context.Context) {
				if _, err := sender.Send(ctx, to, "work", []byte("note"), client.MessageID("note-1")); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			})
		}
		send("first")
		again := send("again")
		s := consumer(t, again)
		if attr(s, "roster.duplicate") != "true" || !hasEvent(s, "duplicate dropped") {
			t.Errorf("the repeated send's span: attributes %v, events %v; want roster.duplicate and the event duplicate dropped", s.Attributes(), s.Events())
		}
		c.waitCount(t, "note", 1)
	})
}
