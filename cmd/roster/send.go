package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// messageFlags are the addressing and content flags of send and request.
type messageFlags struct {
	sessionID   string
	filter      string
	path        string
	contentType string
	headers     []string
	messageID   string
}

func (m *messageFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&m.sessionID, "session", "", "send to this session id")
	fs.StringVarP(&m.filter, "filter", "f", "", `send to every session matching this filter, e.g. 'Department is "Accounts"'`)
	fs.StringVar(&m.path, "path", "", "message path, e.g. chat/room1 (required)")
	fs.StringVar(&m.contentType, "content-type", "", "media type of the payload (default application/octet-stream)")
	fs.StringArrayVar(&m.headers, "header", nil, "extra header key=value for the receivers (repeatable)")
	fs.StringVar(&m.messageID, "message-id", "", "name the message (1 to 64 letters, digits, - or _): receivers using the SDK handle a message once per sender, so the command run again with the same id and --session-id is not handled twice (default: a new id per run)")
}

// message returns the target, payload and options; the payload is args[0], or
// stdin when it is "-".
func (m *messageFlags) message(cmd *cobra.Command, args []string) (client.Target, []byte, []client.MessageOption, error) {
	var to client.Target
	switch {
	case m.sessionID != "" && m.filter != "":
		return to, nil, nil, usageError{errors.New("--session and --filter exclude each other")}
	case m.sessionID != "":
		to = client.ToSession(m.sessionID)
	case m.filter != "":
		if err := checkFilter(m.filter); err != nil {
			return to, nil, nil, err
		}
		to = client.ToFilter(m.filter)
	default:
		return to, nil, nil, usageError{errors.New("name the receivers: --session ID or --filter FILTER")}
	}
	if m.path == "" {
		return to, nil, nil, usageError{errors.New("--path is required")}
	}
	var payload []byte
	if len(args) == 1 {
		if args[0] == "-" {
			data, err := readInput(cmd.Context(), cmd.InOrStdin(), 0)
			if err != nil {
				return to, nil, nil, fmt.Errorf("read the payload from stdin: %w", err)
			}
			payload = data
		} else {
			payload = []byte(args[0])
		}
	}
	var opts []client.MessageOption
	if m.messageID != "" {
		opts = append(opts, client.MessageID(m.messageID))
	}
	if m.contentType != "" {
		opts = append(opts, client.ContentType(m.contentType))
	}
	for _, h := range m.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return to, nil, nil, usageError{fmt.Errorf("header %q: want key=value", h)}
		}
		opts = append(opts, client.Header(k, v))
	}
	return to, payload, opts, nil
}

func newSendCmd() *cobra.Command {
	var f clientFlags
	var m messageFlags
	cmd := &cobra.Command{
		Use:   "send (--session ID | --filter FILTER) --path PATH [PAYLOAD | -]",
		Short: "Send a message to a session or to every session matching a filter",
		Long: `Send a message on a path to one session or to every session matching a filter
(SEND_TO_SESSION / SEND_TO_FILTER on the path), and print to how many sessions it was
delivered. The payload is the argument, or standard input with "-". Sending is
fire-and-forget: a session without a handler for the path still counts. The session
the command opens for itself (without --session-id) is not among a filter's receivers.`,
		Example: `  roster send --filter 'Department is "Accounts"' --path chat/room1 'hello'
  roster send --session 5QmZc1h8RqP0aLxV2yWfKd --path alerts --content-type application/json '{"level":"high"}'
  date | roster send --filter all --path clock --header Source=cron -`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			to, payload, opts, err := m.message(cmd, args)
			if err != nil {
				return err
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				n, err := s.Send(rctx, f.othersMatching(to, s), m.path, payload, opts...)
				if err != nil {
					return err
				}
				return out.emit(map[string]int{"delivered": n}, func(w io.Writer) {
					fmt.Fprintf(w, "delivered to %d %s\n", n, plural(n, "session", "sessions"))
				})
			})
		},
	}
	f.register(cmd.Flags())
	m.register(cmd.Flags())
	annotateEnv(cmd.Flags())
	return cmd
}

