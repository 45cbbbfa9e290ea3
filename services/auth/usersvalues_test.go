package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsersFileErrorsQuoteNoValue: a users file in the wrong shape — a password in
// plain text where a user belongs — failed with yaml's error, which quotes the
// value ("cannot unmarshal !!str `hunter2` into auth.User"), printed at start and
// logged on every password attempt. The error still names the line and the types.
func TestUsersFileErrorsQuoteNoValue(t *testing.T) {
	for _, tc := range []struct{ file, secret string }{
		{"users:\n  alice: hunter2\n", "hunter2"},
		{"users:\n  alice: correct-horse-battery\n", "correct"},
		{"users:\n  alice:\n    hash: $2a$04$abcdefghijklmnopqrstuu\n    roles: s3cr3t-pw\n", "s3cr3t"},
	} {
		name := filepath.Join(t.TempDir(), "users.yaml")
		if err := os.WriteFile(name, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewUsersFile(name)
		if err == nil || !strings.Contains(err.Error(), "line ") || !strings.Contains(err.Error(), "cannot unmarshal !!str into") {
			t.Errorf("%q: got %v, want yaml's error naming the line and the types", tc.file, err)
			continue
		}
		if strings.Contains(err.Error(), tc.secret) {
			t.Errorf("%q: the error quotes the value: %v", tc.file, err)
		}
	}
}
