package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
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
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	// session open, which prints its session and then each change of state:
	// TestSessionOpenPrintsStateChangesAsJSON.
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

}
