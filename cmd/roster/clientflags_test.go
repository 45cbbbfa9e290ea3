package main

import (
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/filter"
)

// TestExcludeSessionCompiles: the filter that leaves out the command's own session
// compiles whenever the filter given does, so a valid filter is never refused by
// the service for what the CLI added to it. Parenthesised, a filter already
// filter.MaxDepth deep was one level too deep, and the service answered
// invalid_filter at an offset into text the user never wrote.
func TestExcludeSessionCompiles(t *testing.T) {
	t.Parallel()
	const id = "AbCdEfGhIjKlMnOpQrStUv"
	deep := strings.Repeat("(", filter.MaxDepth) + `Department is "Accounts"` + strings.Repeat(")", filter.MaxDepth)
	notDeep := strings.Repeat("not ", filter.MaxDepth) + `has Department`
	long := `a is "` + strings.Repeat("x", filter.MaxLength-10) + `"`
	for name, text := range map[string]string{
		"empty": "", "plain": `Department is "Accounts"`, "or": `a is "1" or b is "2"`,
		"deep": deep, "deep not": notDeep, "long": long,
	} {
		t.Run(name, func(t *testing.T) {
			if text != "" {
				if _, err := filter.Compile(text); err != nil {
					t.Fatalf("the filter given does not compile: %v", err)
				}
			}
			out := excludeSession(text, id)
			f, err := filter.Compile(out)
			if err != nil {
				t.Fatalf("excludeSession(%.40q…): %v", text, err)
			}
			me := map[string]string{"$SessionId": id, "Department": "Accounts", "a": "1"}
			if out != text && f.Matches(me) {
				t.Errorf("excludeSession(%.40q…) = %.60q… matches the session it leaves out", text, out)
			}
		})
	}
}

// TestClientUsageErrorsNameTheVariable: a client command's usage error about a value
// that came from the flag's environment variable names the variable, as those about
// --server, --session-id and the credentials do. They named only the flag: with
// ROSTER_OUTPUT=yaml exported, or ROSTER_WAIT=-1s meant for lock acquire (which
// request's --wait reads too), the message spoke of a flag nobody had typed.
func TestClientUsageErrorsNameTheVariable(t *testing.T) {
	const offline = "nats://127.0.0.1:1" // each is refused before connecting
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"ROSTER_OUTPUT": "yaml"}, []string{"session", "list"}, `--output (set by ROSTER_OUTPUT) "yaml": want text or json`},
		{map[string]string{"ROSTER_TIMEOUT": "0s"}, []string{"session", "list"}, `--timeout (set by ROSTER_TIMEOUT) 0s: want a positive duration`},
		{map[string]string{"ROSTER_PAGE_SIZE": "-1"}, []string{"session", "list"}, `--page-size (set by ROSTER_PAGE_SIZE) -1: want 0 (the server's default) or a positive number`},
		{map[string]string{"ROSTER_SINCE": "-1h"}, []string{"session", "events"}, `--since (set by ROSTER_SINCE) -1h0m0s: want a positive duration (how long ago to start)`},
		{map[string]string{"ROSTER_SESSION_TIMEOUT": "-1s"}, []string{"session", "open"}, `--session-timeout (set by ROSTER_SESSION_TIMEOUT) -1s: want 0 (the server's default) or a positive duration`},
		{map[string]string{"ROSTER_SCOPE": "host"}, []string{"lock", "acquire", "x"}, `--scope (set by ROSTER_SCOPE) "host": want session or connection`},
		{map[string]string{"ROSTER_WAIT": "-1s"}, []string{"request", "--filter", "all", "--path", "p"}, `--wait (set by ROSTER_WAIT) -1s: want 0 (the service's default, 5s) or a positive duration up to 1m0s`},
		// On the command line, only the flag.
		{nil, []string{"session", "list", "--timeout", "0s"}, `--timeout 0s: want a positive duration`},
		{nil, []string{"lock", "acquire", "x", "--scope", "host"}, `--scope "host": want session or connection`},
	} {
		t.Run(tc.want, func(t *testing.T) { // a subtest: its environment ends with it
			wantUsage(t, tc.env, append(tc.args, "--server", offline), tc.want)
		})
	}
	// Refused by the server: a --session-timeout out of its bounds, a path the
	// messaging service does not take.
	c := newCLI(t)
	for _, tc := range []struct {
		env, args []string
		want      string
	}{
		{[]string{"ROSTER_SESSION_TIMEOUT", "1ms"}, []string{"session", "open"}, "--session-timeout (set by ROSTER_SESSION_TIMEOUT) 1ms: bad_request: "},
		{[]string{"ROSTER_PATH", "a b"}, []string{"listen"}, `--path (set by ROSTER_PATH) "a b": invalid_name: `},
	} {
		t.Run(tc.want, func(t *testing.T) {
			t.Setenv(tc.env[0], tc.env[1])
			r := c.run(testCtx(t), "", tc.args...)
			if r.err == nil || !strings.HasPrefix(r.err.Error(), tc.want) {
				t.Errorf("%s=%s roster %s: got %v, want %s…", tc.env[0], tc.env[1], strings.Join(tc.args, " "), r.err, tc.want)
			}
		})
	}
}

// TestLockAcquireNeedsTheNameBeforeTheCommand: lock acquire -- COMMAND, without the
// lock's name, is a usage error. The command's name was taken for the lock's:
// roster lock acquire -- make took a lock named make and held it until interrupted,
// running nothing, and lock acquire -- echo hi failed with 127, no command hi.
func TestLockAcquireNeedsTheNameBeforeTheCommand(t *testing.T) {
	const offline = "nats://127.0.0.1:1" // refused before connecting
	const noName = "name the lock before --: roster lock acquire NAME -- COMMAND"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lock", "acquire", "--server", offline, "--", "true"}, noName},
		{[]string{"lock", "acquire", "--server", offline, "--", "echo", "hi"}, noName},
		{[]string{"lock", "acquire", "orders/1", "true", "--server", offline}, "put the command after --: roster lock acquire NAME -- COMMAND"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) { wantUsage(t, nil, tc.args, tc.want) })
	}
}
