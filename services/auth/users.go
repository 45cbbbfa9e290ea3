package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// UserCost is the bcrypt cost roster user add hashes passwords with.
const UserCost = 12

// MaxBcryptPassword is the longest password a users file can hold: bcrypt reads no
// more bytes than this.
const MaxBcryptPassword = 72

// User is an entry of a users file.
type User struct {
	// Hash is the bcrypt hash of the password.
	Hash       string            `yaml:"hash"`
	Roles      []string          `yaml:"roles,omitempty"`
	Properties map[string]string `yaml:"properties,omitempty"`
}

// usersDoc is the users file:
//
//	users:
//	  alice:
//	    hash: $2a$12$...
//	    roles: [user, trader]
//	    properties: {Department: sales}
type usersDoc struct {
	Users map[string]User `yaml:"users"`
}

// ErrUserExists is returned by AddUser when the user is present and replace is false.
var ErrUserExists = errors.New("auth: user already exists")

// ErrInvalidUser is returned by AddUser for a user it cannot write: a name,
// password, property key or bcrypt cost out of range, or a cost other than that of
// the users already in the file (which NewUsersFile refuses).
var ErrInvalidUser = errors.New("auth: invalid user")

// ReadUsers parses a users file. A missing file is an empty one.
func ReadUsers(name string) (map[string]User, error) {
	data, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]User{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth: users file: %w", err)
	}
	users, err := parseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("auth: users file %s: %w", name, err)
	}
	return users, nil
}

