package wire

// InternalPrefix is the prefix of subjects that only services use. The SERVICES
// account does not export it, so no client can reach these subjects.
const InternalPrefix = "roster.internal.v1"

const (
	// SubjectPolicyGet reads the stored policy (policy.GetRequest, policy.Response).
	SubjectPolicyGet = AuthPrefix + ".policy.get"
	// SubjectPolicySet replaces it (policy.SetRequest, policy.Response).
	SubjectPolicySet = AuthPrefix + ".policy.set"
)

// SubjectAuthenticate is where the registry asks the auth service to authenticate the
// credentials of a session being opened or changing principal.
const SubjectAuthenticate = InternalPrefix + ".auth.authenticate"

// SubjectAuthThrottle carries each auth instance's counted attempts to the other
// instances (AuthThrottleNote), so that a principal or address has its failures
// counted once for the whole deployment, not once per instance.
const SubjectAuthThrottle = InternalPrefix + ".auth.throttle"

// AuthThrottleNote reports what one auth instance counted: the keys (a principal or
// a client address, as the throttle names them) that failed an attempt, or the
// principal that proved itself and whose failures are forgotten.
type AuthThrottleNote struct {
	// From is the instance that counted, which ignores its own notes.
	From   string   `json:"from"`
	Failed []string `json:"failed,omitempty"`
	// Repeat fingerprints the failed attempt (keyed by a secret the instances
	// share): a failure repeating one counted within the window counts once.
	Repeat    string `json:"repeat,omitempty"`
	Succeeded string `json:"succeeded,omitempty"`
}

// Credential types.
const (
	CredentialsAnonymous = "anonymous"
	CredentialsPassword  = "password"
	CredentialsJWT       = "jwt"
)

// Credentials are what a client presents to open a session or change its principal.
type Credentials struct {
	// Type is anonymous, password or jwt. Empty means anonymous.
	Type     string `json:"type,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// Token is a signed JWT bearer token.
	Token string `json:"token,omitempty"`
}

// AuthenticateRequest asks the auth service who a session is.
type AuthenticateRequest struct {
	Credentials *Credentials `json:"credentials,omitempty"`
	// Properties are the user properties the client proposes.
	Properties map[string]string `json:"properties,omitempty"`
	// Client is the connection the session request came from (its address is used
	// to throttle repeated failures).
	Client *RequestInfo `json:"client,omitempty"`
}

// AuthenticateResponse is the auth service's decision for an admitted session.
type AuthenticateResponse struct {
	Principal string   `json:"principal"`
	Roles     []string `json:"roles"`
	// Properties are the user properties to set: the proposed ones as the policy
	// accepted, vetoed or rewrote them, plus any the authenticator added.
	Properties map[string]string `json:"properties"`
	// Authenticator names the authenticator that allowed the session.
	Authenticator string `json:"authenticator"`
}

// Per-connection subjects granted by the auth callout. A client proves a connection
// key by connecting with a NATS user nkey (it signs the server's nonce); the key is
// the nkey's public key (56 characters starting with U). The callout then lets the
// connection subscribe only to its own reply inbox and its own deliveries, and names
// the connection's user after the key, so the server writes the key as "user" in the
// Nats-Request-Info of every request the connection makes. A connection without a
// key gets no inbox and no deliveries, and its user is NoConnectionKey.
const (
	// ConnectionInboxPrefix is the first token of per-connection inboxes: a client
	// sets its inbox prefix to ConnectionInbox(key) (nats.CustomInboxPrefix).
	ConnectionInboxPrefix = "_R"
	// NoConnectionKey is the user name of connections that presented no key.
	NoConnectionKey = "-"
)

// ConnectionInbox returns the inbox prefix of the connection with key.
func ConnectionInbox(key string) string { return ConnectionInboxPrefix + "." + key }

// ConnectionDeliverPrefix returns the subject prefix under which the services deliver
// to the sessions of the connection with key: deliveries go to
// <ConnectionDeliverPrefix(key)>.<session id>.<path tokens …>.
func ConnectionDeliverPrefix(key string) string { return DeliverPrefix + "." + key }
