package embedded_test

import (
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/embedded"
)

func TestConfigTextWithCallout(t *testing.T) {
	const issuer = "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA"
	text, err := embedded.ConfigText(embedded.Config{
		Listen:         "127.0.0.1:-1",
		WebSocket:      "127.0.0.1:-1",
		AllowAnonymous: true,
		CalloutIssuer:  issuer,
		ClientUsers:    []embedded.UserPassword{{User: "bridge", Password: "pw"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"auth_callout", `issuer: "` + issuer + `"`, "account: SERVICES",
		`auth_users: [ "roster-service", "roster-system", "bridge" ]`, `{ user: "bridge", password: "pw" }`} {
		if !strings.Contains(text, want) {
			t.Errorf("configuration lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "no_auth_user") || strings.Contains(text, `user: "anonymous"`) {
		t.Errorf("with the callout on, anonymous connections must go to the auth service, not a no_auth_user:\n%s", text)
	}
}
