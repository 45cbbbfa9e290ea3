// Package policy is Roster's permission policy: which roles may do what, globally or
// on names matching path patterns (lock names, message paths, property keys).
//
// A Policy is plain data (JSON and YAML). Services check permissions locally against
// the current policy — no network round trip per request — through a Holder, which
// Store.Watch keeps up to date from JetStream (one per process, shared by its
// services; the auth service keeps its own).
//
// Name patterns are path-like, segments separated by "/": a literal segment matches
// itself, "*" matches exactly one segment, and "**" as the last segment matches zero or
// more remaining segments. "orders/*" matches "orders/42" but not "orders" or
// "orders/42/lines"; "orders/**" matches all three; a grant without patterns holds for
// every name.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Permission names an operation that the policy grants to roles.
type Permission string

// The permissions Roster checks.
const (
	// ViewSession: get and list other sessions.
	ViewSession Permission = "VIEW_SESSION"
	// ModifySession: update properties of, or close, other sessions.
	ModifySession Permission = "MODIFY_SESSION"
	// ModifyOwnProperties: set or remove the session's own user properties; scoped to
	// property keys.
	ModifyOwnProperties Permission = "MODIFY_OWN_PROPERTIES"
	// PermanentSession: open a session without an inactivity timeout.
	PermanentSession Permission = "PERMANENT_SESSION"
	// GatewaySession: open sessions on a gateway's behalf (roster.v1.session.open_gateway,
	// which sets $GatewayType and $GatewayId). A property of the connection, not of
	// the sessions it opens: the auth callout checks it when it admits a connection.
	GatewaySession Permission = "GATEWAY_SESSION"
	// AcquireLock: acquire locks; scoped to lock names.
	AcquireLock Permission = "ACQUIRE_LOCK"
	// ViewLocks: list locks with their holders and waiters.
	ViewLocks Permission = "VIEW_LOCKS"
	// SendToSession: send or request to one session; scoped to message paths.
	SendToSession Permission = "SEND_TO_SESSION"
	// SendToFilter: send or request to the sessions matching a filter; scoped to
	// message paths.
	SendToFilter Permission = "SEND_TO_FILTER"
	// ModifySecurity: change the policy.
	ModifySecurity Permission = "MODIFY_SECURITY"
)

// Permissions lists every permission.
func Permissions() []Permission {
	return []Permission{ViewSession, ModifySession, ModifyOwnProperties, PermanentSession,
		GatewaySession, AcquireLock, ViewLocks, SendToSession, SendToFilter, ModifySecurity}
}

// Scoped reports whether perm is granted per name, so that a grant may carry names.
func (perm Permission) Scoped() bool {
	switch perm {
	case ModifyOwnProperties, AcquireLock, SendToSession, SendToFilter:
		return true
	}
	return false
}

// Grant gives a permission, on every name or on names matching Names.
type Grant struct {
	Permission Permission `json:"permission" yaml:"permission"`
	Names      List       `json:"names,omitempty" yaml:"names,omitempty"`
}

// List is a grant's names or a property rule's values. Absent, it holds for every
// name or any value; JSON null would read as absent too, so it is refused, as an
// empty list is (Validate) and a YAML list without items is (Parse): an operator
// or tool emptying the list must not widen the grant.
type List []string

// UnmarshalJSON decodes a JSON array of strings and refuses null.
func (l *List) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return errors.New("policy: a names or values list is null; omit it to mean every name or any value")
	}
	var s []string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	*l = s
	return nil
}

// Policy maps roles to grants.
type Policy struct {
	// Roles maps a role to the grants its holders have.
	Roles map[string][]Grant `json:"roles" yaml:"roles"`
	// Anonymous says whether sessions without credentials are admitted, and with
	// which roles.
	Anonymous Anonymous `json:"anonymous" yaml:"anonymous"`
	// Properties says which user properties a client may propose when it opens a
	// session, and how they are rewritten.
	Properties Properties `json:"properties,omitzero" yaml:"properties,omitempty"`
	// Connections relaxes the NATS permissions the auth callout grants connections.
	// Leave it empty in production.
	Connections Connections `json:"connections,omitzero" yaml:"connections,omitempty"`
}

// Connections relaxes what the auth callout lets a NATS connection do beyond the
// strict set (publish Roster requests, subscribe to its own inbox and deliveries).
// Both switches are for development: they let tools such as the nats CLI work
// without a per-connection key, at the price of isolation between connections.
type Connections struct {
	// SharedInbox lets every connection subscribe to _INBOX.>, so any connection can
	// read the replies sent to any other.
	SharedInbox bool `json:"shared_inbox,omitempty" yaml:"shared_inbox,omitempty"`
	// ServiceDiscovery lets every connection publish to $SRV.> (nats micro ls).
	ServiceDiscovery bool `json:"service_discovery,omitempty" yaml:"service_discovery,omitempty"`
}

// Anonymous is the policy for sessions that present no credentials.
type Anonymous struct {
	Allowed bool     `json:"allowed" yaml:"allowed"`
	Roles   []string `json:"roles,omitempty" yaml:"roles,omitempty"`
}

// Validate reports the first problem with p: an unknown permission or a malformed
// pattern.
func (p *Policy) Validate() error {
	var errs []error
	for role, grants := range p.Roles {
		if role == "" {
			errs = append(errs, errors.New("policy: empty role name"))
		}
		for _, g := range grants {
			if !slices.Contains(Permissions(), g.Permission) {
				errs = append(errs, fmt.Errorf("policy: role %q: unknown permission %q", role, g.Permission))
			}
			if g.Names != nil && !g.Permission.Scoped() {
				// Allowed checks it against no name, which only "**" matches: the
				// names would mean everything or nothing, silently.
				errs = append(errs, fmt.Errorf("policy: role %q: %s is not granted per name: remove its names", role, g.Permission))
				continue
			}
			if g.Names != nil && len(g.Names) == 0 {
				// Stored as JSON with omitempty, an empty list becomes an absent one:
				// a grant on every name. Refuse it rather than fail open.
				errs = append(errs, fmt.Errorf("policy: role %q: %s: names is empty; omit it to grant on every name", role, g.Permission))
			}
			for _, pat := range g.Names {
				if err := ValidatePattern(pat); err != nil {
					errs = append(errs, fmt.Errorf("policy: role %q: %s: %w", role, g.Permission, err))
				}
			}
		}
	}
	for _, r := range p.Anonymous.Roles {
		if r == "" {
			errs = append(errs, errors.New("policy: anonymous: empty role name"))
		}
	}
	if err := p.Properties.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// upgradeUnscopedNames rewrites the grants of a policy stored before Validate
// refused names on unscoped permissions to what they meant then, and describes each
// one rewritten. Allowed checks such a grant against no name, which only the
// pattern "**" matches: with it the grant held everywhere and loses its names;
// without, it granted nothing and is dropped. Refusing the stored policy
// instead would leave every service of an upgraded deployment without one.
func (p *Policy) upgradeUnscopedNames() []string {
	var upgraded []string
	for role, grants := range p.Roles {
		kept := grants[:0]
		for _, g := range grants {
			if g.Names == nil || g.Permission.Scoped() || !slices.Contains(Permissions(), g.Permission) {
				kept = append(kept, g)
				continue
			}
			if slices.ContainsFunc(g.Names, func(pat string) bool { return Match(pat, "") }) {
				upgraded = append(upgraded, fmt.Sprintf("role %q: %s names %q: granted on its own, as it was", role, g.Permission, []string(g.Names)))
				kept = append(kept, Grant{Permission: g.Permission})
				continue
			}
			upgraded = append(upgraded, fmt.Sprintf("role %q: %s names %q: dropped, it granted nothing", role, g.Permission, []string(g.Names)))
		}
		clear(grants[len(kept):])
		p.Roles[role] = kept
	}
	slices.Sort(upgraded)
	return upgraded
}

// Allowed reports whether any of roles grants perm on name. For permissions that
// are not scoped to names, pass an empty name: only grants without patterns match it.
func (p *Policy) Allowed(roles []string, perm Permission, name string) bool {
	if p == nil {
		return false
	}
	for _, role := range roles {
		for _, g := range p.Roles[role] {
			if g.Permission != perm {
				continue
			}
			if len(g.Names) == 0 {
				return true
			}
			for _, pat := range g.Names {
				if Match(pat, name) {
					return true
				}
			}
		}
	}
	return false
}

// ValidatePattern checks a name pattern.
func ValidatePattern(pattern string) error {
	if pattern == "" {
		return errors.New("empty name pattern")
	}
	segs := strings.Split(pattern, "/")
	for i, s := range segs {
		switch {
		case s == "":
			return fmt.Errorf("name pattern %q has an empty segment", pattern)
		case s == "**" && i != len(segs)-1:
			return fmt.Errorf("name pattern %q: ** may only be the last segment", pattern)
		case s != "*" && s != "**" && strings.Contains(s, "*"):
			return fmt.Errorf("name pattern %q: * must be a whole segment", pattern)
		}
	}
	return nil
}

// Match reports whether name matches pattern (see the package doc).
func Match(pattern, name string) bool {
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		if pseg == "**" && !pmore {
			return true
		}
		if name == "" {
			return false
		}
		nseg, nrest, nmore := strings.Cut(name, "/")
		if pseg != "*" && pseg != nseg {
			return false
		}
		if !pmore || !nmore {
			return !pmore && !nmore || (pmore && prest == "**")
		}
		pattern, name = prest, nrest
	}
}