func newRequestCmd() *cobra.Command {
	var f clientFlags
	var m messageFlags
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "request (--session ID | --filter FILTER) --path PATH [PAYLOAD | -]",
		Short: "Send a request to a session or to every session matching a filter and print the answers",
		Long: `Send a request on a path and print one result per receiving session as it arrives:
ok with the answer, error (the receiver's error), timeout (no answer within --wait),
gone (no handler for the path, or the session's connection is gone) or
limit_exceeded. The exit status is 0 when every result is ok, else the status of
the first failed result's error (6 timeout, 7 gone, …). The session the command opens
for itself (without --session-id) is not among a filter's receivers.`,
		Example: `  roster request --filter 'has Desk' --path quote 'EURUSD'
  roster request --session 5QmZc1h8RqP0aLxV2yWfKd --path ping --wait 2s -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			to, payload, opts, err := m.message(cmd, args)
			if err != nil {
				return err
			}
			if maxWait := time.Duration(wire.MaxRequestTimeoutMS) * time.Millisecond; wait < 0 || wait > maxWait {
				return usageError{fmt.Errorf("%s %s: want 0 (the service's default, 5s) or a positive duration up to %s", flagSource(cmd, "wait"), wait, maxWait)}
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := context.WithTimeout(ctx, wait+f.timeout)
				defer cancel()
				var failed error
				n, err := s.RequestStream(rctx, f.othersMatching(to, s), m.path, payload, wait, func(r wire.MsgResult) {
					if r.Status != wire.StatusOK && failed == nil {
						failed = resultError(r)
					}
					_ = out.emit(resultJSON(r), func(w io.Writer) {
						if r.Status == wire.StatusOK {
							fmt.Fprintf(w, "%s ok: %s\n", r.SessionID, printable(r.Payload))
						} else {
							fmt.Fprintf(w, "%s %s: %v\n", r.SessionID, r.Status, oneLineError(r.Error))
						}
					})
				}, opts...)
				if err != nil {
					return err
				}
				if out.format == "text" {
					fmt.Fprintf(out.w, "%d %s\n", n, plural(n, "result", "results"))
				}
				return failed
			})
		},
	}
	f.register(cmd.Flags())
	m.register(cmd.Flags())
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Second, "how long each receiver has to answer (0: the service's default, 5s; at most 1m)")
	annotateEnv(cmd.Flags())
	return cmd
}

// othersMatching leaves the session opened for the command out of a filter's
// receivers (see othersOnly): a send counted it as delivered, and a request got
// "gone" from it and exited 7 whatever the others answered.
func (f *clientFlags) othersMatching(to client.Target, s *client.Session) client.Target {
	if to.Filter == "" {
		return to
	}
	return client.ToFilter(f.othersOnly(to.Filter, s))
}

func resultError(r wire.MsgResult) error {
	if r.Error != nil {
		return fmt.Errorf("session %s: %w", r.SessionID, oneLineError(r.Error))
	}
	return fmt.Errorf("session %s: %s", r.SessionID, r.Status)
}

// resultJSON is a request result with the payload as text when it is UTF-8.
func resultJSON(r wire.MsgResult) map[string]any {
	v := map[string]any{"session_id": r.SessionID, "status": r.Status}
	if r.ContentType != "" {
		v["content_type"] = r.ContentType
	}
	addPayload(v, r.Payload)
	if r.Error != nil {
		v["error"] = r.Error
	}
	return v
}

// addPayload sets "payload" to the text of p, or "payload_base64" when p is not
// UTF-8.
func addPayload(v map[string]any, p []byte) {
	if utf8.Valid(p) {
		v["payload"] = string(p)
	} else {
		v["payload_base64"] = base64.StdEncoding.EncodeToString(p)
	}
}

// printable returns p as text on one line (oneLine), or a byte count when it is not
// UTF-8.
func printable(p []byte) string {
	if utf8.Valid(p) {
		return oneLine(string(p))
	}
	return fmt.Sprintf("<%d bytes>", len(p))
}

// oneLine returns s, which another session chose (a payload, a content type, an
// error message), for a line of text output: as it is, or quoted with its line ends,
// control and bidirectional-text characters escaped (strconv.Quote) when it holds
// any. Printed as they came, a line end began a line that read as a delivery from
// another sender, and escape sequences reached the terminal.
func oneLine(s string) string {
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Bidi_Control) {
			return strconv.Quote(s)
		}
	}
	return s
}

// oneLineError returns e with its message made one line (oneLine): the message of
// a receiver's error is the receiver's.
func oneLineError(e *wire.Error) *wire.Error {
	if e == nil {
		return nil
	}
	return &wire.Error{Code: e.Code, Message: oneLine(e.Message)}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
