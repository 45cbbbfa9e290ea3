package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Exit codes of the client commands, beside 0 (success), 1 (any other error) and 2
// (usage).
const (
	exitNotFound      = 3 // session_not_found, not_found
	exitDenied        = 4 // unauthenticated, invalid_token, forbidden
	exitSessionClosed = 5 // session_closed
	exitTimeout       = 6 // timeout
	exitUnavailable   = 7 // unavailable: no service answers or no connection
	exitConflict      = 8 // conflict, lock_not_held, stale_request, limit_exceeded, throttled
)

// wireExitCode maps a Roster error to an exit code. A command run by lock acquire
// passes its own exit status through.
func wireExitCode(err error) (int, bool) {
	var ce *commandExitError
	if errors.As(err, &ce) {
		return ce.code, true
	}
	var we *wire.Error
	if !errors.As(err, &we) {
		return 0, false
	}
	switch we.Code {
	case wire.CodeSessionNotFound, wire.CodeNotFound:
		return exitNotFound, true
	case wire.CodeUnauthenticated, wire.CodeInvalidToken, wire.CodeForbidden:
		return exitDenied, true
	case wire.CodeSessionClosed:
		return exitSessionClosed, true
	case wire.CodeTimeout:
		return exitTimeout, true
	case wire.CodeUnavailable:
		return exitUnavailable, true
	case wire.CodeConflict, wire.CodeLockNotHeld, wire.CodeStaleRequest, wire.CodeLimitExceeded, wire.CodeThrottled:
		return exitConflict, true
	case wire.CodeBadRequest, wire.CodeInvalidFilter, wire.CodeInvalidName, wire.CodeTooLarge:
		return 2, true
	}
	return 1, true
}

// output writes command results as text or JSON (-o json).
type output struct {
	w      io.Writer
	format string
	mu     sync.Mutex // serialises emit
}

func outputFor(cmd *cobra.Command) (*output, error) {
	format, _ := cmd.Flags().GetString("output")
	if format != "text" && format != "json" {
		return nil, usageError{fmt.Errorf("%s %q: want text or json", flagSource(cmd, "output"), format)}
	}
	return &output{w: cmd.OutOrStdout(), format: format}, nil
}

// columns returns a writer that lines tab-separated cells up under each other, three
// spaces apart; Flush writes them. Fixed widths pushed every value after a longer
// one (a RECOVERING state, a long lock name) out from under its heading.
func columns(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0) }

// emit writes v as one line of JSON in JSON mode, or calls text otherwise. Every
// command's JSON is one object per line, whether it prints one or streams them
// (listen, request, session events, session open), so that a script reads any of
// them line by line. Lines are written whole, so that concurrent callers holding
// no lock of their own do not interleave.
func (o *output) emit(v any, text func(w io.Writer)) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.format == "json" {
		return json.NewEncoder(o.w).Encode(v)
	}
	text(o.w)
	return nil
}
