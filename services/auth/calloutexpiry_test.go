package auth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestCalloutExpiryOfAFarOffToken: a bearer token whose exp is far off — 9999-12-31,
// a common "never" — was admitted with that exp as the connection's. NATS times a
// connection's expiry as time.Duration(exp-now) * time.Second (client.go,
// setExpiration), which overflows past ~292 years: negative, the timer fired at once
// and NATS closed the connection as expired the moment it was admitted (and nats.go
// reconnected, to be admitted and closed again). The connection's expiry is now at
// most maxConnectionLife ahead.
func TestCalloutExpiryOfAFarOffToken(t *testing.T) {
	s := offline(t)
	server, _ := nkeys.CreateServer()
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	rc := natsjwt.NewAuthorizationRequestClaims("server")
	rc.UserNkey = upub
	rc.Server = natsjwt.ServerID{Name: "s", ID: "NSERVERID"}
	rc.ConnectOptions.Token = sign(t, jwt.SigningMethodEdDSA, claims("dave", "admin", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)))
	data, err := rc.Encode(server)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.answerCallout(t.Context(), []byte(data), s.cfg.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := natsjwt.DecodeAuthorizationResponseClaims(out)
	if err != nil || resp.Error != "" {
		t.Fatalf("the far-off token was not admitted: %v %q", err, resp.Error)
	}
	uc, err := natsjwt.DecodeUserClaims(resp.Jwt)
	if err != nil {
		t.Fatal(err)
	}
	// nats-server v2.15.2 client.go setExpiration, as written.
	tn := time.Now().Unix()
	if timer := time.Duration(uc.Expires-tn) * time.Second; uc.Expires != 0 && timer <= 0 {
		t.Fatalf("user JWT expires at %d: NATS would time it as %v and close the connection at once", uc.Expires, timer)
	}
	if uc.Expires == 0 {
		t.Fatal("the connection of a token with an exp never expires")
	}
}
