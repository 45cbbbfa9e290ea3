package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/seed-3c836eab/roster/services/lock"
	"github.com/seed-3c836eab/roster/services/messaging"
	"github.com/seed-3c836eab/roster/services/registry"
)

// tuning holds the serve flags that set the services' limits and timeouts; each
// applies to the service it names when this process runs it. Their defaults are the
// services' own (WithDefaults), so the help shows what a process runs with.
type tuning struct {
	registry  registry.Config
	lock      lock.Config
	messaging messaging.Config
}

// serviceFlags maps each serve flag that configures one service to that service:
// given to a process that does not run the service, it would do nothing, and is
// refused (serveOptions.checkServices).
var serviceFlags = map[string]string{
	"session-timeout": "registry", "session-min-timeout": "registry", "session-max-timeout": "registry",
	"reconnect-window": "registry", "tombstone-retention": "registry", "events-max-age": "registry",
	"max-sessions-per-principal": "registry", "max-properties": "registry", "max-key-length": "registry",
	"max-value-length": "registry", "max-record-size": "registry",
	"lock-max-waiters": "lock", "lock-max-holders": "lock", "lock-max-per-session": "lock",
	"max-in-flight": "messaging", "max-sender-requests": "messaging", "max-principal-requests": "messaging",
	"max-streams": "messaging", "max-requests": "messaging",
	"policy": "auth", "users-file": "auth", "authenticators": "auth", "jwt-hmac-secret-file": "auth",
	"jwt-public-keys": "auth", "jwt-issuer": "auth", "jwt-audience": "auth", "jwt-roles-claim": "auth",
	"auth-callout-account": "auth",
}

func (t *tuning) register(fs *pflag.FlagSet) {
	r := registry.Config{}.WithDefaults()
	fs.DurationVar(&t.registry.DefaultTimeout, "session-timeout", r.DefaultTimeout, "registry: inactivity timeout of a session that asks for none")
	fs.DurationVar(&t.registry.MinTimeout, "session-min-timeout", r.MinTimeout, "registry: the shortest inactivity timeout a session may ask for")
	fs.DurationVar(&t.registry.MaxTimeout, "session-max-timeout", r.MaxTimeout, "registry: the longest inactivity timeout a session may ask for (schemas/ state the default bounds)")
	fs.DurationVar(&t.registry.ReconnectWindow, "reconnect-window", r.ReconnectWindow, "registry: how long a session whose connection was lost may be resumed before it closes as failed")
	fs.DurationVar(&t.registry.TombstoneRetention, "tombstone-retention", r.TombstoneRetention, "registry: how long a closed session answers session_closed (then session_not_found)")
	fs.DurationVar(&t.registry.EventsMaxAge, "events-max-age", r.EventsMaxAge, "registry: how long session events are kept (at least 5m)")
	fs.IntVar(&t.registry.Limits.SessionsPerPrincipal, "max-sessions-per-principal", r.Limits.SessionsPerPrincipal, "registry: open sessions of one principal")
	fs.IntVar(&t.registry.Limits.Properties, "max-properties", r.Limits.Properties, "registry: user properties of a session")
	fs.IntVar(&t.registry.Limits.KeyLength, "max-key-length", r.Limits.KeyLength, "registry: bytes of a property key")
	fs.IntVar(&t.registry.Limits.ValueLength, "max-value-length", r.Limits.ValueLength, "registry: bytes of a property value")
	fs.IntVar(&t.registry.Limits.RecordSize, "max-record-size", r.Limits.RecordSize, "registry: bytes of a stored session record")
	l := lock.Config{}.WithDefaults()
	fs.IntVar(&t.lock.MaxWaiters, "lock-max-waiters", l.MaxWaiters, "lock: requests waiting for one lock")
	fs.IntVar(&t.lock.MaxHolders, "lock-max-holders", l.MaxHolders, "lock: shared holders of one lock")
	fs.IntVar(&t.lock.MaxLocksPerSession, "lock-max-per-session", l.MaxLocksPerSession, "lock: locks one session holds or waits for (each instance counts what it has seen)")
	fs.IntVar(&t.messaging.MaxInFlight, "max-in-flight", messaging.DefaultMaxInFlight, "messaging: requests in flight from one instance to one receiving session")
	fs.IntVar(&t.messaging.MaxSenderRequests, "max-sender-requests", messaging.DefaultMaxSenderRequests, "messaging: requests one session has in progress on one instance")
	fs.IntVar(&t.messaging.MaxPrincipalRequests, "max-principal-requests", messaging.DefaultMaxPrincipalRequests, "messaging: requests the sessions of one principal have in progress on one instance, together (at most half of --max-requests: a lower --max-requests lowers the default)")
	fs.IntVar(&t.messaging.MaxStreams, "max-streams", messaging.DefaultMaxStreams, "messaging: streamed requests one instance gathers at once")
	fs.IntVar(&t.messaging.MaxRequests, "max-requests", messaging.DefaultMaxRequests, "messaging: requests without stream_id one instance gathers at once")
}

// check refuses values a service would replace with its default without a word (0
// and below), and a default session timeout outside its own bounds.
func (t *tuning) check(flag func(name string) string) error {
	for name, d := range map[string]time.Duration{
		"session-timeout": t.registry.DefaultTimeout, "session-min-timeout": t.registry.MinTimeout,
		"session-max-timeout": t.registry.MaxTimeout, "reconnect-window": t.registry.ReconnectWindow,
		"tombstone-retention": t.registry.TombstoneRetention, "events-max-age": t.registry.EventsMaxAge,
	} {
		if d <= 0 {
			return usageError{fmt.Errorf("%s %s: want a positive duration", flag(name), d)}
		}
	}
	for name, n := range map[string]int{
		"max-sessions-per-principal": t.registry.Limits.SessionsPerPrincipal, "max-properties": t.registry.Limits.Properties,
		"max-key-length": t.registry.Limits.KeyLength, "max-value-length": t.registry.Limits.ValueLength,
		"max-record-size": t.registry.Limits.RecordSize, "lock-max-waiters": t.lock.MaxWaiters,
		"lock-max-holders": t.lock.MaxHolders, "lock-max-per-session": t.lock.MaxLocksPerSession,
		"max-in-flight": t.messaging.MaxInFlight, "max-sender-requests": t.messaging.MaxSenderRequests,
		"max-streams": t.messaging.MaxStreams, "max-principal-requests": t.messaging.MaxPrincipalRequests,
		"max-requests": t.messaging.MaxRequests,
	} {
		if n <= 0 {
			return usageError{fmt.Errorf("%s %d: want a positive number", flag(name), n)}
		}
	}
	r := t.registry
	if r.EventsMaxAge < registry.MinEventsMaxAge {
		// JetStream refuses the events stream then, and the process failed at start.
		return usageError{fmt.Errorf("%s %s: want at least %s, the events stream's duplicate window", flag("events-max-age"), r.EventsMaxAge, registry.MinEventsMaxAge)}
	}
	if r.MinTimeout > r.MaxTimeout || r.DefaultTimeout < r.MinTimeout || r.DefaultTimeout > r.MaxTimeout {
		return usageError{fmt.Errorf("%s %s must lie within %s %s and %s %s", flag("session-timeout"), r.DefaultTimeout, flag("session-min-timeout"), r.MinTimeout, flag("session-max-timeout"), r.MaxTimeout)}
	}
	return nil
}
