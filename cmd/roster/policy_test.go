package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
)

// TestPolicyCommands: policy get prints what policy set and serve --policy read;
// set replaces the policy, conditionally on the revision get printed; check and set
// refuse an invalid file before anything is sent.
func TestPolicyCommands(t *testing.T) {
	c := newCLI(t)
	ctx := testCtx(t)

	r := c.run(ctx, "", "policy", "get")
	if r.err != nil {
		t.Fatalf("policy get: %v\n%s", r.err, r.stderr)
	}
	first, doc, _ := strings.Cut(r.stdout, "\n")
	var rev uint64
	if _, err := fmt.Sscanf(first, "# revision %d:", &rev); err != nil {
		t.Fatalf("policy get starts with %q, want the revision", first)
	}
	got, err := policy.Parse([]byte(r.stdout))
	if err != nil {
		t.Fatalf("policy get's output does not parse: %v\n%s", err, r.stdout)
	}
	if !reflect.DeepEqual(got, policy.Development()) {
		t.Fatalf("policy get: got %+v, want the development policy", got)
	}

	// Edit and store it, conditionally on the revision read.
	file := filepath.Join(t.TempDir(), "policy.yaml")
	edited := strings.Replace(doc, "shared_inbox: true", "shared_inbox: false", 1)
	if edited == doc {
		t.Fatalf("the development policy has no shared_inbox: true:\n%s", doc)
	}
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	at := strconv.FormatUint(rev, 10)
	r = c.run(ctx, "", "policy", "set", file, "--revision", at, "-o", "json")
	if r.err != nil {
		t.Fatalf("policy set: %v\n%s", r.err, r.stderr)
	}
	var stored policy.Response
	if err := json.Unmarshal([]byte(r.stdout), &stored); err != nil || stored.Revision <= rev || stored.Policy.Connections.SharedInbox {
		t.Fatalf("policy set -o json: got %s (%v), want the edited policy at a later revision than %d", r.stdout, err, rev)
	}
	if r = c.run(ctx, "", "policy", "set", file, "--revision", at); r.exit() != exitConflict {
		t.Fatalf("policy set at a stale revision: exit %d (%v), want %d", r.exit(), r.err, exitConflict)
	}
	r = c.run(ctx, "", "policy", "get", "-o", "json")
	var now policy.Response
	if err := json.Unmarshal([]byte(r.stdout), &now); err != nil || now.Revision != stored.Revision || now.Policy.Connections.SharedInbox {
		t.Fatalf("policy get -o json after the change: got %s (%v)", r.stdout, err)
	}

	// An invalid policy is refused before it is sent, from a file or stdin.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("roles:\n  x:\n    - permission: FLY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r = offline("policy", "check", bad); r.exit() != 2 || !strings.Contains(r.err.Error(), "FLY") {
		t.Fatalf("policy check of an unknown permission: exit %d (%v), want 2 naming it", r.exit(), r.err)
	}
	if r = c.run(ctx, "roles: {}\nanonymous: {allowed: false}\nextra: 1\n", "policy", "set", "-"); r.exit() != 2 {
		t.Fatalf("policy set of an unknown field: exit %d (%v), want 2", r.exit(), r.err)
	}
	if r = offline("policy", "check", file); r.err != nil || !strings.Contains(r.stdout, "valid") {
		t.Fatalf("policy check of a valid file: %q, %v", r.stdout, r.err)
	}
	r = c.run(ctx, "", "policy", "get", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &now); err != nil || now.Revision != stored.Revision {
		t.Fatalf("a refused policy changed the stored one: %s", r.stdout)
	}
}

// offline runs a command that needs no server.
func offline(args ...string) result {
	var out, errb natstest.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.Execute()
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}