// Holder holds the current policy for concurrent readers; the auth service's watcher
// replaces it as the stored policy changes. Its zero value holds no policy.
type Holder struct {
	p atomic.Pointer[Policy]

	mu sync.Mutex
	// next is closed, and forgotten, by the next Store (nil until Changed asks).
	next chan struct{}
}

// NewHolder returns a Holder with p as the current policy.
func NewHolder(p *Policy) *Holder {
	h := &Holder{}
	h.Store(p)
	return h
}

// Load returns the current policy.
func (h *Holder) Load() *Policy { return h.p.Load() }

// Store replaces the current policy, and tells whoever waits on Changed.
func (h *Holder) Store(p *Policy) {
	h.p.Store(p)
	h.mu.Lock()
	if h.next != nil {
		close(h.next)
		h.next = nil
	}
	h.mu.Unlock()
}

// Changed returns a channel that is closed by the next Store. A service that acts
// on what the policy no longer grants (the lock service withdraws the waiting
// requests of sessions that lost ACQUIRE_LOCK) takes the channel, then reads the
// policy: a change after the read closes the channel it holds.
func (h *Holder) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.next == nil {
		h.next = make(chan struct{})
	}
	return h.next
}

// Allowed checks against the current policy.
func (h *Holder) Allowed(roles []string, perm Permission, name string) bool {
	return h.p.Load().Allowed(roles, perm, name)
}

// VetChange applies the current policy's property rules to a session's change of
// its own properties (Policy.VetChange).
func (h *Holder) VetChange(set map[string]string, remove []string) (map[string]string, []string) {
	return h.p.Load().VetChange(set, remove)
}

// AllGrants grants every permission on every name.
func AllGrants() []Grant {
	var all []Grant
	for _, perm := range Permissions() {
		all = append(all, Grant{Permission: perm})
	}
	return all
}

// Development is the policy roster serve runs with when none is configured: anonymous
// sessions are admitted with the role "anonymous", which may do everything; every
// proposed property is accepted; and connections may use the shared _INBOX.> and
// $SRV.> so that the nats CLI works. It is for trying Roster on one machine, never for
// production.
func Development() *Policy {
	all := AllGrants()
	return &Policy{
		Roles:       map[string][]Grant{"anonymous": all, "admin": all},
		Anonymous:   Anonymous{Allowed: true, Roles: []string{"anonymous"}},
		Properties:  Properties{Default: Accept},
		Connections: Connections{SharedInbox: true, ServiceDiscovery: true},
	}
}
