package messaging

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// spanAttr returns the value of s's attribute key as a string, "" when it has none.
func spanAttr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestFanOutSpansRecordTheirOutcome: a request's fan-out span says how many
// sessions it asked (roster.delivered, as a send's does), and one refused before it
// asked anybody records the wire code as the server span does (endpoint.SpanError).
func TestFanOutSpansRecordTheirOutcome(t *testing.T) {
	_, e, from, req, held := startStreamedRequest(t, Config{MaxStreams: 1})
	first := <-held
	req.StreamID = "second"
	if _, err := e.call(from, wire.SubjectMsgRequest, req); !errors.Is(err, wire.ErrLimitExceeded) {
		t.Fatalf("second streamed request: got %v, want limit_exceeded", err)
	}
	_ = first.Respond([]byte("done"))
	var asked, refused sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		asked, refused = nil, nil
		for _, s := range e.spans.Ended() {
			if s.Name() != "msg.request fan-out" {
				continue
			}
			if spanAttr(s, "roster.matched") == "1" && spanAttr(s, "roster.delivered") != "" {
				asked = s
			}
			if spanAttr(s, "error.type") != "" {
				refused = s
			}
		}
		if asked == nil || refused == nil {
			return fmt.Errorf("fan-out spans: one that says whom it asked %v, one with the refusal's code %v; want both", asked != nil, refused != nil)
		}
		return nil
	})
	if got := spanAttr(asked, "roster.delivered"); got != "1" {
		t.Errorf("the request's fan-out: roster.delivered %s, want 1", got)
	}
	if spanAttr(refused, "roster.error.code") != string(wire.CodeLimitExceeded) || spanAttr(refused, "error.type") != string(wire.CodeLimitExceeded) ||
		refused.Status().Code != codes.Unset {
		t.Errorf("the refused request's fan-out: attributes %v, status %v; want the code limit_exceeded, status unset", refused.Attributes(), refused.Status())
	}
}

// TestFanOutSpanKeepsItsFilterShort: a send by filter records the filter's shape
// (its redacted form) on its fan-out span, cut to maxFilterAttribute bytes. A
// filter of filter.MaxLength bytes has a redacted form of up to 27 KB (a role
// list 'a' 'a' … printed ["a", "a", …]), and every send kept it on its span: 512
// such spans, the SDK's export batch, are 14 MB, which an OTLP collector refuses
// whole at its default 4 MiB gRPC limit — every other span of the batch lost with
// them. Before, the attribute was the whole redacted form.
func TestFanOutSpanKeepsItsFilterShort(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	text := "hasRoles " + strings.Repeat("'a'", (filter.MaxLength-len("hasRoles "))/3)
	f, err := filter.Compile(text)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{Filter: text, Path: "chat/long"}}); err != nil {
		t.Fatal(err)
	}
	var fan sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for _, s := range e.spans.Ended() {
			if s.Name() == "msg.send fan-out" && spanAttr(s, "messaging.destination.name") == "chat/long" {
				fan = s
				return nil
			}
		}
		return errors.New("no fan-out span yet")
	})
	got := spanAttr(fan, "roster.filter")
	if len(got) > maxFilterAttribute || !strings.HasPrefix(f.Redacted(), strings.TrimSuffix(got, "…")) {
		t.Errorf("roster.filter is %d bytes (the redacted filter %d); want its first %d bytes at most", len(got), len(f.Redacted()), maxFilterAttribute)
	}
}
