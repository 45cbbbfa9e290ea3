package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// jsonLines checks that out is JSON objects one per line, each line whole, and
// returns how many there are.
func jsonLines(out string) (int, error) {
	if !strings.HasSuffix(out, "\n") {
		return 0, fmt.Errorf("output does not end in a newline: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, line := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			return 0, fmt.Errorf("line %d is not a JSON object (%v): %q", i+1, err, line)
		}
	}
	return len(lines), nil
}

// TestJSONOutputIsOneObjectPerLine: -o json prints each object on one line, for the
// commands that print one object as for those that stream them, so that scripts can
// read any command's output line by line (jq reads either). The commands printing
// one object indented it over several lines, and so did session open its session
// and then each change of state, while listen, request and session events printed
// one per line.
func TestJSONOutputIsOneObjectPerLine(t *testing.T) {
	c := newCLI(t)
	ctx := testCtx(t)
	for _, args := range [][]string{
		{"session", "list"},
		{"lock", "list"},
		{"send", "--filter", "all", "--path", "chat/x", "hi"},
	} {
		r := c.run(ctx, "", append(args, "-o", "json")...)
		if r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
		if n, err := jsonLines(r.stdout); err != nil || n != 1 {
			t.Errorf("%v -o json: %d objects, %v", args, n, err)
		}
	}
	if r := runOffline(ctx, "filter", "check", `a is "1"`, "-o", "json"); r.err != nil {
		t.Fatalf("filter check: %v", r.err)
	} else if n, err := jsonLines(r.stdout); err != nil || n != 1 {
		t.Errorf("filter check -o json: %d objects, %v", n, err)
	}

	// session open: the session, then a change of state, each a line.
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(ctx, "", out, errb, "session", "open", "-o", "json")
	var opened struct {
		Session struct {
			ID string `json:"id"`
		} `json:"session"`
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return json.NewDecoder(strings.NewReader(out.String())).Decode(&opened)
	})
	admin := openSession(t, c.server)
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: opened.Session.ID}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("session open still runs after its session was closed")
	}
	if n, err := jsonLines(out.String()); err != nil || n != 2 {
		t.Errorf("session open -o json: %d objects, %v", n, err)
	}
}
