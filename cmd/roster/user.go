package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/services/auth"
)

func newUserCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage the users file of password credentials",
	}
	cmd.AddCommand(newUserAddCmd())
	return cmd
}

type userAddOptions struct {
	file       string
	roles      []string
	properties []string
	replace    bool
	cost       int
}

func newUserAddCmd() *cobra.Command {
	o := &userAddOptions{}
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user to the users file",
		Long: `Add a user to the users file that roster serve --users-file reads.

The password is read from the first line of standard input, so it never appears in
the process list or the shell history; on a terminal, user add asks for it and does
not echo it. It is stored only as a bcrypt hash; the file is rewritten atomically
with mode 0600. A running auth service picks the change up within a second.`,
		Example: `  roster user add carol --users-file users.yaml --role user      # asks for the password
  printf '%s\n' "$PASSWORD" | roster user add alice --users-file users.yaml --role user --role trader
  roster user add bob --users-file users.yaml --role admin --property Department=ops < password.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			return userAdd(cmd.Context(), cmd.InOrStdin(), cmd.ErrOrStderr(), out, args[0], o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.file, "users-file", "users.yaml", "users file to write")
	fs.StringSliceVar(&o.roles, "role", nil, "role of the user (repeat or separate with commas)")
	fs.StringArrayVar(&o.properties, "property", nil, "session property KEY=VALUE the user's sessions get (repeatable)")
	fs.BoolVar(&o.replace, "replace", false, "replace the user if present")
	fs.IntVar(&o.cost, "bcrypt-cost", auth.UserCost, "bcrypt cost, 4 to 31: the same for every user of the file (the auth service refuses a file of several)")
	annotateEnv(fs)
	return cmd
}

func userAdd(ctx context.Context, in io.Reader, prompt io.Writer, out *output, name string, o *userAddOptions) error {
	props := map[string]string{}
	for _, p := range o.properties {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return usageError{fmt.Errorf("--property %q: want KEY=VALUE", p)}
		}
		props[k] = v
	}
	password, err := readPassword(ctx, in, prompt, name)
	if err != nil {
		return fmt.Errorf("reading the password: %w", err)
	}
	password = strings.TrimRight(password, "\r\n")
	if password == "" {
		return usageError{errors.New("no password on standard input")}
	}
	if err := auth.AddUser(o.file, name, password, o.roles, props, o.cost, o.replace); err != nil {
		if errors.Is(err, auth.ErrUserExists) {
			return usageError{fmt.Errorf("%w (use --replace)", err)}
		}
		if errors.Is(err, auth.ErrInvalidUser) {
			return usageError{err}
		}
		return err
	}
	return out.emit(map[string]string{"user": name, "users_file": o.file}, func(w io.Writer) {
		fmt.Fprintf(w, "user %s written to %s\n", name, o.file)
	})
}

// errNotTerminal is echoOff's error for a file that is not a terminal.
var errNotTerminal = errors.New("not a terminal")

// readPassword reads name's password, the first line of in. On a terminal it asks
// for it on prompt and turns the echo off meanwhile, as passwd does: the password
// typed must not stay on the screen.
func readPassword(ctx context.Context, in io.Reader, prompt io.Writer, name string) (string, error) {
	f, ok := in.(*os.File)
	if !ok {
		return readLine(ctx, in)
	}
	restore, err := echoOff(f)
	if errors.Is(err, errNotTerminal) {
		return readLine(ctx, in)
	}
	if err != nil {
		return "", fmt.Errorf("turning off the terminal's echo: %w (give the password on a pipe instead)", err)
	}
	defer restore()
	fmt.Fprintf(prompt, "Password for %s: ", name)
	password, err := readLine(ctx, f)
	fmt.Fprintln(prompt) // the line end the user typed is not echoed either
	return password, err
}
