package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// offline is a service with no NATS behind it, for calling domain methods directly.
func offline(t testing.TB) *Service {
	t.Helper()
	users, err := NewUsersFile(writeUsers(t, map[string][2]string{"alice": {"alice-pw", "user"}}))
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := nkeys.CreateAccount()
	attempts, err := newAttempts(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Service{
		attempts: attempts,
		tracer:   noop.NewTracerProvider().Tracer("offline"),
		cfg:      Config{Callout: &CalloutConfig{Issuer: issuer, Account: "CLIENTS"}, Now: time.Now},
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		chain:    chain{users, newJWTAuth(t, nil), Anonymous()},
		throttle: newThrottle(ThrottleConfig{MaxFailures: 1 << 30}, nil),
		policy:   policy.NewHolder(testPolicy()),
	}
}

// FuzzCredentials feeds arbitrary credentials through the whole authentication
// path. Properties: no panic; every outcome is admitted or a registered error; only
// the one right password and only tokens that verify are admitted, as the subject
// they name.
func FuzzCredentials(f *testing.F) {
	exp := time.Now().Add(time.Hour)
	f.Add("", "", "", "")
	f.Add("password", "alice", "alice-pw", "")
	f.Add("", "alice", "wrong", "")
	f.Add("jwt", "", "", sign(f, jwt.SigningMethodHS256, claims("carol", []string{"a"}, exp)))
	f.Add("", "", "", sign(f, jwt.SigningMethodEdDSA, claims("dave", "a,b", exp)))
	f.Add("", "", "", sign(f, jwt.SigningMethodRS256, claims("erin", nil, exp)))
	f.Add("", "", "", sign(f, jwt.SigningMethodHS256, claims("carol", nil, exp.Add(-2*time.Hour))))
	f.Add("jwt", "", "", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("anonymous", "x", "", "")
	f.Add("kerberos", "", "", "")
	s := offline(f)
	verifier := newJWTAuth(f, nil)
	f.Fuzz(func(t *testing.T, typ, user, pass, token string) {
		creds := &wire.Credentials{Type: typ, Username: user, Password: pass, Token: token}
		got, err := s.authenticate(context.Background(), creds, map[string]string{user: pass}, "127.0.0.1")
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || !we.Code.Known() || we.Code == wire.CodeInternal {
				t.Fatalf("got %v, want a registered, non-internal error", err)
			}
			return
		}
		switch got.Authenticator {
		case "users":
			if user != "alice" || pass != "alice-pw" || got.Principal != "alice" {
				t.Fatalf("users admitted %q/%q as %q", user, pass, got.Principal)
			}
		case "jwt":
			c, err := verifier.Verify(token)
			if err != nil || c.Principal != got.Principal || got.Principal == "" {
				t.Fatalf("jwt admitted a token that does not verify (%v) or as %q", err, got.Principal)
			}
		case "anonymous":
			if user != "" || pass != "" || token != "" || got.Principal != "" {
				t.Fatalf("anonymous admitted credentials %q %q %q", user, pass, token)
			}
		default:
			t.Fatalf("admitted by %q", got.Authenticator)
		}
		for k := range got.Properties {
			if k == "" || k[0] == '$' {
				t.Fatalf("property %q admitted", k)
			}
		}
	})
}

// FuzzCalloutRequest feeds arbitrary bytes to the auth callout. Properties: no
// panic; anything that is not a server-signed request is rejected; a response is
// always a valid signed response for the requested user and server.
func FuzzCalloutRequest(f *testing.F) {
	server, _ := nkeys.CreateServer()
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	rc := natsjwt.NewAuthorizationRequestClaims("server")
	rc.UserNkey = upub
	rc.Server = natsjwt.ServerID{Name: "s", ID: "NSERVERID"}
	rc.ConnectOptions.Username = "alice"
	rc.ConnectOptions.Password = "alice-pw"
	good, err := rc.Encode(server)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(good))
	f.Add([]byte("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.x"))
	f.Add([]byte{})
	s := offline(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := s.answerCallout(context.Background(), data, s.cfg.Now())
		if err != nil {
			return
		}
		resp, err := natsjwt.DecodeAuthorizationResponseClaims(out)
		if err != nil {
			t.Fatalf("response does not decode: %v", err)
		}
		req, err := natsjwt.DecodeAuthorizationRequestClaims(string(data))
		if err != nil {
			t.Fatalf("answered a request that does not decode: %v", err)
		}
		if resp.Subject != req.UserNkey || resp.Audience != req.Server.ID {
			t.Fatalf("response for %s/%s, want %s/%s", resp.Subject, resp.Audience, req.UserNkey, req.Server.ID)
		}
		if resp.Jwt != "" {
			uc, err := natsjwt.DecodeUserClaims(resp.Jwt)
			if err != nil || uc.Subject != req.UserNkey || uc.Audience != "CLIENTS" {
				t.Fatalf("bad user JWT: %v", err)
			}
			if uc.Sub.Allow.Contains(">") || uc.Sub.Allow.Contains("_INBOX.>") || uc.Pub.Allow.Contains(">") {
				t.Fatalf("user JWT grants too much: %+v", uc.Permissions)
			}
		}
	})
}

func TestCalloutResponseShape(t *testing.T) {
	s := offline(t)
	server, _ := nkeys.CreateServer()
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	conn, _ := nkeys.CreateUser()
	cpub, _ := conn.PublicKey()
	rc := natsjwt.NewAuthorizationRequestClaims("server")
	rc.UserNkey = upub
	rc.Server = natsjwt.ServerID{Name: "s", ID: "NSERVERID"}
	rc.ClientInformation.Nonce = "nonce-1"
	sig, _ := conn.Sign([]byte("nonce-1"))
	rc.ConnectOptions.Nkey = cpub
	rc.ConnectOptions.SignedNonce = encodeSig(sig)
	rc.ConnectOptions.Token = sign(t, jwt.SigningMethodEdDSA, claims("dave", "admin", time.Now().Add(time.Hour)))
	data, err := rc.Encode(server)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.answerCallout(t.Context(), []byte(data), s.cfg.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := natsjwt.DecodeAuthorizationResponseClaims(out)
	if err != nil {
		t.Fatal(err)
	}
	ipub, _ := s.cfg.Callout.Issuer.PublicKey()
	if resp.Issuer != ipub || resp.Audience != "NSERVERID" || resp.Error != "" {
		t.Fatalf("got response issuer %s audience %s error %q", resp.Issuer, resp.Audience, resp.Error)
	}
	uc, err := natsjwt.DecodeUserClaims(resp.Jwt)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Issuer != ipub || uc.Name != cpub || uc.Expires == 0 {
		t.Fatalf("got user issuer %s name %s expires %d, want the issuer, the connection key and the token's exp", uc.Issuer, uc.Name, uc.Expires)
	}
	want := []string{wire.ConnectionInbox(cpub) + ".>", wire.ConnectionDeliverPrefix(cpub) + ".>"}
	for _, w := range want {
		if !uc.Sub.Allow.Contains(w) {
			t.Errorf("subscribe allow %v lacks %s", uc.Sub.Allow, w)
		}
	}
	if len(uc.Sub.Allow) != len(want) {
		t.Errorf("subscribe allow %v, want exactly %v", uc.Sub.Allow, want)
	}
}

func encodeSig(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }
