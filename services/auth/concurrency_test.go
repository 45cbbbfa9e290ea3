package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// usersService starts the auth service with one users-file user, alice/alice-pw
// (bcrypt cost 8), and a throttle of three failures an hour.
func usersService(t *testing.T, srv *natstest.Server, callout *CalloutConfig) *harness {
	t.Helper()
	name := filepath.Join(t.TempDir(), "users.yaml")
	if err := AddUser(name, "alice", "alice-pw", []string{"user"}, nil, 8, false); err != nil {
		t.Fatal(err)
	}
	users, err := NewUsersFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, srv, Config{Authenticators: []Authenticator{users}, InitialPolicy: testPolicy(),
		Throttle: ThrottleConfig{MaxFailures: 3, Window: time.Hour}, Callout: callout})
}

// burst runs n calls of fn at once.
func burst(n int, fn func(i int)) {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			fn(i)
		}()
	}
	close(gate)
	wg.Wait()
}

// TestThrottleConcurrentGuesses sends 40 wrong passwords for one user from one
// address at once: no more than the three failures the throttle allows may be
// checked (all 40 were, when the throttle was checked before the credentials and
// counted after). Then 20 right passwords from another address at once all succeed:
// concurrent attempts wait for each other, they are not refused.
func TestThrottleConcurrentGuesses(t *testing.T) {
	h := usersService(t, nil, nil)
	nc := h.srv.ServiceConn(t)
	call := func(user, pw, host string) error {
		req := wire.AuthenticateRequest{
			Credentials: &wire.Credentials{Username: user, Password: pw},
			Client:      &wire.RequestInfo{Host: host + ":4000"},
		}
		var resp wire.AuthenticateResponse
		return wire.Call(t.Context(), nc, wire.SubjectAuthenticate, nil, req, &resp)
	}
	var mu sync.Mutex
	var checked, throttled int
	burst(40, func(i int) {
		err := call("alice", fmt.Sprint("guess-", i), "203.0.113.7")
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, wire.ErrUnauthenticated):
			checked++
		case errors.Is(err, wire.ErrThrottled):
			throttled++
		default:
			t.Errorf("unexpected result %v", err)
		}
	})
	if checked > 3 || checked+throttled != 40 {
		t.Fatalf("%d of 40 concurrent wrong passwords checked, %d throttled; the throttle allows 3", checked, throttled)
	}
	var ok int
	// A fresh service (alice is used up on the first): the right password, 20 at once.
	h2 := usersService(t, nil, nil)
	nc2 := h2.srv.ServiceConn(t)
	burst(20, func(int) {
		req := wire.AuthenticateRequest{Credentials: &wire.Credentials{Username: "alice", Password: "alice-pw"},
			Client: &wire.RequestInfo{Host: "198.51.100.2:4000"}}
		var resp wire.AuthenticateResponse
		err := wire.Call(t.Context(), nc2, wire.SubjectAuthenticate, nil, req, &resp)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("a right password in a burst: %v", err)
			return
		}
		ok++
	})
	if ok != 20 {
		t.Fatalf("%d of 20 concurrent right passwords admitted", ok)
	}
}

// TestThrottleConcurrentGuessesThroughTheCallout: the same burst reached by an
// unauthenticated NATS client through the auth callout, 30 CONNECTs at once with
// wrong passwords. The service's log says how many were checked.
func TestThrottleConcurrentGuessesThroughTheCallout(t *testing.T) {
	srv, kp := calloutServer(t)
	h := usersService(t, srv, &CalloutConfig{Issuer: kp, Account: "CLIENTS"})
	const n = 30
	burst(n, func(i int) {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("alice", fmt.Sprintf("guess-%d", i)), nats.MaxReconnects(0), nats.Timeout(30*time.Second))
		if err == nil {
			nc.Close()
			t.Errorf("guess %d admitted", i)
		}
	})
	var checked, throttled int
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		log := h.log.String()
		checked = strings.Count(log, "authentication denied")
		throttled = strings.Count(log, "authentication throttled")
		if checked+throttled < n {
			return fmt.Errorf("%d of %d attempts decided", checked+throttled, n)
		}
		return nil
	})
	if checked > 3 {
		t.Fatalf("%d wrong passwords were checked through the callout (%d throttled); the throttle allows 3", checked, throttled)
	}
}

