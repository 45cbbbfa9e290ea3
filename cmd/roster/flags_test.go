package main

import "testing"

// TestOutOfRangeDurationsAreUsageErrors: durations a command cannot use are usage
// errors (exit 2), found before anything is sent. They were taken silently: a
// negative --since started at the first stored event, a negative request --wait
// asked for the service's 5 s default (or ended the request at once, once past
// -10s), and --timeout 0 failed every request with a timeout (exit 6) — here, with
// no server, each exited 7 instead.
func TestOutOfRangeDurationsAreUsageErrors(t *testing.T) {
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	ctx := testCtx(t)
	for name, args := range map[string][]string{
		"events --since -1h":         {"session", "events", "--since", "-1h"},
		"request --wait -1s":         {"request", "--session", "x", "--path", "p", "--wait", "-1s"},
		"send --timeout 0":           {"send", "--session", "x", "--path", "p", "--timeout", "0"},
		"session open --timeout -1s": {"session", "open", "--timeout", "-1s"},
		"lock list --timeout 0":      {"lock", "list", "--timeout", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			if r := c.run(ctx, "", args...); r.exit() != 2 {
				t.Errorf("got %v (exit %d), want a usage error (2)", r.err, r.exit())
			}
		})
	}
}
