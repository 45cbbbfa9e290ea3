package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// fillToRecordLimit grows c's record with one property until an update of 16 more
// bytes would pass the record size limit, and returns the size of the value set.
func fillToRecordLimit(t *testing.T, c *client, limit int) int {
	t.Helper()
	for n := limit; n > 0; n -= 16 {
		err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"v": strings.Repeat("x", n)}}, nil)
		if err == nil {
			return n
		}
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeLimitExceeded {
			t.Fatalf("update: %v", err)
		}
	}
	t.Fatal("no update fit")
	return 0
}

// A session whose record is near the record size limit can be neither closed by its
// client nor expired: the CLOSED transition is refused with limit_exceeded.
func TestSessionAtTheSizeLimitStillClosesAndExpires(t *testing.T) {
	t.Parallel()
	const limit = 4096
	e := newEnv(t, Config{Limits: Limits{RecordSize: limit, ValueLength: 8192}})
	nc := e.srv.ClientConn(t)

	c, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 60000})
	fillToRecordLimit(t, c, limit)
	if err := c.call(wire.SubjectSessionClose, nil, nil); err != nil {
		t.Errorf("close of the own session: %v, want success", err)
	} else if r := e.record(t, c.id); !r.Closed() || r.CloseReason != wire.ClosedByClient {
		t.Errorf("after its close the session is %s (%q), want CLOSED (%q)", r.State, r.CloseReason, wire.ClosedByClient)
	}

	silent, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 1000})
	fillToRecordLimit(t, silent, limit)
	// When it expires is the expiry tests' business; here only that it does. A
	// refused CLOSED write leaves it open for good.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := e.record(t, silent.id); !r.Closed() {
			return fmt.Errorf("session at the size limit with a 1 s timeout is %s, want CLOSED (expired)", r.State)
		}
		return nil
	})
	if r := e.record(t, silent.id); r.CloseReason != wire.ClosedExpired {
		t.Errorf("got close reason %q, want %q", r.CloseReason, wire.ClosedExpired)
	}
}

// TestGatewayFieldsAreBoundedAsValues: gateway_type and gateway_id become the values
// of $GatewayType and $GatewayId, and the value length limit bounds them as it does
// every property value; unbounded, one open could fill the record up to its size
// limit with them.
func TestGatewayFieldsAreBoundedAsValues(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Limits: Limits{ValueLength: 64}})
	nc := e.srv.ClientConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, req := range []*wire.SessionOpenRequest{
		{GatewayType: strings.Repeat("t", 65), GatewayID: "g1"},
		{GatewayType: "web", GatewayID: strings.Repeat("i", 65)},
	} {
		err := wire.Call(ctx, nc, wire.SubjectSessionOpenGateway, nil, req, &wire.SessionOpenResponse{})
		wantCode(t, err, wire.CodeLimitExceeded)
	}
	_, resp := open(t, nc, &wire.SessionOpenRequest{GatewayType: strings.Repeat("t", 64), GatewayID: "g1"})
	if got := resp.Session.Fixed["$GatewayType"]; len(got) != 64 {
		t.Fatalf("$GatewayType at the limit: %q", got)
	}
}

// TestNewRefusesLimitsItCannotKeep: a default timeout outside its own bounds, and a
// record size limit past what one write carries, are refused at start; the first
// was applied as given (a session asking for no timeout got one it could not ask
// for), the second failed every write of a record near the limit.
func TestNewRefusesLimitsItCannotKeep(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := srv.ServiceConn(t)
	for name, cfg := range map[string]Config{
		"default above the max":                     {DefaultTimeout: 2 * time.Hour, MaxTimeout: time.Hour},
		"default below the min":                     {DefaultTimeout: time.Second, MinTimeout: 5 * time.Second},
		"record past a write":                       {Limits: Limits{RecordSize: int(nc.MaxPayload())}},
		"events kept below the duplicate window":    {EventsMaxAge: MinEventsMaxAge - time.Second},
		"default list page above the max":           {ListLimit: 200, MaxListLimit: 100},
		"default list page above the max's default": {ListLimit: 2000},
		"max list page above the schema's":          {MaxListLimit: listPageMax + 1},
	} {
		if _, err := New(nc, cfg, testPolicy(), noop.NewTracerProvider(), slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}
