package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func newSessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Open, inspect, update and close sessions",
	}
	cmd.AddCommand(newSessionOpenCmd(), newSessionGetCmd(), newSessionListCmd(), newSessionSetCmd(), newSessionCloseCmd(), newSessionEventsCmd())
	return cmd
}

func newSessionOpenCmd() *cobra.Command {
	var f clientFlags
	var props []string
	var timeout time.Duration
	var permanent bool
	cmd := &cobra.Command{
		Use:   "open",
		Short: "Open a session and keep it open until interrupted",
		Long: `Open a session, print it, and keep it open — sending keepalives and resuming it
after a reconnect — until interrupted (Ctrl-C), then close it. State changes are printed
as they happen. Other commands can act as this session with --session-id and
--session-token (or ROSTER_SESSION_ID and ROSTER_SESSION_TOKEN), printed at start.`,
		Example: `  roster session open --property Department=Accounts --property Desk=FX
  ROSTER_PASSWORD="$ALICE_PASSWORD" roster session open --user alice --session-timeout 30s -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			p, err := parseProps(props)
			if err != nil {
				return err
			}
			if err := refuseSessionFlags(cmd, "session open opens a new session"); err != nil {
				return err
			}
			if err := checkSessionTimeout(cmd, timeout); err != nil {
				return err
			}
			if permanent && timeout != 0 {
				return usageError{errors.New("--permanent and --session-timeout exclude each other: a permanent session has no inactivity timeout")}
			}
			f.forgetSession() // one exported in the shell (session open prints the export)
			ctx, end := f.trace(cmd)
			defer func() { end(err) }()
			c, err := f.connect(cmd)
			if err != nil {
				return err // unavailable, or unauthenticated when the credentials are refused
			}
			defer c.Conn().Close()
			octx, cancel := f.requestContext(ctx)
			defer cancel()
			s, err := c.Open(octx, client.Options{Credentials: f.credentials(), Properties: p, Timeout: timeout, Permanent: permanent})
			if err != nil {
				return refusedTimeout(cmd, err, timeout)
			}
			warnProperties(cmd.ErrOrStderr(), p, s.Info().Properties)
			changes := make(chan client.StateChange, 16)
			s.OnStateChange(func(ch client.StateChange) {
				select {
				case changes <- ch:
				default:
				}
			})
			info := s.Info()
			if err := out.emit(map[string]any{"session": info, "token": s.Token()}, func(w io.Writer) {
				printSession(w, &info)
				fmt.Fprintf(w, "\nexport ROSTER_SESSION_ID=%s ROSTER_SESSION_TOKEN=%s\n\nOpen until interrupted (Ctrl-C).\n", info.ID, s.Token())
			}); err != nil {
				return err
			}
			for {
				select {
				case <-cmd.Context().Done():
					cctx, cancel := context.WithTimeout(context.Background(), f.timeout)
					defer cancel()
					return s.Close(cctx)
				case ch := <-changes:
					_ = out.emit(stateChangeOf(ch), func(w io.Writer) { fmt.Fprintf(w, "state %s\n", formatStateChange(ch)) })
					if ch.New == client.StateClosed {
						return &wire.Error{Code: wire.CodeSessionClosed, Message: fmt.Sprintf("session closed (%s)", ch.Reason)}
					}
				}
			}
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringArrayVarP(&props, "property", "p", nil, "proposed user property key=value (repeatable)")
	cmd.Flags().DurationVar(&timeout, "session-timeout", 0, "inactivity timeout of the session (0: the server's default)")
	cmd.Flags().BoolVar(&permanent, "permanent", false, "open a session without inactivity timeout (needs PERMANENT_SESSION)")
	opensOwnSession(cmd.Flags())
	annotateEnv(cmd.Flags())
	return cmd
}

func newSessionGetCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "get [ID]",
		Short: "Show a session: the own one, or another by id (VIEW_SESSION)",
		Example: `  roster session get 5QmZc1h8RqP0aLxV2yWfKd
  roster session get --session-id $ROSTER_SESSION_ID --session-token $ROSTER_SESSION_TOKEN`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				var got wire.Session
				if len(args) == 0 {
					got, err = s.Refresh(rctx)
				} else {
					got, err = s.GetSession(rctx, args[0])
				}
				if err != nil {
					return err
				}
				return out.emit(got, func(w io.Writer) { printSession(w, &got) })
			})
		},
	}
	f.register(cmd.Flags())
	annotateEnv(cmd.Flags())
	return cmd
}

func newSessionListCmd() *cobra.Command {
	var f clientFlags
	var filterText string
	var limit int
	var closed bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the sessions matching a filter (VIEW_SESSION)",
		Example: `  roster session list
  roster session list --filter 'Department is "Accounts"' -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageError{fmt.Errorf("%s %d: want 0 (the server's default) or a positive number", flagSource(cmd, "page-size"), limit)}
			}
			if filterText != "" {
				if err := checkFilter(filterText); err != nil {
					return err
				}
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				all := []*wire.Session{} // "sessions": [] in JSON when there are none, as lock list
				total, after := 0, ""
				for {
					rctx, cancel := f.requestContext(ctx)
					page, err := s.ListSessions(rctx, wire.SessionListRequest{Filter: f.othersOnly(filterText, s), After: after, Limit: limit, IncludeClosed: closed})
					cancel()
					if err != nil {
						return err
					}
					all, total = append(all, page.Sessions...), page.Total
					if page.Next == "" {
						break
					}
					after = page.Next
				}
				return out.emit(map[string]any{"sessions": all, "total": total}, func(w io.Writer) {
					tw := columns(w)
					fmt.Fprintf(tw, "ID\tSTATE\tPRINCIPAL\tROLES\tPROPERTIES\n")
					for _, x := range all {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.ID, x.State, orDash(x.Principal), orDash(strings.Join(x.Roles, ",")), formatProps(x.Properties))
					}
					_ = tw.Flush()
					fmt.Fprintf(w, "%d %s\n", total, plural(total, "session", "sessions"))
				})
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVarP(&filterText, "filter", "f", "", "session filter (all sessions when empty)")
	cmd.Flags().IntVar(&limit, "page-size", 0, "sessions per request (0: the server's default)")
	cmd.Flags().BoolVar(&closed, "include-closed", false, "also list closed sessions still remembered")
	annotateEnv(cmd.Flags())
	return cmd
}

func newSessionSetCmd() *cobra.Command {
	var f clientFlags
	var target, filterText string
	var remove []string
	cmd := &cobra.Command{
		Use:        "set [KEY=VALUE ...]",
		SuggestFor: []string{"update"}, // the request is session.update
		Short:      "Set and remove user properties: of the own session, or others by id or filter (VIEW_SESSION and MODIFY_SESSION)",
		Example: `  roster session set Status=Closed --id 5QmZc1h8RqP0aLxV2yWfKd
  roster session set --filter 'Department is "Payroll"' Status=Closed --remove Desk
  roster session set Desk=FX --session-id $ROSTER_SESSION_ID --session-token $ROSTER_SESSION_TOKEN`,
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			set, err := parseProps(args)
			if err != nil {
				return err
			}
			if len(set) == 0 && len(remove) == 0 {
				return usageError{errors.New("nothing to set or remove")}
			}
			if target == "" && filterText == "" && f.sessionID == "" {
				// The session opened for this command alone would be updated, then
				// closed: "1 session updated", and nothing changed that anyone sees.
				return usageError{errors.New("name the sessions to update: --id, --filter, or --session-id (with --session-token) for your own")}
			}
			if filterText != "" {
				if err := checkFilter(filterText); err != nil {
					return err
				}
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				req := wire.SessionUpdateRequest{ID: target, Filter: filterText, Set: set, Remove: remove}
				if filterText != "" {
					req.Filter = f.othersOnly(filterText, s)
				}
				n, err := s.UpdateSessions(rctx, req)
				if err != nil {
					return err
				}
				return out.emit(map[string]int{"updated": n}, func(w io.Writer) { fmt.Fprintf(w, "%d %s updated\n", n, plural(n, "session", "sessions")) })
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&target, "id", "", "update this session instead of the own one")
	cmd.Flags().StringVarP(&filterText, "filter", "f", "", "update every session matching this filter")
	cmd.Flags().StringArrayVar(&remove, "remove", nil, "property key to remove (repeatable)")
	annotateEnv(cmd.Flags())
	return cmd
}

func newSessionCloseCmd() *cobra.Command {
	var f clientFlags
	var filterText string
	cmd := &cobra.Command{
		Use:   "close [ID]",
		Short: "Close a session by id, the own one (--session-id), or every session matching a filter",
		Example: `  roster session close 5QmZc1h8RqP0aLxV2yWfKd
  roster session close --filter 'Department is "Payroll"'
  roster session close --session-id $ROSTER_SESSION_ID --session-token $ROSTER_SESSION_TOKEN`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			if len(args) == 0 && filterText == "" && f.sessionID == "" {
				return usageError{errors.New("name a session id, --filter, or --session-id")}
			}
			if filterText != "" {
				if err := checkFilter(filterText); err != nil {
					return err
				}
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				var n int
				switch {
				case len(args) == 1 || filterText != "":
					req := wire.SessionCloseRequest{}
					if len(args) == 1 {
						req.ID = args[0]
					}
					if filterText != "" {
						req.Filter = f.othersOnly(filterText, s)
					}
					n, err = s.CloseSessions(rctx, req)
				default:
					n, err = 1, s.Close(rctx)
				}
				if err != nil {
					return err
				}
				return out.emit(map[string]int{"closed": n}, func(w io.Writer) { fmt.Fprintf(w, "%d %s closed\n", n, plural(n, "session", "sessions")) })
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVarP(&filterText, "filter", "f", "", "close every session matching this filter")
	annotateEnv(cmd.Flags())
	return cmd
}

// checkSessionTimeout refuses a negative --session-timeout before a session is
// opened (the registry refused it as "timeout_ms must not be negative").
func checkSessionTimeout(cmd *cobra.Command, d time.Duration) error {
	if d < 0 {
		return usageError{fmt.Errorf("%s %s: want 0 (the server's default) or a positive duration", flagSource(cmd, "session-timeout"), d)}
	}
	return nil
}

func printSession(w io.Writer, s *wire.Session) {
	fmt.Fprintf(w, "id:         %s\n", s.ID)
	fmt.Fprintf(w, "state:      %s", s.State)
	if s.CloseReason != "" {
		fmt.Fprintf(w, " (%s)", s.CloseReason)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "principal:  %s\n", orDash(s.Principal))
	fmt.Fprintf(w, "roles:      %s\n", orDash(strings.Join(s.Roles, ", ")))
	if s.Permanent {
		fmt.Fprintln(w, "timeout:    none (permanent)")
	} else {
		fmt.Fprintf(w, "timeout:    %s\n", time.Duration(s.TimeoutMS)*time.Millisecond)
	}
	fmt.Fprintf(w, "properties: %s\n", formatProps(s.Properties))
	fmt.Fprintf(w, "fixed:      %s\n", formatProps(s.Fixed))
}

func formatProps(p map[string]string) string {
	if len(p) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, p[k]))
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stateChange is a session's change of state as session open prints it with -o json.
type stateChange struct {
	Old    wire.SessionState `json:"old_state"`
	New    wire.SessionState `json:"new_state"`
	Reason wire.CloseReason  `json:"reason,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// formatStateChange is a change of state as text: "ACTIVE -> RECOVERING: unavailable:
// connection to NATS lost", with the close reason, and the cause when there is one.
func formatStateChange(ch client.StateChange) string {
	text := fmt.Sprintf("%s -> %s", ch.Old, ch.New)
	if ch.Reason != "" {
		text += " (" + string(ch.Reason) + ")"
	}
	if ch.Err != nil {
		text += ": " + ch.Err.Error()
	}
	return text
}

func stateChangeOf(ch client.StateChange) stateChange {
	c := stateChange{Old: ch.Old, New: ch.New, Reason: ch.Reason}
	if ch.Err != nil {
		c.Error = ch.Err.Error()
	}
	return c
}
