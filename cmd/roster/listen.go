package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func newListenCmd() *cobra.Command {
	var f clientFlags
	var props, paths []string
	var reply string
	var replySet bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "listen",
		Short: "Open a session and print the messages sent to it as they arrive",
		Long: `Open a session with the given properties, handle the given paths (every path by
default), and print each delivery as it arrives: path, sender session, content type
and payload (-o json: one JSON object per line). A payload or content type that is not
one line of printable text is printed quoted, its line ends and control characters
escaped, so that it cannot pass for another delivery. Requests are answered with --reply,
or with their own payload (echo). Runs until interrupted (Ctrl-C), then closes the
session. The session id is printed on standard error at start, so that others can
send to it with --session, and so is each change of the session's state: a lost
connection (RECOVERING: nothing reaches the session) and its resumption (ACTIVE).`,
		Example: `  roster listen --property Department=Accounts
  roster listen --path chat/room1 --path alerts -o json
  roster listen --property Desk=FX --path quote --reply '1.0842'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			p, err := parseProps(props)
			if err != nil {
				return err
			}
			if err := refuseSessionFlags(cmd, "listen opens its own session: deliveries reach only the connection a session is bound to"); err != nil {
				return err
			}
			if err := checkSessionTimeout(cmd, timeout); err != nil {
				return err
			}
			f.forgetSession() // one exported in the shell (session open prints the export)
			// "*" takes every path: beside it another registration would get each of
			// its deliveries a second time (and answer its requests twice). A path
			// given twice would likewise.
			if len(paths) == 0 || slices.Contains(paths, "*") {
				paths = []string{"*"}
			}
			slices.Sort(paths)
			paths = slices.Compact(paths)
			replySet = cmd.Flags().Changed("reply")
			return f.session(cmd, client.Options{Properties: p, Timeout: timeout}, func(ctx context.Context, s *client.Session) error {
				closed := make(chan client.StateChange, 1)
				s.OnStateChange(func(ch client.StateChange) {
					if ch.New == client.StateClosed {
						select {
						case closed <- ch:
						default:
						}
					}
				})
				handler := func(_ context.Context, m *client.Message) ([]byte, error) {
					_ = out.emit(deliveryJSON(m), func(w io.Writer) { printDelivery(w, m) })
					if !m.IsRequest {
						return nil, nil
					}
					if replySet {
						return []byte(reply), nil
					}
					return m.Payload, nil
				}
				for _, path := range paths {
					if _, err := s.Handle(path, handler); err != nil {
						return usageError{fmt.Errorf("%s %q: %w", flagSource(cmd, "path"), path, err)}
					}
				}
				shown := strings.Join(paths, ", ")
				if shown == "*" {
					shown = "every path"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "listening as session %s on %s (Ctrl-C to stop)\n", s.ID(), shown)
				select {
				case <-ctx.Done():
					return nil
				case ch := <-closed:
					return &wire.Error{Code: wire.CodeSessionClosed, Message: fmt.Sprintf("session closed (%s)", ch.Reason)}
				}
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringArrayVarP(&props, "property", "p", nil, "proposed user property key=value (repeatable)")
	cmd.Flags().StringArrayVar(&paths, "path", nil, "path to handle (repeatable; default every path)")
	cmd.Flags().StringVar(&reply, "reply", "", "answer requests with this text (default: echo the request's payload)")
	cmd.Flags().DurationVar(&timeout, "session-timeout", 0, "inactivity timeout of the session (0: the server's default)")
	opensOwnSession(cmd.Flags())
	annotateEnv(cmd.Flags())
	return cmd
}

func printDelivery(w io.Writer, m *client.Message) {
	kind := "message"
	if m.IsRequest {
		kind = "request"
	}
	fmt.Fprintf(w, "%s on %s from %s (%s): %s\n", kind, m.Path, m.Sender, oneLine(m.ContentType), printable(m.Payload))
}

func deliveryJSON(m *client.Message) map[string]any {
	v := map[string]any{"path": m.Path, "sender": m.Sender, "content_type": m.ContentType, "request": m.IsRequest}
	if len(m.Headers) > 0 {
		v["headers"] = m.Headers
	}
	addPayload(v, m.Payload)
	return v
}