// TestUsersFileWithMixedCostsIsRefused: unknown users are compared against a dummy
// hash; with hashes of several costs in the file no dummy costs what every user does
// (cost 4 against 10: 10 ms against 600 ms), and timing would tell which users
// exist. Such a file is refused with a message saying what to do, and AddUser does
// not write one: it wrote it, locking every user out.
func TestUsersFileWithMixedCostsIsRefused(t *testing.T) {
	name := filepath.Join(t.TempDir(), "users.yaml")
	if err := AddUser(name, "cheap", "pw-cheap", []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	if _, err := NewUsersFile(name); err != nil {
		t.Fatalf("one cost: %v", err)
	}
	if err := AddUser(name, "dear", "pw-dear", []string{"user"}, nil, bcrypt.MinCost+1, false); !errors.Is(err, ErrInvalidUser) {
		t.Fatalf("adding a user of another cost: got %v, want ErrInvalidUser", err)
	}
	if _, err := NewUsersFile(name); err != nil {
		t.Fatalf("after the refused AddUser: %v", err)
	}
	if err := AddUser(name, "cheap", "pw-dear", []string{"user"}, nil, bcrypt.MinCost+1, true); err != nil {
		t.Fatalf("replacing the only user with another cost: %v", err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-dear"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(f, "    dear:\n        hash: %s\n", hash); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewUsersFile(name); err == nil || !strings.Contains(err.Error(), "re-add users") {
		t.Fatalf("got %v, want the mixed costs refused", err)
	}
}

// TestUsersFileReloadsAChangeThatKeepsSizeAndTime replaces a password (bcrypt
// hashes have one length, so the size stays) and gives the file its old mtime, as a
// write in the same timestamp tick or a copy with cp -p does: the change is picked
// up, since the file is compared by contents.
func TestUsersFileReloadsAChangeThatKeepsSizeAndTime(t *testing.T) {
	name := filepath.Join(t.TempDir(), "users.yaml")
	if err := AddUser(name, "alice", "old-password", []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	f, err := NewUsersFile(name)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(name)
	if err := AddUser(name, "alice", "new-password", []string{"user"}, nil, bcrypt.MinCost, true); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(name); st2.Size() != st.Size() {
		t.Fatalf("sizes differ (%d, %d)", st.Size(), st2.Size())
	}
	natstest.CheckFor(t, 5*time.Second, 100*time.Millisecond, func() error {
		d, err := f.Authenticate(t.Context(), &Attempt{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "new-password"}})
		if err != nil {
			return err
		}
		if d.Verdict != Allow {
			return fmt.Errorf("the new password: %v", d.Verdict)
		}
		return nil
	})
	d, err := f.Authenticate(t.Context(), &Attempt{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "old-password"}})
	if err != nil || d.Verdict == Allow {
		t.Fatalf("the replaced password: %v, %v; want refused", d.Verdict, err)
	}
}

// TestPolicySetRefusesEmptyLists: "names": [] would be stored without the list
// (omitempty) and read back as a grant on every name; "values": [] likewise as any
// value. Both are refused with bad_request, and the stored policy is unchanged.
func TestPolicySetRefusesEmptyLists(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	svc := h.srv.ServiceConn(t)
	for _, body := range []string{
		`{"policy":{"roles":{"trader":[{"permission":"ACQUIRE_LOCK","names":[]}]},"anonymous":{"allowed":false}}}`,
		`{"policy":{"roles":{},"anonymous":{"allowed":false},"properties":{"rules":[{"key":"Department","values":[]}]}}}`,
	} {
		err := wire.Call(t.Context(), svc, wire.SubjectPolicySet, nil, json.RawMessage(body), nil)
		if !errors.Is(err, wire.ErrBadRequest) || !strings.Contains(err.Error(), "is empty") {
			t.Fatalf("%s: got %v, want bad_request", body, err)
		}
	}
	if _, ok := h.svc.Policy().Load().Roles["trader"]; ok {
		t.Fatal("the refused policy was applied")
	}
}

// TestPolicySetRefusesNullLists: "names": null (or "values": null) decoded as an
// absent list, so policy.set stored a grant on every name (a rule accepting any
// value) where a policy file saying the same is refused. Both are bad_request, and
// the stored policy is unchanged.
func TestPolicySetRefusesNullLists(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	svc := h.srv.ServiceConn(t)
	for _, body := range []string{
		`{"policy":{"roles":{"trader":[{"permission":"ACQUIRE_LOCK","names":null}]},"anonymous":{"allowed":false}}}`,
		`{"policy":{"roles":{"trader":[]},"anonymous":{"allowed":false},"properties":{"rules":[{"key":"Department","values":null}]}}}`,
	} {
		err := wire.Call(t.Context(), svc, wire.SubjectPolicySet, nil, json.RawMessage(body), nil)
		if !errors.Is(err, wire.ErrBadRequest) || !strings.Contains(err.Error(), "null") {
			t.Fatalf("%s: got %v, want bad_request", body, err)
		}
	}
	if _, ok := h.svc.Policy().Load().Roles["trader"]; ok {
		t.Fatal("the refused policy was applied")
	}
}

// TestUsersFileThatFailsToLoadAdmitsNobody: an operator removes a user by editing
// the users file and leaves a mistake in it. The file no longer loads, and every
// password attempt fails (internal) until it is fixed — the removed user included.
// The reload was tried at most once a second and a failure did not replace what was
// loaded, so between the failures, for up to a second each time, the old file's
// users — the removed one too — were admitted.
func TestUsersFileThatFailsToLoadAdmitsNobody(t *testing.T) {
	name := filepath.Join(t.TempDir(), "users.yaml")
	for _, u := range []string{"alice", "mallory"} {
		if err := AddUser(name, u, u+"-pw", []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
			t.Fatal(err)
		}
	}
	f, err := NewUsersFile(name)
	if err != nil {
		t.Fatal(err)
	}
	users, err := ReadUsers(name)
	if err != nil {
		t.Fatal(err)
	}
	broken := fmt.Sprintf("users:\n  alice:\n    hash: %q\n    rolse: [user]\n", users["alice"].Hash)
	if err := os.WriteFile(name, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	attempt := func() (Decision, error) {
		return f.Authenticate(t.Context(), &Attempt{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "mallory", Password: "mallory-pw"}})
	}
	natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if _, err := attempt(); err == nil {
			return errors.New("the broken file has not been read yet")
		}
		return nil
	})
	for i := range 5 {
		if d, err := attempt(); err == nil || d.Verdict == Allow {
			t.Fatalf("attempt %d after the file broke: got %v, %v; want an error", i, d.Verdict, err)
		}
	}
	// Fixed, the file is read again: alice is admitted, mallory is not.
	fixed := strings.Replace(broken, "rolse", "roles", 1)
	if err := os.WriteFile(name, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		d, err := f.Authenticate(t.Context(), &Attempt{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "alice-pw"}})
		if err != nil || d.Verdict != Allow {
			return fmt.Errorf("alice after the fix: %v, %v", d.Verdict, err)
		}
		return nil
	})
	if d, err := attempt(); err != nil || d.Verdict == Allow {
		t.Fatalf("mallory after the fix: got %v, %v; want not admitted", d.Verdict, err)
	}
}