// parseUsers reads a users file's contents. Nothing but white space and comments is
// an empty file. More than one YAML document is refused: only the first would be
// read, and AddUser would write the file back without the others.
func parseUsers(data []byte) (map[string]User, error) {
	var doc usersDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, withoutValues(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if doc.Users == nil {
		doc.Users = map[string]User{}
	}
	for name, u := range doc.Users {
		if name == "" || len(name) > MaxUsernameLength {
			return nil, fmt.Errorf("invalid user name %q", name)
		}
		if _, err := bcrypt.Cost([]byte(u.Hash)); err != nil {
			return nil, fmt.Errorf("user %q: hash is not bcrypt: %w", name, err)
		}
		for k := range u.Properties {
			if !policy.ValidPropertyKey(k) || k[0] == '$' {
				return nil, fmt.Errorf("user %q: invalid property key %q", name, k)
			}
		}
	}
	return doc.Users, nil
}

// withoutValues returns err with the values a yaml.TypeError quotes taken out
// ("cannot unmarshal !!str `hunter2` into auth.User"): a users file in the wrong
// shape may hold a password in plain text where a user belongs ("alice: hunter2"),
// and the error is printed at start and logged on every password attempt until the
// file is mended. The line and the types say what is wrong.
func withoutValues(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, msg := range te.Errors {
		if start, end := strings.Index(msg, " `"), strings.LastIndex(msg, "` into "); start >= 0 && end > start {
			msg = msg[:start] + msg[end+1:]
		}
		out.Errors[i] = msg
	}
	return out
}

// AddUser adds (or, with replace, replaces) a user in the users file, hashing the
// password with bcrypt at cost. The file is rewritten atomically with mode 0600.
func AddUser(name, user, password string, roles []string, props map[string]string, cost int, replace bool) error {
	if user == "" || len(user) > MaxUsernameLength {
		return fmt.Errorf("%w: user name must be 1 to %d bytes", ErrInvalidUser, MaxUsernameLength)
	}
	if password == "" || len(password) > MaxBcryptPassword {
		// bcrypt ignores bytes after the 72nd; refuse rather than silently truncate.
		return fmt.Errorf("%w: password must be 1 to %d bytes", ErrInvalidUser, MaxBcryptPassword)
	}
	for k := range props {
		if !policy.ValidPropertyKey(k) || k[0] == '$' {
			return fmt.Errorf("%w: invalid property key %q", ErrInvalidUser, k)
		}
	}
	// bcrypt would hash with its default cost (10) below its minimum.
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return fmt.Errorf("%w: bcrypt cost %d is outside %d to %d", ErrInvalidUser, cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	users, err := ReadUsers(name)
	if err != nil {
		return err
	}
	if _, ok := users[user]; ok && !replace {
		return fmt.Errorf("%w: %s", ErrUserExists, user)
	}
	// A file of several costs does not load (see loadLocked): written, it would lock
	// every user out, of a running auth service too.
	for other, u := range users {
		if c, err := bcrypt.Cost([]byte(u.Hash)); err == nil && other != user && c != cost {
			return fmt.Errorf("%w: the users in %s have bcrypt cost %d, not %d (a file of several costs is refused)", ErrInvalidUser, name, c, cost)
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return fmt.Errorf("auth: hash password: %w", err)
	}
	users[user] = User{Hash: string(hash), Roles: roles, Properties: props}
	data, err := yaml.Marshal(usersDoc{Users: users})
	if err != nil {
		return fmt.Errorf("auth: users file: %w", err)
	}
	// Errors name the file asked for, not the temporary file beside it.
	tmp, err := os.CreateTemp(filepath.Dir(name), ".users-*")
	if err != nil {
		return fmt.Errorf("auth: users file %s: cannot write in its directory: %w", name, pathCause(err))
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: users file %s: %w", name, pathCause(err))
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: users file %s: %w", name, pathCause(err))
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("auth: users file %s: %w", name, pathCause(err))
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("auth: users file %s: %w", name, pathCause(err))
	}
	return nil
}

// pathCause is the cause of a file operation's error without the path it names (the
// temporary file's).
func pathCause(err error) error {
	if cause := errors.Unwrap(err); cause != nil {
		return cause
	}
	return err
}

// UsersFile authenticates password credentials against a users file. It rereads the
// file when it changes (checked at most once a second), so roster user add takes
// effect without a restart. Unknown users get the same bcrypt work and the same
// denial as a wrong password, so neither timing nor message tells whether a user
// exists. While the file does not load, every attempt fails with its error; so it
// does while the file is missing or empty, once started (in the middle of a save).
type UsersFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	sum     [sha256.Size]byte
	users   map[string]User
	dummy   []byte
	// err is why the file, as it is now (sum), does not load: every attempt fails
	// until its contents change.
	err error
}

// NewUsersFile loads a users file.
func NewUsersFile(path string) (*UsersFile, error) {
	f := &UsersFile{path: path}
	if err := f.reload(time.Now(), true); err != nil {
		return nil, err
	}
	return f, nil
}

// Name implements Authenticator.
func (f *UsersFile) Name() string { return "users" }

// Authenticate implements Authenticator: it abstains for other credential types and
// for users not in the file (another authenticator may know them), allows a correct
// password and denies a wrong one.
func (f *UsersFile) Authenticate(_ context.Context, a *Attempt) (Decision, error) {
	if a.Credentials.Type != wire.CredentialsPassword {
		return Decision{Verdict: Abstain}, nil
	}
	users, dummy, err := f.current()
	if err != nil {
		return Decision{}, err
	}
	u, ok := users[a.Credentials.Username]
	hash := []byte(u.Hash)
	if !ok {
		hash = dummy
	}
	// bcrypt compares in constant time. It reads only the first MaxBcryptPassword
	// bytes, so a longer password would match any that starts with them: it is
	// compared all the same (the time spent says nothing) and refused.
	pw := a.Credentials.Password
	match := bcrypt.CompareHashAndPassword(hash, []byte(pw)) == nil && len(pw) <= MaxBcryptPassword
	if !ok {
		// The comparison above only spent the time a real user costs.
		return Decision{Verdict: Abstain}, nil
	}
	if !match {
		return Decision{Verdict: Deny, Reason: "wrong password"}, nil
	}
	props := make(map[string]string, len(u.Properties))
	for k, v := range u.Properties {
		props[k] = v
	}
	return Decision{Verdict: Allow, Principal: a.Credentials.Username, Roles: append([]string(nil), u.Roles...), Properties: props}, nil
}

// Usernames returns the users in the file, sorted.
func (f *UsersFile) Usernames() ([]string, error) {
	users, _, err := f.current()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(users))
	for n := range users {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func (f *UsersFile) current() (map[string]User, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if now.Sub(f.checked) >= time.Second {
		if err := f.reloadLocked(now, false); err != nil {
			return nil, nil, err
		}
	}
	if f.err != nil {
		return nil, nil, f.err
	}
	return f.users, f.dummy, nil
}

func (f *UsersFile) reload(now time.Time, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloadLocked(now, force)
}

func (f *UsersFile) reloadLocked(now time.Time, force bool) error {
	f.checked = now
	// Compare contents, not mtime and size: a replaced password keeps the size, and
	// a write in the same timestamp tick (or cp -p, rsync -t) keeps the mtime.
	data, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		data = nil
	case err != nil:
		f.users, f.sum, f.err = nil, [sha256.Size]byte{}, fmt.Errorf("auth: users file: %w", err)
		return f.err
	}
	sum := sha256.Sum256(data)
	if !force && sum == f.sum {
		return f.err
	}
	// A file that does not load admits nobody, not the users it had before: the
	// change that broke it may have been a user's removal.
	f.users, f.sum, f.err = nil, sum, nil
	if !force && len(bytes.TrimSpace(data)) == 0 {
		// Gone or empty after start is how a save looks halfway (an editor removes
		// the file and writes it anew, or truncates it and writes in place). Read
		// as no users, every user was denied — and each denial counted a failure
		// against them and their address — until the next check. Failing attempts
		// counts none. An empty file on purpose holds "users: {}".
		f.err = fmt.Errorf("auth: users file %s is missing or empty (being written?): no user is admitted until it holds users", f.path)
		return f.err
	}
	if err := f.loadLocked(data); err != nil {
		f.err = fmt.Errorf("auth: users file %s: %w", f.path, err)
		return f.err
	}
	return nil
}

func (f *UsersFile) loadLocked(data []byte) error {
	users, err := parseUsers(data)
	if err != nil {
		return err
	}
	// Unknown users are compared against a dummy hash of the users' cost; with
	// several costs no dummy costs what every user does, and timing would tell
	// which users exist, so such a file is refused.
	cost, first := bcrypt.DefaultCost, true
	for name, u := range users {
		c, err := bcrypt.Cost([]byte(u.Hash))
		if err != nil {
			continue
		}
		if !first && c != cost {
			return fmt.Errorf("user %q has bcrypt cost %d, others %d: re-add users so all have one cost", name, c, cost)
		}
		cost, first = c, false
	}
	if f.dummy == nil || dummyCost(f.dummy) != cost {
		f.dummy, err = bcrypt.GenerateFromPassword([]byte("roster-no-such-user"), cost)
		if err != nil {
			return err
		}
	}
	f.users = users
	return nil
}

func dummyCost(h []byte) int {
	c, _ := bcrypt.Cost(h)
	return c
}
