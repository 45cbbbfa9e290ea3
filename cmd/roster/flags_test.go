package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOutOfRangeDurationsAreUsageErrors: durations a command cannot use are usage
// errors (exit 2), found before anything is sent. They were taken silently: a
// negative --since started at the first stored event, a negative request --wait
// asked for the service's 5 s default (or ended the request at once, once past
// -10s), and --timeout 0 failed every request with a timeout (exit 6) — here, with
// no server, each exited 7 instead.
func TestOutOfRangeDurationsAreUsageErrors(t *testing.T) {
	t.Parallel()
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

// TestServeFlagsOfTheOtherModeAreUsageErrors: a flag of the embedded server given
// with --nats-url, or one of --nats-url given without it, would do nothing (or, for
// --auth-callout-account, place every client in an account the embedded server does
// not have). Each is a usage error saying so, found before anything starts; they
// were taken silently. The message is checked, not the exit code alone: a case
// refused for another reason (a credentials file that is not there) passed on a
// check that was gone.
func TestServeFlagsOfTheOtherModeAreUsageErrors(t *testing.T) {
	const url = "nats://127.0.0.1:1"
	// A file there to read: refused as missing, the case would be a usage error
	// whatever became of the check it is for.
	creds := filepath.Join(t.TempDir(), "x.creds")
	if err := os.WriteFile(creds, []byte("not credentials"), 0o600); err != nil {
		t.Fatal(err)
	}
	embedded := func(flag string) string {
		return flag + " configures the embedded server: with --nats-url it does nothing"
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"--websocket with --nats-url":        {[]string{"--nats-url", url, "--websocket", "127.0.0.1:0"}, embedded("--websocket")},
		"--monitor with --nats-url":          {[]string{"--nats-url", url, "--monitor", "127.0.0.1:0"}, embedded("--monitor")},
		"--cluster-listen with --nats-url":   {[]string{"--nats-url", url, "--cluster-listen", "127.0.0.1:6222"}, embedded("--cluster-listen")},
		"--service-password with --nats-url": {[]string{"--nats-url", url, "--service-password", "pw"}, embedded("--service-password")},
		"--auth-callout=false with --nats-url": {[]string{"--nats-url", url, "--auth-callout=false"},
			"--auth-callout configures the embedded server; with --nats-url the auth service answers the callout when given --auth-callout-seed-file, and not without"},
		"--nats-user without --nats-url":            {[]string{"--nats-user", "roster-service"}, "--nats-user goes with --nats-url"},
		"--nats-token without --nats-url":           {[]string{"--nats-token", "tok"}, "--nats-token goes with --nats-url"},
		"--auth-callout-account without --nats-url": {[]string{"--auth-callout-account", "APP"}, "--auth-callout-account goes with --nats-url"},
		"--nats-password without --nats-user":       {[]string{"--nats-url", url, "--nats-password", "pw"}, "--nats-password needs --nats-user"},
		"--nats-creds with --nats-user": {[]string{"--nats-url", url, "--nats-creds", creds, "--nats-user", "u"},
			"--nats-creds, --nats-user: give one kind of credentials for --nats-url"},
	} {
		t.Run(name, func(t *testing.T) {
			// --listen and --data-dir only without --nats-url: with it they are
			// usage errors themselves.
			base := []string{"serve", "--log-level", "error"}
			if !slices.Contains(tc.args, "--nats-url") {
				base = append(base, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
			}
			wantUsage(t, nil, append(base, tc.args...), tc.want)
		})
	}
}

// A cluster node's routes authenticate with a password derived from the system
// password, so a node left to make one up per start would admit no peer and be
// admitted by none: a usage error, not a cluster that never forms.
func TestServeClusterNodeNeedsTheSystemPassword(t *testing.T) {
	wantUsage(t, nil, []string{"serve", "--log-level", "error", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--cluster-listen", "127.0.0.1:0", "--routes", "nats://127.0.0.1:1"},
		"--cluster-listen needs --system-password (or ROSTER_SYSTEM_PASSWORD), the same on every node: the nodes authenticate their routes with it")
}

// TestServeClusterFlagsNeedClusterListen: --routes and --cluster-name configure the
// cluster that --cluster-listen makes the embedded server a node of; without it they
// did nothing, and a node given its peers' routes but no --cluster-listen (a
// misspelt ROSTER_CLUSTER_LISTEN) started alone, with JetStream of its own, and
// said nothing.
func TestServeClusterFlagsNeedClusterListen(t *testing.T) {
	base := []string{"serve", "--log-level", "error", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--system-password", "pw"}
	wantUsage(t, nil, append(slices.Clip(base), "--routes", "nats://127.0.0.1:1"),
		"--routes goes with --cluster-listen: without it the embedded server is no cluster node")
	wantUsage(t, nil, append(slices.Clip(base), "--cluster-name", "east", "--routes", "nats://127.0.0.1:1"),
		"--cluster-name, --routes go with --cluster-listen: without it the embedded server is no cluster node")
	t.Run("by variable", func(t *testing.T) {
		wantUsage(t, map[string]string{"ROSTER_ROUTES": "nats://127.0.0.1:1"}, base,
			"--routes (set by ROSTER_ROUTES) goes with --cluster-listen: without it the embedded server is no cluster node")
	})
}

// TestServeFlagsThatWouldDoNothingAreUsageErrors: --jwt-issuer, --jwt-audience and
// --jwt-roles-claim configure the JWT authenticator, which only a key file
// (--jwt-hmac-secret-file, --jwt-public-keys) makes; and --auth-callout-seed-file is
// the callout's key, which --auth-callout=false turns off. Each did nothing, without
// a word, and the seed file was not even read: a ROSTER_JWT_ISSUER beside a misspelt
// key file's variable started a process that refused every bearer token.
func TestServeFlagsThatWouldDoNothingAreUsageErrors(t *testing.T) {
	base := []string{"serve", "--log-level", "error", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}
	wantUsage(t, nil, append(slices.Clip(base), "--jwt-issuer", "https://idp.example"),
		"--jwt-issuer configures the JWT authenticator, which needs --jwt-hmac-secret-file or --jwt-public-keys")
	wantUsage(t, nil, append(slices.Clip(base), "--jwt-audience", "roster", "--jwt-roles-claim", "groups"),
		"--jwt-audience, --jwt-roles-claim configure the JWT authenticator, which needs --jwt-hmac-secret-file or --jwt-public-keys")
	t.Run("by variable", func(t *testing.T) {
		wantUsage(t, map[string]string{"ROSTER_JWT_ISSUER": "https://idp.example"}, base,
			"--jwt-issuer (set by ROSTER_JWT_ISSUER) configures the JWT authenticator, which needs --jwt-hmac-secret-file or --jwt-public-keys")
	})
	wantUsage(t, nil, append(slices.Clip(base), "--auth-callout=false", "--auth-callout-seed-file", "/etc/callout.nk"),
		"--auth-callout-seed-file is the auth callout's key: with --auth-callout=false it does nothing")
}

// TestServeFlagsOfTheOtherModeNameTheirSource: a flag of the other mode set through
// its environment variable (a ROSTER_DATA_DIR left in a container's environment
// beside ROSTER_NATS_URL) is named by that variable, as the client commands name
// theirs; the error named only --data-dir, which is nowhere on the command line.
// One flag reads in the singular. So is a --nats-password without --nats-user.
func TestServeFlagsOfTheOtherModeNameTheirSource(t *testing.T) {
	const url = "nats://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"variable", map[string]string{"ROSTER_DATA_DIR": "/data"}, []string{"--nats-url", url},
			"--data-dir (set by ROSTER_DATA_DIR) configures the embedded server: with --nats-url it does nothing"},
		{"flag", nil, []string{"--nats-url", url, "--data-dir", "/data"},
			"--data-dir configures the embedded server: with --nats-url it does nothing"},
		{"two flags", map[string]string{"ROSTER_LISTEN": ":4222"}, []string{"--nats-url", url, "--data-dir", "/data"},
			"--data-dir, --listen (set by ROSTER_LISTEN) configure the embedded server: with --nats-url they do nothing"},
		{"without --nats-url", map[string]string{"ROSTER_NATS_USER": "roster-service"}, []string{"--listen", "127.0.0.1:0"},
			"--nats-user (set by ROSTER_NATS_USER) goes with --nats-url"},
		// gensecrets' roster.env sets ROSTER_NATS_PASSWORD alone; the user is the
		// compose file's (ROSTER_NATS_USER).
		{"password without user", map[string]string{"ROSTER_NATS_PASSWORD": "pw"}, []string{"--nats-url", url},
			"--nats-password (set by ROSTER_NATS_PASSWORD) needs --nats-user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantUsage(t, tc.env, append([]string{"serve", "--log-level", "error", "--services", "lock"}, tc.args...), tc.want)
		})
	}
}

// TestServeFlagsOfAServiceNotRunAreUsageErrors: a flag that configures a service the
// process does not run would do nothing, and is a usage error naming the flag (or
// its variable), the service and --services. A --session-timeout given to the lock
// service's process, or a --users-file to a process without auth, was ignored
// without a word.
func TestServeFlagsOfAServiceNotRunAreUsageErrors(t *testing.T) {
	const url = "nats://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"registry flag", nil, []string{"--services", "lock", "--session-timeout", "5m"},
			"--session-timeout configures the registry service, which this process does not run (--services lock)"},
		{"auth flag by variable", map[string]string{"ROSTER_USERS_FILE": "/etc/users.yaml"}, []string{"--services", "registry,lock"},
			"--users-file (set by ROSTER_USERS_FILE) configures the auth service, which this process does not run (--services registry,lock)"},
		{"two services", nil, []string{"--services", "none", "--lock-max-waiters", "5", "--max-in-flight", "3"},
			"--lock-max-waiters, --max-in-flight configure the lock and messaging services, which this process does not run (--services none)"},
		// With --nats-url only the auth service uses the seed: the NATS servers'
		// callout holds its public key in their own configuration.
		{"callout seed without auth", nil, []string{"--services", "lock", "--auth-callout-seed-file", "/etc/callout.nk"},
			"--auth-callout-seed-file configures the auth service, which this process does not run (--services lock)"},
		{"callout seed by variable", map[string]string{"ROSTER_AUTH_CALLOUT_SEED_FILE": "/etc/callout.nk"}, []string{"--services", "registry", "--users-file", "/etc/users.yaml"},
			"--auth-callout-seed-file (set by ROSTER_AUTH_CALLOUT_SEED_FILE), --users-file configure the auth service, which this process does not run (--services registry)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantUsage(t, tc.env, append([]string{"serve", "--log-level", "error", "--nats-url", url}, tc.args...), tc.want)
		})
	}
	// A misspelt service is named as such, not as a service the flag's is not.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	err := run(ctx, []string{"serve", "--log-level", "error", "--nats-url", url, "--services", "lokc", "--lock-max-waiters", "5"})
	if exitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), `unknown service "lokc"`) {
		t.Errorf("got %v (exit %d), want a usage error naming the unknown service", err, exitCode(err))
	}
	// A bare node (--services none, the embedded server only) takes no --replicas:
	// only the services create buckets and streams. Its callout trusts the seed's
	// key, so it takes --auth-callout-seed-file.
	node := []string{"serve", "--log-level", "error", "--services", "none", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--cluster-listen", "127.0.0.1:0", "--system-password", "pw", "--auth-callout-seed-file", "/etc/callout.nk"}
	wantUsage(t, nil, append(slices.Clip(node), "--replicas", "3"),
		"--replicas sets the copies of the buckets and streams the services create, and this process runs none (--services none)")
	t.Run("replicas by variable", func(t *testing.T) {
		wantUsage(t, map[string]string{"ROSTER_REPLICAS": "1"}, node,
			"--replicas (set by ROSTER_REPLICAS) sets the copies of the buckets and streams the services create, and this process runs none (--services none)")
	})
	ctx, cancel = context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "callout.nk")
	err = run(ctx, []string{"serve", "--log-level", "error", "--services", "none", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--auth-callout-seed-file", missing})
	if exitCode(err) != 2 || !strings.HasPrefix(fmt.Sprint(err), "auth callout seed file: ") {
		t.Errorf("got %v (exit %d), want the seed file read (and missing)", err, exitCode(err))
	}
	// The service's own process takes them.
	ctx, cancel = context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	err = run(ctx, []string{"serve", "--log-level", "error", "--nats-url", url, "--services", "registry", "--session-timeout", "5m", "--replicas", "0"})
	if exitCode(err) != 2 || !strings.HasPrefix(fmt.Sprint(err), "--replicas 0") {
		t.Errorf("got %v, want only the check after it to refuse (--replicas 0)", err)
	}
}

// wantUsage runs the command args with the environment env and fails the test
// unless it ends in the usage error want (exit 2).
func wantUsage(t *testing.T, env map[string]string, args []string, want string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := run(ctx, args); exitCode(err) != 2 || fmt.Sprint(err) != want {
		t.Errorf("got %v (exit %d), want a usage error (2): %s", err, exitCode(err), want)
	}
}

// TestMissingCredentialFilesAreUsageErrors: a TLS or credentials file that cannot be
// read is a usage error naming its flag, found before connecting. nats.go reads them
// only when it connects and reports a missing one as a failed connection: the client
// commands exited 7 (unavailable), and serve --nats-url retried for a minute, logging
// "NATS not reachable yet", as if NATS were not up.
func TestMissingCredentialFilesAreUsageErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	const url = "nats://127.0.0.1:1"
	serve := []string{"serve", "--log-level", "error", "--services", "lock", "--nats-url", url}
	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"session list", []string{"session", "list", "--server", url, "--tls-ca", missing}, "--tls-ca"},
		{"send", []string{"send", "--server", url, "--session", "x", "--path", "p", "--tls-cert", missing, "--tls-key", missing}, "--tls-cert"},
		{"serve --nats-tls-ca", append(serve, "--nats-tls-ca", missing), "--nats-tls-ca"},
		{"serve --nats-tls-key", append(serve, "--nats-tls-cert", os.Args[0], "--nats-tls-key", missing), "--nats-tls-key"},
		{"serve --nats-creds", append(serve, "--nats-creds", missing), "--nats-creds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			err := run(ctx, tc.args)
			if exitCode(err) != 2 || !strings.HasPrefix(fmt.Sprint(err), tc.flag+": ") {
				t.Errorf("got %v (exit %d), want a usage error (2) naming %s", err, exitCode(err), tc.flag)
			}
		})
	}
}