// TestAddUserErrorsNameTheFile: a users file AddUser cannot write is named in the
// error as given. The error named the temporary file it writes first
// (".../.users-735671750"), a file the user never heard of.
func TestAddUserErrorsNameTheFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "missing-dir", "users.yaml")
	err := AddUser(name, "alice", "alice-pw", []string{"user"}, nil, bcrypt.MinCost, false)
	if err == nil || !strings.Contains(err.Error(), name+":") || strings.Contains(err.Error(), ".users-") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want an error naming %s (and matching fs.ErrNotExist), not its temporary file", err, name)
	}
}

// TestUsersFileOfCommentsOnlyOrSeveralDocuments: a users file that holds only
// comments (a header an operator wrote before adding anyone) is an empty one; it
// failed to load with "EOF", so no password was checked and roster user add could
// not add the first user to it. A file of several YAML documents is refused: only
// the first was read, so the users of the others could not log in without a word,
// and AddUser rewrote the file with the first document alone, deleting them.
func TestUsersFileOfCommentsOnlyOrSeveralDocuments(t *testing.T) {
	dir := t.TempDir()
	commented := filepath.Join(dir, "commented.yaml")
	if err := os.WriteFile(commented, []byte("# Roster users: roster user add NAME --users-file commented.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewUsersFile(commented); err != nil {
		t.Fatalf("a users file of comments only: got %v, want an empty one", err)
	}
	if err := AddUser(commented, "alice", "alice-pw", []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatalf("adding the first user to a users file of comments only: %v", err)
	}
	if users, err := ReadUsers(commented); err != nil || len(users) != 1 {
		t.Fatalf("after adding alice: got %v, %v; want alice", users, err)
	}

	data, err := os.ReadFile(commented)
	if err != nil {
		t.Fatal(err)
	}
	bob := strings.Replace(string(data), "alice", "bob", 1)
	several := filepath.Join(dir, "several.yaml")
	if err := os.WriteFile(several, []byte(string(data)+"---\n"+bob), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewUsersFile(several); err == nil {
		t.Fatal("a users file of two YAML documents loaded; want it refused")
	}
	if err := AddUser(several, "carol", "carol-pw", nil, nil, bcrypt.MinCost, false); err == nil {
		t.Fatal("AddUser rewrote a users file of two YAML documents; want it refused")
	}
	if after, err := os.ReadFile(several); err != nil || !strings.Contains(string(after), "bob") {
		t.Fatalf("the second document's user is gone from the file (%v)", err)
	}
}
