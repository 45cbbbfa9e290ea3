package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Read, check and replace the permission policy",
		Long: `The policy maps roles to permissions and says which properties a client may
propose (docs/architecture.md, "Roster permissions and the policy"). Reading and
replacing it needs a session whose roles grant MODIFY_SECURITY; every service applies
a new policy within a second, without a restart.`,
	}
	cmd.AddCommand(newPolicyGetCmd(), newPolicySetCmd(), newPolicyCheckCmd())
	return cmd
}

func newPolicyGetCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Print the stored policy as YAML, headed by its revision (MODIFY_SECURITY)",
		Long: `Print the stored policy as YAML, the form roster policy set and roster serve
--policy read, headed by a comment with its revision. -o json prints the policy and
its revision as the policy endpoints answer them.`,
		Example: `  roster policy get > policy.yaml
  roster policy get -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				p, rev, err := s.Policy(rctx)
				if err != nil {
					return err
				}
				var doc bytes.Buffer
				enc := yaml.NewEncoder(&doc)
				enc.SetIndent(2)
				if err := errors.Join(enc.Encode(p), enc.Close()); err != nil {
					return err
				}
				return out.emit(policy.Response{Policy: p, Revision: rev}, func(w io.Writer) {
					fmt.Fprintf(w, "# revision %d: roster policy set FILE --revision %d replaces it only if unchanged\n%s", rev, rev, doc.Bytes())
				})
			})
		},
	}
	f.register(cmd.Flags())
	annotateEnv(cmd.Flags())
	return cmd
}

func newPolicySetCmd() *cobra.Command {
	var f clientFlags
	var revision uint64
	cmd := &cobra.Command{
		Use:   "set FILE",
		Short: "Replace the stored policy with a YAML or JSON file, - for standard input (MODIFY_SECURITY)",
		Long: `Replace the stored policy with FILE (YAML or JSON; - reads standard input). The
file is checked first, as roster policy check does; an invalid one changes nothing and
exits with status 2. With --revision, the policy is replaced only if it is still at that
revision (what roster policy get printed): a change made by someone else meanwhile
exits with status 8 and leaves theirs in place.`,
		Example: `  roster policy get > policy.yaml && $EDITOR policy.yaml
  roster policy set policy.yaml --revision 7`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			p, err := readPolicy(cmd, args[0])
			if err != nil {
				return err
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				rev, err := s.SetPolicy(rctx, p, revision)
				if err != nil {
					return err
				}
				return out.emit(policy.Response{Policy: p, Revision: rev}, func(w io.Writer) {
					fmt.Fprintf(w, "policy stored at revision %d\n", rev)
				})
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().Uint64Var(&revision, "revision", 0, "replace only if the stored policy is still at this revision (0: whatever is stored)")
	annotateEnv(cmd.Flags())
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Check a policy file without storing it",
		Long: `Parse and validate a policy file (YAML or JSON; - reads standard input) as Roster
does before storing it: unknown fields, unknown permissions, malformed name patterns
and lists left without items are errors (exit status 2). Needs no server.`,
		Example: `  roster policy check policy.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			p, err := readPolicy(cmd, args[0])
			if err != nil {
				return err
			}
			return out.emit(map[string]any{"valid": true, "roles": len(p.Roles)}, func(w io.Writer) {
				fmt.Fprintf(w, "%s: valid, %d %s\n", args[0], len(p.Roles), plural(len(p.Roles), "role", "roles"))
			})
		},
	}
}

// readPolicy reads and checks a policy file, or standard input for "-". An invalid
// policy is bad_request (exit status 2), as the service would answer.
func readPolicy(cmd *cobra.Command, name string) (*policy.Policy, error) {
	var p *policy.Policy
	var err error
	if name == "-" {
		data, rerr := readInput(cmd.Context(), cmd.InOrStdin(), policy.MaxSize+1)
		if rerr != nil {
			return nil, rerr
		}
		p, err = policy.Parse(data)
	} else {
		p, err = policy.LoadFile(name)
	}
	if err != nil {
		return nil, &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
	return p, nil
}