// TestServeOutOfRangeNumbersAreUsageErrors: numbers serve cannot use are usage errors
// found before anything starts. --replicas 0 or -1 ran with one copy and
// --drain-timeout 0 or -1s waited 10 s, without a word; --replicas 3 on an embedded
// server that is no cluster node failed after the server had started (exit 1).
func TestServeOutOfRangeNumbersAreUsageErrors(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"--replicas 0":                    {"--replicas", "0"},
		"--replicas -1":                   {"--replicas", "-1"},
		"--replicas 6":                    {"--nats-url", "nats://127.0.0.1:1", "--replicas", "6"},
		"--replicas 3 on a single server": {"--replicas", "3"},
		"--drain-timeout 0":               {"--drain-timeout", "0"},
		"--drain-timeout -1s":             {"--drain-timeout", "-1s"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			base := []string{"serve", "--log-level", "error"}
			if args[0] != "--nats-url" {
				base = append(base, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
			}
			if err := run(ctx, append(base, args...)); exitCode(err) != 2 {
				t.Errorf("got %v (exit %d), want a usage error (2)", err, exitCode(err))
			}
		})
	}
}

// TestValuesTheServiceRefusesAreUsageErrorsNamingTheFlag: values the services refuse
// are usage errors found before connecting, naming the flag. They were sent, and the
// service's refusal named its request member instead: "timeout_ms must be between 0
// and 60000" for request --wait 2m, "limit must be between 1 and 1000" for
// --page-size -1, "timeout_ms and permanent exclude each other" for session open
// --permanent --session-timeout 30s. Here, with no server, each exited 7.
func TestValuesTheServiceRefusesAreUsageErrorsNamingTheFlag(t *testing.T) {
	t.Parallel()
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"request --wait above 1m", []string{"request", "--session", "x", "--path", "p", "--wait", "61s"}, "--wait"},
		{"session list --page-size -1", []string{"session", "list", "--page-size", "-1"}, "--page-size"},
		{"session open --session-timeout -1s", []string{"session", "open", "--session-timeout", "-1s"}, "--session-timeout"},
		{"session open --permanent --session-timeout", []string{"session", "open", "--permanent", "--session-timeout", "30s"}, "--permanent"},
		{"listen --session-timeout -1s", []string{"listen", "--session-timeout", "-1s"}, "--session-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.run(ctx, "", tc.args...)
			if r.exit() != 2 || !strings.HasPrefix(fmt.Sprint(r.err), tc.flag+" ") {
				t.Errorf("got %v (exit %d), want a usage error (2) naming %s", r.err, r.exit(), tc.flag)
			}
		})
	}
}

