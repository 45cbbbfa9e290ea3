package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func newSessionEventsCmd() *cobra.Command {
	var f clientFlags
	var id string
	var kinds []string
	var since time.Duration
	var fromSeq uint64
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print stored session events from a point, and follow new ones (VIEW_SESSION for others' events)",
		Long: `Print the session events stored from a point — a stream sequence (--from-seq), a
time (--since), or without either the oldest event kept (--events-max-age of roster
serve, a week by default) — then, with --follow, every new one as it is stored, until
interrupted.
Each line names the event's sequence: start again from the last one printed plus one to
miss nothing. Every session's events, or another session's (--id), need VIEW_SESSION;
the own session's (--id with the own id) need nothing.`,
		Example: `  roster session events --since 1h
  roster session events --follow --kind closed -o json
  roster session events --id 5QmZc1h8RqP0aLxV2yWfKd --from-seq 1200`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			if since < 0 {
				return usageError{fmt.Errorf("%s %s: want a positive duration (how long ago to start)", flagSource(cmd, "since"), since)}
			}
			if since != 0 && fromSeq != 0 {
				return usageError{errors.New("--since and --from-seq exclude each other")}
			}
			req := wire.SessionEventsRequest{SessionID: id, StartSeq: fromSeq}
			for _, k := range kinds {
				req.Kinds = append(req.Kinds, wire.SessionEventKind(k))
			}
			if since > 0 {
				start := time.Now().Add(-since)
				req.StartTime = &start
			}
			emit := func(ev wire.StoredSessionEvent) error {
				return out.emit(ev, func(w io.Writer) { printEvent(w, ev) })
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				if follow {
					err := s.FollowEvents(ctx, req, emit)
					if errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
						return nil // interrupted
					}
					return err
				}
				for {
					rctx, cancel := f.requestContext(ctx)
					page, err := s.Events(rctx, req)
					cancel()
					if err != nil {
						return err
					}
					for _, ev := range page.Events {
						if err := emit(ev); err != nil {
							return err
						}
					}
					if len(page.Events) == 0 && page.NextSeq == req.StartSeq {
						return nil
					}
					req.StartSeq, req.StartTime = page.NextSeq, nil
				}
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&id, "id", "", "only this session's events")
	cmd.Flags().StringSliceVar(&kinds, "kind", nil, "only these kinds: opened, updated, disconnected, reconnected, principal_changed, closed")
	cmd.Flags().DurationVar(&since, "since", 0, "start at the events stored this long ago (default: the oldest kept)")
	cmd.Flags().Uint64Var(&fromSeq, "from-seq", 0, "start at this stream sequence (default: the oldest kept)")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing new events until interrupted")
	annotateEnv(cmd.Flags())
	return cmd
}

// printEvent writes one event as a line of text.
func printEvent(w io.Writer, ev wire.StoredSessionEvent) {
	e := ev.Event
	detail := ""
	switch {
	case e.Reason != "":
		detail = " reason=" + string(e.Reason)
	case len(e.Keys) > 0:
		detail = " keys=" + strings.Join(e.Keys, ",")
	}
	fmt.Fprintf(w, "%d %s %s %s principal=%s state=%s%s\n", ev.Seq, ev.Stored.Local().Format(time.RFC3339Nano), e.SessionID, e.Kind, orDash(e.Principal), e.State, detail)
}
