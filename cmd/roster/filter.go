package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func newFilterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "filter",
		Short: "Work with session filters",
	}
	check := &cobra.Command{
		Use:   "check FILTER",
		Short: "Parse a session filter and show its CEL and how sessions are selected",
		Long: `Parse a session filter, as Roster does before selecting sessions, and show the CEL
program it compiles to and the index lookups that pick candidate sessions. An invalid
filter exits with status 2 and names the position and what was expected.`,
		Example: `  roster filter check 'Department is "Accounts" and $Country ne "US"'
  roster filter check 'hasRoles ["operator"] and not hasRoles ["administrator"]' -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				// roster filter check Department is "Accounts": the shell split it.
				return fmt.Errorf("the filter is one argument: quote it, as in roster filter check 'Department is \"Accounts\"'")
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			f, err := filter.Compile(args[0])
			if err != nil {
				return &wire.Error{Code: wire.CodeInvalidFilter, Message: err.Error()}
			}
			return out.emit(filterReport(f), func(w io.Writer) { printFilter(w, f) })
		},
	}
	cmd.AddCommand(check)
	return cmd
}

type filterJSON struct {
	Filter    string      `json:"filter"`
	Canonical string      `json:"canonical"`
	CEL       string      `json:"cel"`
	Plan      filter.Plan `json:"plan"`
}

func filterReport(f *filter.Filter) filterJSON {
	return filterJSON{Filter: f.String(), Canonical: f.Canonical(), CEL: f.CEL(), Plan: f.Plan()}
}

func printFilter(w io.Writer, f *filter.Filter) {
	fmt.Fprintf(w, "filter:    %s\n", f.String())
	fmt.Fprintf(w, "canonical: %s\n", f.Canonical())
	fmt.Fprintf(w, "cel:       %s\n", f.CEL())
	p := f.Plan()
	switch {
	case p.Full && p.Exact:
		fmt.Fprintln(w, "selection: every session")
		return
	case p.Full:
		fmt.Fprintln(w, "selection: every session is a candidate (the index cannot narrow this filter); CEL checks each")
		return
	case len(p.Terms) == 0:
		fmt.Fprintln(w, "selection: no session")
		return
	case p.Exact:
		fmt.Fprintln(w, "selection: from the index, exactly (no CEL):")
	default:
		fmt.Fprintln(w, "selection: candidates from the index, then CEL confirms each:")
	}
	for i, term := range p.Terms {
		var atoms []string
		for _, a := range term {
			atoms = append(atoms, describeAtom(a))
		}
		prefix := "  "
		if i > 0 {
			prefix = "  or "
		}
		fmt.Fprintf(w, "%s%s\n", prefix, strings.Join(atoms, " ∩ "))
	}
}

func describeAtom(a filter.Atom) string {
	switch {
	case a.Role:
		return fmt.Sprintf("sessions with role %q", a.Values[0])
	case a.Values == nil:
		return fmt.Sprintf("sessions that have %s", a.Key)
	case len(a.Values) == 1:
		return fmt.Sprintf("%s = %q", a.Key, a.Values[0])
	default:
		return fmt.Sprintf("%s in %q", a.Key, a.Values)
	}
}