// TestSessionFromTheEnvironmentIsNamedInErrors: a usage error about --session-id set
// only by ROSTER_SESSION_ID (an export of session open left in the shell) names the
// variable; it named only the flag, which the user had not given.
func TestSessionFromTheEnvironmentIsNamedInErrors(t *testing.T) {
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	ctx := testCtx(t)
	t.Setenv("ROSTER_SESSION_ID", "5QmZc1h8RqP0aLxV2yWfKd")
	for name, args := range map[string][]string{
		"without a token":         {"session", "get"},
		"lock --scope connection": {"lock", "acquire", "x", "--scope", "connection", "--session-token", "t"},
	} {
		t.Run(name, func(t *testing.T) {
			r := c.run(ctx, "", args...)
			if r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), "ROSTER_SESSION_ID") {
				t.Errorf("got %v (exit %d), want a usage error (2) naming ROSTER_SESSION_ID", r.err, r.exit())
			}
		})
	}
	if r := c.run(ctx, "", "session", "get", "--session-id", "x"); r.exit() != 2 || strings.Contains(fmt.Sprint(r.err), "ROSTER_SESSION_ID") {
		t.Errorf("--session-id on the command line: got %v (exit %d), want a usage error naming the flag alone", r.err, r.exit())
	}
}

// TestSessionSetNamesItsSessions: session set with neither --id, --filter nor
// --session-id is a usage error, as session close is. It updated the session opened
// for the command alone, printed "1 session updated" and closed it: nothing anyone
// could see had changed. (Here, with no server, it exited 7.)
func TestSessionSetNamesItsSessions(t *testing.T) {
	t.Parallel()
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	if r := c.run(testCtx(t), "", "session", "set", "Status=Closed"); r.exit() != 2 {
		t.Errorf("got %v (exit %d), want a usage error (2)", r.err, r.exit())
	}
}

// TestUnknownCommandsAreUsageErrors: a command a group does not have is a usage error
// (exit 2) naming it, with the commands meant when the name is close to one. The
// group printed its help and exited 0 (roster itself exited 1), so a mistyped
// roster session update passed in a script as if it had run. Without an argument a
// group still shows its help, with no usage line of its own.
func TestUnknownCommandsAreUsageErrors(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "roster": want one of `},
		// A flag's name given as a command: roster version said "did you mean session?".
		{[]string{"version"}, `unknown command "version" for "roster": did you mean --version?`},
		{[]string{"session", "update", "Desk=FX"}, `unknown command "update" for "roster session": did you mean set?`},
		{[]string{"session", "lsit"}, `unknown command "lsit" for "roster session": did you mean list`},
		{[]string{"lock", "take", "orders/42"}, `unknown command "take" for "roster lock": want one of acquire, list, release`},
		{[]string{"policy", "show"}, `unknown command "show" for "roster policy": want one of check, get, set`},
		// roster help printed roster's help and exited 0 for a topic it does not have.
		{[]string{"help", "bogus"}, `unknown command "bogus" for "roster": want one of `},
		{[]string{"help", "version"}, `unknown command "version" for "roster": did you mean --version?`},
		{[]string{"help", "session", "lsit"}, `unknown command "lsit" for "roster session": did you mean list`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runOffline(ctx, tc.args...)
			if r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), tc.want) {
				t.Errorf("got %v (exit %d), want a usage error (2) containing %q", r.err, r.exit(), tc.want)
			}
			if r.stdout != "" {
				t.Errorf("printed %q, want nothing on standard output", r.stdout)
			}
		})
	}
	for _, args := range [][]string{{}, {"session"}, {"lock", "--help"}, {"help"}, {"help", "session"}} {
		r := runOffline(ctx, args...)
		if r.err != nil || !strings.Contains(r.stdout, "Available Commands:") || strings.Contains(r.stdout, "[flags]\n") {
			t.Errorf("%q: got %q, %v; want the group's help, without a usage line of its own", args, r.stdout, r.err)
		}
	}
}

// TestArgumentErrorsShowTheUsage: a missing or extra argument is a usage error that
// shows the command's usage line; cobra's "accepts 1 arg(s), received 0" alone did
// not say which argument. A filter the shell split into words says to quote it.
func TestArgumentErrorsShowTheUsage(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lock", "release"}, "(usage: roster lock release NAME [flags])"},
		{[]string{"lock", "acquire"}, "(usage: roster lock acquire NAME [-- COMMAND [ARG...]] [flags])"},
		{[]string{"user", "add"}, "(usage: roster user add NAME [flags])"},
		{[]string{"policy", "set"}, "(usage: roster policy set FILE [flags])"},
		{[]string{"lock", "list", "orders/"}, "(usage: roster lock list [flags])"},
		{[]string{"filter", "check", "Department", "is", `"Accounts"`}, "the filter is one argument: quote it"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if r := runOffline(ctx, tc.args...); r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), tc.want) {
				t.Errorf("got %v (exit %d), want a usage error (2) containing %q", r.err, r.exit(), tc.want)
			}
		})
	}
}

// runOffline runs one roster command as given, without the --server cli.run adds
// (which commands that take no --server refuse), as main would.
func runOffline(ctx context.Context, args ...string) result {
	var out, errb bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	err := root.ExecuteContext(ctx)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// TestOpeningCommandsHideTheSessionFlags: listen and session open open a session of
// their own, so their help does not offer --session-id and --session-token ("act as
// this existing session instead of opening one", which they refuse), and
// --session-token on the command line is refused as --session-id is; it was taken
// and ignored. (Here, with no server, it exited 7.)
func TestOpeningCommandsHideTheSessionFlags(t *testing.T) {
	t.Parallel()
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	ctx := testCtx(t)
	for _, name := range [][]string{{"listen"}, {"session", "open"}} {
		r := runOffline(ctx, append(name, "--help")...)
		if r.err != nil || !strings.Contains(r.stdout, "--session-timeout") || strings.Contains(r.stdout, "--session-id string") || strings.Contains(r.stdout, "--session-token string") {
			t.Errorf("%q --help: got %q, %v; want the help without --session-id and --session-token", name, r.stdout, r.err)
		}
		args := append(name, "--session-token", "t")
		if r := c.run(ctx, "", args...); r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), "--session-token does not apply") {
			t.Errorf("%q: got %v (exit %d), want a usage error (2) saying --session-token does not apply", args, r.err, r.exit())
		}
	}
	if r := runOffline(ctx, "session", "get", "--help"); !strings.Contains(r.stdout, "--session-id string") {
		t.Errorf("session get --help: got %q, want --session-id offered", r.stdout)
	}
}

// TestCredentialFlagsThatCannotWorkAreUsageErrors: --password without --user, --user
// without a password, and --jwt with --user are usage errors (exit 2) naming the
// flags, found before anything is sent. --password alone was dropped without a word
// and the command ran anonymously where that is admitted; --user alone was refused
// by the server as "unauthenticated"; with both --jwt and --user, --jwt won silently.
// (Here, with no server, each exited 7.) A flag set through its variable is named by
// it.
func TestCredentialFlagsThatCannotWorkAreUsageErrors(t *testing.T) {
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	ctx := testCtx(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"session", "get", "--password", "pw"}, "--password needs --user"},
		{[]string{"listen", "--password", "pw"}, "--password needs --user"},
		{[]string{"session", "open", "--password", "pw"}, "--password needs --user"},
		{[]string{"session", "get", "--user", "alice"}, "--user needs --password"},
		{[]string{"lock", "list", "--user", "alice", "--password", "pw", "--jwt", "tok"}, "--jwt and --user"},
	} {
		if r := c.run(ctx, "", tc.args...); r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), tc.want) {
			t.Errorf("%q: got %v (exit %d), want a usage error (2) saying %s", tc.args, r.err, r.exit(), tc.want)
		}
	}
	t.Setenv("ROSTER_PASSWORD", "pw")
	if r := c.run(ctx, "", "session", "get"); r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), "ROSTER_PASSWORD") {
		t.Errorf("ROSTER_PASSWORD alone: got %v (exit %d), want a usage error (2) naming ROSTER_PASSWORD", r.err, r.exit())
	}
	if r := c.run(ctx, "", "session", "get", "--user", "alice", "--timeout", "1s"); r.exit() != exitUnavailable {
		t.Errorf("--user with ROSTER_PASSWORD: got %v (exit %d), want to try the server (exit %d)", r.err, r.exit(), exitUnavailable)
	}
}

// TestSessionTimeoutsTheServerRefusesNameTheFlag: a --session-timeout outside the
// bounds the server is configured with (roster serve --session-min-timeout and
// --session-max-timeout) is refused naming the flag and its value as given, with
// the server's bounds: the error named only the request member, in milliseconds
// ("timeout_ms 500 is outside [1000, 86400000]"), which now also says them as
// durations. It stays a usage error (exit 2).
func TestSessionTimeoutsTheServerRefusesNameTheFlag(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	for _, args := range [][]string{
		{"session", "open", "--session-timeout", "500ms"},
		{"listen", "--session-timeout", "48h"},
	} {
		d, _ := time.ParseDuration(args[len(args)-1])
		given := d.String()
		r := c.run(ctx, "", args...)
		if r.exit() != 2 || !strings.HasPrefix(fmt.Sprint(r.err), "--session-timeout "+given+": ") || !strings.Contains(fmt.Sprint(r.err), "1s to 24h") {
			t.Errorf("%q: got %v (exit %d), want a usage error (2) naming --session-timeout %s and the bounds 1s to 24h", args, r.err, r.exit(), given)
		}
	}
}

// TestServeRefusesOutput: roster serve -o json is a usage error pointing to
// --log-format, as other serve flags that would do nothing are: serve has no output
// but its log, which stayed text without a word. ROSTER_OUTPUT, which an operator
// may export for the client commands, is left alone.
func TestServeRefusesOutput(t *testing.T) {
	t.Parallel()
	err := run(testCtx(t), []string{"serve", "-o", "json", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()})
	if exitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), "--log-format") {
		t.Errorf("serve -o json: got %v (exit %d), want a usage error (2) pointing to --log-format", err, exitCode(err))
	}
}

// TestServerURLOfAnotherSchemeIsAUsageError: a --server that is no NATS address (an
// http:// one, copied from the monitoring port) is a usage error naming the flag and
// the schemes NATS speaks; it was tried, and failed after the timeout with "no
// servers available for connection". A host:port without a scheme is still tried.
// The error names the URL without its password.
func TestServerURLOfAnotherSchemeIsAUsageError(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	for _, server := range []string{"http://127.0.0.1:8222", "nats://127.0.0.1:1,https://127.0.0.1:2", "http://alice:wonderland-pw@127.0.0.1:8222"} {
		c := cli{t: t, server: server}
		if r := c.run(ctx, "", "session", "list"); r.exit() != 2 || !strings.Contains(fmt.Sprint(r.err), "not a NATS address") {
			t.Errorf("--server %s: got %v (exit %d), want a usage error (2) saying it is not a NATS address", server, r.err, r.exit())
		} else if strings.Contains(fmt.Sprint(r.err), "wonderland-pw") {
			t.Errorf("--server %s: the error repeats the password: %v", server, r.err)
		}
	}
	c := cli{t: t, server: "127.0.0.1:1"}
	if r := c.run(ctx, "", "session", "list", "--timeout", "1s"); r.exit() != exitUnavailable {
		t.Errorf("--server host:port: got %v (exit %d), want to try it (exit %d)", r.err, r.exit(), exitUnavailable)
	}
}

// TestFilterCheckSaysWhetherCELConfirms: roster filter check says how a filter's
// sessions are selected — every session, none, from the index exactly, or candidates
// CEL confirms — as the messaging service does it (filter.Plan). It said "CEL
// confirms each" also for plans the index answers exactly.
func TestFilterCheckSaysWhetherCELConfirms(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	for filter, want := range map[string]string{
		`all`:                   "selection: every session\n",
		`not all`:               "selection: no session\n",
		`a is "1" or b is "2"`:  "selection: from the index, exactly (no CEL):",
		`a is "1" and b ne "2"`: "selection: candidates from the index, then CEL confirms each:",
		`a ne "1"`:              "selection: every session is a candidate",
	} {
		r := runOffline(ctx, "filter", "check", filter)
		if r.err != nil || !strings.Contains(r.stdout, want) {
			t.Errorf("filter check %s: got %q, %v; want %q in it", filter, r.stdout, r.err, want)
		}
	}
}

// TestServeMalformedAddressesAreUsageErrors: a listen address of the embedded server
// that is no host:port is a usage error naming its flag, as a malformed
// --health-listen is. nats-server read them once the start had begun, and the
// process exited 1: "could not parse address string" naming no flag for --monitor
// and --cluster-listen (found by review).
func TestServeMalformedAddressesAreUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--listen", "bogus"}, `--listen "bogus": want host:port: address bogus: missing port in address`},
		{nil, []string{"--listen", "127.0.0.1:99999"}, `--listen "127.0.0.1:99999": want host:port: port "99999" is not a number from 0 to 65535`},
		{nil, []string{"--websocket", "127.0.0.1:x"}, `--websocket "127.0.0.1:x": want host:port: port "x" is not a number from 0 to 65535`},
		{map[string]string{"ROSTER_MONITOR": "bogus"}, nil, `--monitor (set by ROSTER_MONITOR) "bogus": want host:port: address bogus: missing port in address`},
		{nil, []string{"--cluster-listen", "127.0.0.1", "--system-password", "pw"}, `--cluster-listen "127.0.0.1": want host:port: address 127.0.0.1: missing port in address`},
	} {
		t.Run(tc.want, func(t *testing.T) { // a subtest: its environment ends with it
			wantUsage(t, tc.env, append([]string{"serve", "--log-level", "error", "--data-dir", t.TempDir()}, tc.args...), tc.want)
		})
	}
}

// TestServeUsageErrorsNameTheVariable: serve's usage errors about a value that came
// from the flag's environment variable name the variable, as the client commands'
// do. The deploy files configure serve through those variables alone, and a
// ROSTER_DRAIN_TIMEOUT=0s there was reported as --drain-timeout, a flag nobody had
// typed.
func TestServeUsageErrorsNameTheVariable(t *testing.T) {
	serve := []string{"serve", "--log-level", "error", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"ROSTER_DRAIN_TIMEOUT": "0s"}, `--drain-timeout (set by ROSTER_DRAIN_TIMEOUT) 0s: want a positive duration`},
		{map[string]string{"ROSTER_REPLICAS": "9"}, `--replicas (set by ROSTER_REPLICAS) 9: want 1 to 5`},
		{map[string]string{"ROSTER_REPLICAS": "3"}, `--replicas (set by ROSTER_REPLICAS) 3 needs a cluster: join one with --nats-url, or make the embedded server a node with --cluster-listen and --routes`},
		{map[string]string{"ROSTER_SYNC_INTERVAL": "often"}, `--sync-interval (set by ROSTER_SYNC_INTERVAL) "often": want "always" or a positive duration`},
		{map[string]string{"ROSTER_MAX_PROPERTIES": "0"}, `--max-properties (set by ROSTER_MAX_PROPERTIES) 0: want a positive number`},
		{map[string]string{"ROSTER_RECONNECT_WINDOW": "-1s"}, `--reconnect-window (set by ROSTER_RECONNECT_WINDOW) -1s: want a positive duration`},
		{map[string]string{"ROSTER_EVENTS_MAX_AGE": "1m"}, `--events-max-age (set by ROSTER_EVENTS_MAX_AGE) 1m0s: want at least 5m0s, the events stream's duplicate window`},
		{map[string]string{"ROSTER_SESSION_MAX_TIMEOUT": "1s"}, `--session-timeout 1m0s must lie within --session-min-timeout 1s and --session-max-timeout (set by ROSTER_SESSION_MAX_TIMEOUT) 1s`},
		// On the command line, only the flag.
		{nil, `--drain-timeout 0s: want a positive duration`},
	} {
		t.Run(tc.want, func(t *testing.T) { // a subtest: its environment ends with it
			args := serve
			if tc.env == nil {
				args = append(slices.Clone(serve), "--drain-timeout", "0s")
			}
			wantUsage(t, tc.env, args, tc.want)
		})
	}
}
