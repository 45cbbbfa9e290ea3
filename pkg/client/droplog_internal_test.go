package client

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestDroppedRequestsAreLoggedAtMostOncePerInterval: a receiver too busy for the
// requests sent to it drops every one whose deadline passed while it waited for a
// handler, and logged a warning for each — under overload thousands of lines a
// second. The first drop is logged at once, with its attributes; the others within
// the interval are counted, here in the line Close writes.
func TestDroppedRequestsAreLoggedAtMostOncePerInterval(t *testing.T) {
	old := dropWarnEvery
	dropWarnEvery = time.Hour // the whole test within one interval
	defer func() { dropWarnEvery = old }()
	p := rostertest.Start(t)
	var logs natstest.Buffer
	c, err := Connect(p.ClientURL(), WithLogger(logs.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{c: c, id: "receiver"}
	const drops = 1000
	for range drops {
		m := &nats.Msg{Subject: "x", Reply: "r", Header: nats.Header{wire.HeaderSender: []string{"sender"}}}
		s.dropExpired(context.Background(), arrival{m: m, path: "work", deadline: time.Now()}, nil)
	}
	lines := dropLines(t, logs.String())
	if len(lines) != 1 {
		t.Fatalf("%d drops logged %d lines, want 1:\n%s", drops, len(lines), logs.String())
	}
	if l := lines[0]; l["session"] != "receiver" || l["path"] != "work" || l["sender"] != "sender" || l["suppressed"] != nil {
		t.Fatalf("first line %v, want the first drop's session, path and sender", l)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines = dropLines(t, logs.String())
	if len(lines) != 2 || lines[1]["suppressed"] != float64(drops-1) {
		t.Fatalf("after Close: %v, want a second line counting the %d drops left out", lines, drops-1)
	}
}

// dropLines returns the log lines of dropped requests in logs, decoded.
func dropLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if strings.HasPrefix(rec["msg"].(string), "roster: request dropped") {
			out = append(out, rec)
		}
	}
	return out
}
