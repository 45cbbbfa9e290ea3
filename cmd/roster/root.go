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
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// envPrefix is the prefix of the environment variables every flag also reads:
// --data-dir reads ROSTER_DATA_DIR.
const envPrefix = "ROSTER_"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "roster",
		Short:         "Sessions, locks and filtered fan-out for NATS microservices",
		Long:          "Roster runs sessions, locks and filtered fan-out for NATS microservices.\n\nEvery flag can also be set through an environment variable: ROSTER_ followed by the\nflag name in upper case with dashes as underscores (--data-dir is ROSTER_DATA_DIR).",
		Version:       version,
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
	return root
}

// usageArgs makes the argument checks of cmd and its subcommands fail with usage
// errors.
func usageArgs(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		usageArgs(sub)
	}
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

// newLogger builds the process logger: text on a terminal, JSON when asked.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// exitCode maps an error to the process exit status: 2 for usage errors, the codes
// in output.go for Roster errors, 1 otherwise.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	if code, ok := wireExitCode(err); ok {
		return code
	}
	return 1
}

// usageError marks an error in how the command was called.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }
