package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/natsprobe"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// clientFlags are the connection and identity flags of every client command.
type clientFlags struct {
	server    string
	user      string
	password  string
	jwt       string
	sessionID string
	token     string
	timeout   time.Duration
	tls       tlsFiles
	// tp is the tracer provider of the command's client (see trace).
	tp trace.TracerProvider
}

func (f *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.server, "server", "s", "nats://127.0.0.1:4222", "NATS URL of Roster")
	fs.StringVar(&f.user, "user", "", "open the session as this user (password credentials)")
	fs.StringVar(&f.password, "password", "", "password for --user (the variable keeps it out of the process list)")
	fs.StringVar(&f.jwt, "jwt", "", "open the session with this JWT bearer token")
	fs.StringVar(&f.sessionID, "session-id", "", "act as this existing session instead of opening one (with --session-token)")
	fs.StringVar(&f.token, "session-token", "", "token of --session-id")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for each request")
	fs.StringVar(&f.tls.ca, "tls-ca", "", "CA certificates (PEM) the server's certificate is checked against (default: the system's)")
	fs.StringVar(&f.tls.cert, "tls-cert", "", "client certificate (PEM), for servers that require one (with --tls-key)")
	fs.StringVar(&f.tls.key, "tls-key", "", "private key (PEM) of --tls-cert")
}

// connect connects to Roster with the credentials and TLS files of the flags.
func (f *clientFlags) connect(cmd *cobra.Command) (*client.Client, error) {
	if err := f.checkCredentials(cmd); err != nil {
		return nil, err
	}
	if f.timeout <= 0 {
		// A request given no time fails at once: say so rather than time out.
		return nil, usageError{fmt.Errorf("%s %s: want a positive duration", flagSource(cmd, "timeout"), f.timeout)}
	}
	if err := checkServerURLs(cmd, f.server); err != nil {
		return nil, err
	}
	tlsOpts, err := f.tls.options("--tls")
	if err != nil {
		return nil, err
	}
	opts := []client.ConnectOption{client.WithCredentials(f.credentials()), client.WithNATSOptions(tlsOpts...)}
	if f.tp != nil {
		opts = append(opts, client.WithTracerProvider(f.tp))
	}
	c, err := client.Connect(f.server, opts...)
	if err != nil && f.credentials() == nil && errors.Is(err, wire.ErrUnauthenticated) {
		// Refused credentials nobody gave read as a mistake in them.
		return nil, fmt.Errorf("%w (no credentials were given: where anonymous connections are not admitted, give --user and --password, or --jwt)", err)
	}
	if err != nil {
		return nil, explainUntrusted(err, flagSource(cmd, "tls-ca"), f.tls.ca)
	}
	return c, nil
}

// explainUntrusted adds to a server certificate that no trusted CA signed the flag
// that names the CAs it is checked against (flag, set to ca if anything): a
// self-signed or private CA's certificate is a flag away from working, which x509's
// "certificate signed by unknown authority" does not say. Other errors it returns
// as they are.
func explainUntrusted(err error, flag, ca string) error {
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		return err
	}
	if ca == "" {
		return fmt.Errorf("%w (give %s: the CAs that signed the server's certificate)", err, flag)
	}
	return fmt.Errorf("%w (check %s %s: the CAs that signed the server's certificate)", err, flag, ca)
}

// checkServerURLs refuses a --server that names a scheme NATS does not speak
// (http://, say, copied from a monitoring address): it failed only after the
// timeout, with "no servers available for connection".
func checkServerURLs(cmd *cobra.Command, urls string) error {
	for _, u := range strings.Split(urls, ",") {
		scheme, _, found := strings.Cut(strings.TrimSpace(u), "://")
		if !found {
			continue // host:port, which nats.go reads as nats://
		}
		switch strings.ToLower(scheme) {
		case "nats", "tls", "ws", "wss":
		default:
			return usageError{fmt.Errorf("%s %q: %s:// is not a NATS address; want nats://, tls://, ws:// or wss://", flagSource(cmd, "server"), natsprobe.RedactURLs(strings.TrimSpace(u)), scheme)}
		}
	}
	return nil
}

// checkCredentials refuses credential flags that cannot be what the user meant: a
// password without a user was dropped and the command ran anonymously where that is
// admitted, a user without a password could only be refused, and with both --jwt and
// --user one of them was dropped without a word.
func (f *clientFlags) checkCredentials(cmd *cobra.Command) error {
	switch {
	case f.jwt != "" && f.user != "":
		return usageError{fmt.Errorf("%s and %s exclude each other: give one of them", flagSource(cmd, "jwt"), flagSource(cmd, "user"))}
	case f.password != "" && f.user == "":
		return usageError{fmt.Errorf("%s needs --user", flagSource(cmd, "password"))}
	case f.user != "" && f.password == "":
		return usageError{fmt.Errorf("%s needs --password (or %s, which keeps it out of the process list)", flagSource(cmd, "user"), envName("password"))}
	}
	return nil
}

func (f *clientFlags) credentials() *wire.Credentials {
	switch {
	case f.jwt != "":
		return client.JWT(f.jwt)
	case f.user != "":
		return client.Password(f.user, f.password)
	default:
		return nil
	}
}

// parseProps parses k=v pairs.
func parseProps(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("property %q: want key=value", p)}
		}
		out[k] = v
	}
	return out, nil
}

// forgetSession drops a session named through the environment, for a command that
// opens its own.
func (f *clientFlags) forgetSession() { f.sessionID, f.token = "", "" }

// opensOwnSession marks the flags of a command that opens a session of its own
// (listen, session open): --session-id and --session-token stay, so that their
// variables, an export of session open left in the shell, are read and ignored
// (forgetSession), but they are hidden from the help, where "act as this existing
// session instead of opening one" would be wrong.
func opensOwnSession(fs *pflag.FlagSet) {
	_ = fs.MarkHidden("session-id")
	_ = fs.MarkHidden("session-token")
}

// refuseSessionFlags refuses --session-id or --session-token given on the command
// line of a command that opens a session of its own; why says why it does.
func refuseSessionFlags(cmd *cobra.Command, why string) error {
	for _, flag := range []string{"session-id", "session-token"} {
		if onCommandLine(cmd, flag) {
			return usageError{fmt.Errorf("%s; --%s does not apply", why, flag)}
		}
	}
	return nil
}

// session runs fn with a session: the one named by --session-id, or one opened for
// this command and closed after it. It runs in the command's span (trace).
func (f *clientFlags) session(cmd *cobra.Command, opts client.Options, fn func(ctx context.Context, s *client.Session) error) (err error) {
	if f.sessionID != "" && f.token == "" {
		return usageError{fmt.Errorf("%s needs --session-token", flagSource(cmd, "session-id"))}
	}
	ctx, end := f.trace(cmd)
	defer func() { end(err) }()
	c, err := f.connect(cmd)
	if err != nil {
		return err // unavailable, or unauthenticated when the credentials are refused
	}
	defer c.Conn().Close()
	octx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.sessionID != "" {
		s, err := c.Attach(octx, f.sessionID, f.token, client.Options{})
		if err != nil {
			return sessionFromEnvironment(cmd, err)
		}
		reportConnection(cmd, s)
		return fn(ctx, s)
	}
	if opts.Credentials == nil {
		opts.Credentials = f.credentials()
	}
	s, err := c.Open(octx, opts)
	if err != nil {
		return refusedTimeout(cmd, err, opts.Timeout)
	}
	warnProperties(cmd.ErrOrStderr(), opts.Properties, s.Info().Properties)
	reportConnection(cmd, s)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
		defer cancel()
		_ = s.Close(cctx)
	}()
	return fn(ctx, s)
}

// refusedTimeout names --session-timeout in the registry's refusal of it, which
// names only the request member, in milliseconds: the bounds are the server's
// (roster serve --session-min-timeout, --session-max-timeout), unknown here.
func refusedTimeout(cmd *cobra.Command, err error, timeout time.Duration) error {
	var we *wire.Error
	if timeout > 0 && errors.As(err, &we) && we.Code == wire.CodeBadRequest && strings.HasPrefix(we.Message, "timeout_ms ") {
		return fmt.Errorf("%s %s: %w", flagSource(cmd, "session-timeout"), timeout, err)
	}
	return err
}

