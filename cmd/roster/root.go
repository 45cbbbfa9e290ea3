package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/seed-3c836eab/roster/pkg/telemetry"
	"github.com/seed-3c836eab/roster/pkg/version"
)

// envPrefix is the prefix of the environment variables every flag also reads:
// --data-dir reads ROSTER_DATA_DIR.
const envPrefix = "ROSTER_"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "roster",
		Short:         "Sessions, locks and filtered fan-out for NATS microservices",
		Long:          "Roster runs sessions, locks and filtered fan-out for NATS microservices.\n\nEvery flag can also be set through an environment variable: ROSTER_ followed by the\nflag name in upper case with dashes as underscores (--data-dir is ROSTER_DATA_DIR).",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd)
		},
	}
	root.PersistentFlags().StringP("output", "o", "text", "output format: text or json")
	root.AddCommand(newServeCmd(), newFilterCmd(), newSessionCmd(), newLockCmd(), newSendCmd(), newRequestCmd(), newListenCmd())
	root.AddCommand(newUserCmd(), newPolicyCmd())
	// Flags and arguments cobra refuses are usage errors (exit 2), like ours.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	usageArgs(root)
	strictHelp(root)
	reportInterrupts(root)
	// A group made runnable by usageArgs shows only "roster session [command]" as
	// its usage, as before: it runs nothing of its own.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	return root
}

// usageArgs makes the argument checks of cmd and its subcommands fail with usage
// errors that show the command's usage line: cobra's "accepts 1 arg(s), received 0"
// alone does not say which argument is missing.
//
// A group of commands (roster, roster session …) refuses an argument that names
// none of its commands, as a usage error: cobra printed the group's help and exited
// 0 (1 for roster itself), so a mistyped command such as roster session update
// passed in a script as if it had run. Without an argument the group shows its help.
func usageArgs(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{fmt.Errorf("%w (usage: %s)", err, cmd.UseLine())}
			}
			return nil
		}
	}
	if cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return usageError{unknownCommand(cmd, args[0])}
		}
	}
	for _, sub := range cmd.Commands() {
		usageArgs(sub)
	}
}

// strictHelp makes roster help refuse a topic that names no command, as a usage
// error: cobra's help printed roster's own help and exited 0 for roster help
// nosuch (the groups take any argument, so cobra found roster itself).
func strictHelp(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	for _, help := range root.Commands() {
		if help.Name() != "help" || help.Run == nil {
			continue
		}
		run := help.Run
		help.Run = nil
		help.RunE = func(cmd *cobra.Command, args []string) error {
			if target, rest, err := cmd.Root().Find(args); err == nil && len(rest) > 0 && target.HasSubCommands() {
				return usageError{unknownCommand(target, rest[0])}
			}
			run(cmd, args)
			return nil
		}
	}
}

// unknownCommand is the error for name given to the group cmd, with the commands it
// may have meant, or the list of its commands.
func unknownCommand(cmd *cobra.Command, name string) error {
	cmd.InitDefaultVersionFlag() // not yet there when roster help runs
	if f := cmd.Flags().Lookup(name); f != nil {
		// roster version: the name of a flag, not of a command.
		return fmt.Errorf("unknown command %q for %q: did you mean --%s?", name, cmd.CommandPath(), f.Name)
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		return fmt.Errorf("unknown command %q for %q: did you mean %s?", name, cmd.CommandPath(), strings.Join(s, " or "))
	}
	var names []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return fmt.Errorf("unknown command %q for %q: want one of %s", name, cmd.CommandPath(), strings.Join(names, ", "))
}

// envName is the environment variable a flag reads.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv sets every flag not given on the command line from its environment
// variable, if that is set.
func bindEnv(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
				return
			}
			if f.Annotations == nil {
				f.Annotations = map[string][]string{}
			}
			f.Annotations[fromEnvAnnotation] = []string{envName(f.Name)}
		}
	})
	if len(errs) > 0 {
		return usageError{errors.Join(errs...)}
	}
	return nil
}

// fromEnvAnnotation marks a flag bindEnv set from its environment variable.
const fromEnvAnnotation = "roster_from_env"

// onCommandLine reports whether flag was given on the command line, not only
// through its environment variable.
func onCommandLine(cmd *cobra.Command, flag string) bool {
	f := cmd.Flags().Lookup(flag)
	if f == nil || !f.Changed {
		return false
	}
	_, env := f.Annotations[fromEnvAnnotation]
	return !env
}

// annotateEnv adds the environment variable to each flag's usage text.
func annotateEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += " [$" + envName(f.Name) + "]"
	})
}

// newLogger builds the process logger: text on a terminal, JSON when asked; a line
// logged with a request's context names its trace (telemetry.LogHandler).
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationsAsText}
	switch format {
	case "text":
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(w, opts))), nil
	case "json":
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, opts))), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// durationsAsText writes a duration as the text handler does (250ms): the JSON
// handler wrote it in nanoseconds ("retry_in":5000000000).
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// exitCode maps an error to the process exit status: 2 for usage errors, the codes
// in output.go for Roster errors, 1 otherwise.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	var sig signalError
	if errors.As(err, &sig) {
		return sig.exitCode()
	}
	if code, ok := wireExitCode(err); ok {
		return code
	}
	return 1
}

// usageError marks an error in how the command was called.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }
