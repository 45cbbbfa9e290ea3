package wire

// InternalPrefix is the prefix of subjects that only services use. The SERVICES
// account does not export it, so no client can reach these subjects.
const InternalPrefix = "roster.internal.v1"

// SubjectAuthenticate is where the registry asks the auth service to authenticate the
// credentials of a session being opened or changing principal.
const SubjectAuthenticate = InternalPrefix + ".auth.authenticate"

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