// warnProperties says on stderr which proposed properties the session did not get
// as proposed. The policy's properties rules veto or rewrite them at open without an
// error: a listen whose Department was vetoed waited, without a word, for messages
// sent to Department is "Accounts", which could not reach it.
func warnProperties(w io.Writer, proposed, got map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(proposed)) {
		switch v, ok := got[k]; {
		case !ok:
			fmt.Fprintf(w, "roster: property %s was not kept: the server's policy vetoes it\n", k)
		case v != proposed[k]:
			fmt.Fprintf(w, "roster: property %s is %q, not %q as proposed: the server's policy set it\n", k, v, proposed[k])
		}
	}
}

// reportConnection says on stderr when s loses its connection and when it is
// resumed. A command that runs for long (listen, session events --follow, lock
// acquire holding a lock) must not pass for quiet while nothing reaches it.
func reportConnection(cmd *cobra.Command, s *client.Session) {
	stderr := cmd.ErrOrStderr()
	s.OnStateChange(func(ch client.StateChange) {
		if ch.New != client.StateClosed { // a closed session ends the command, which says so
			fmt.Fprintf(stderr, "roster: session %s %s\n", s.ID(), formatStateChange(ch))
		}
	})
}

// sessionFromEnvironment adds to err, why the session --session-id names cannot be
// acted as, that the session came from ROSTER_SESSION_ID when only that named it: an
// export of session open left in the shell outlives its session, and every command
// then fails with an error about a session the user did not name.
func sessionFromEnvironment(cmd *cobra.Command, err error) error {
	if !errors.Is(err, wire.ErrSessionClosed) && !errors.Is(err, wire.ErrSessionNotFound) && !errors.Is(err, wire.ErrInvalidToken) {
		return err
	}
	if f := cmd.Flags().Lookup("session-id"); f == nil || !f.Changed || onCommandLine(cmd, "session-id") {
		return err
	}
	return fmt.Errorf("%w (the session of %s: unset %[2]s and %s to have the command open a session of its own)", err, envName("session-id"), envName("session-token"))
}

// flagSource names where flag's value came from, for an error about it: the flag,
// or its environment variable when only that set it (an export of session open
// left in the shell, say).
func flagSource(cmd *cobra.Command, flag string) string {
	if f := cmd.Flags().Lookup(flag); f != nil && f.Changed && !onCommandLine(cmd, flag) {
		return "--" + flag + " (set by " + envName(flag) + ")"
	}
	return "--" + flag
}

// othersOnly returns a filter matching what text matches ("": every session) but
// the session s when it was opened for this command (no --session-id): that one has
// no handler, ends with the command, and would be counted, listed, updated or closed
// like any other. Check text with checkFilter first: errors' offsets would be in the
// text returned.
func (f *clientFlags) othersOnly(text string, s *client.Session) string {
	if f.sessionID != "" {
		return text
	}
	return excludeSession(text, s.ID())
}

// excludeSession returns a filter matching what text matches ("": every session)
// but session id, or text itself when that filter would not compile: longer than
// filter.MaxLength, or, with the parentheses around text, nested deeper than
// filter.MaxDepth (the service refused such a filter, at an offset into text the
// user never wrote).
func excludeSession(text, id string) string {
	notMe := "$SessionId ne " + strconv.Quote(id)
	if text == "" {
		return notMe
	}
	out := "(" + text + ") and " + notMe
	if _, err := filter.Compile(out); err != nil {
		return text
	}
	return out
}

// checkFilter compiles a filter as the services do, so that an invalid one is
// reported before anything is sent, with offsets in the text given.
func checkFilter(text string) error {
	if _, err := filter.Compile(text); err != nil {
		return &wire.Error{Code: wire.CodeInvalidFilter, Message: err.Error()}
	}
	return nil
}

// requestContext bounds one request by --timeout.
func (f *clientFlags) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, f.timeout)
}
