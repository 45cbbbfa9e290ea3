package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestServeWithMutualTLS runs the embedded server with TLS and required client
// certificates, the lock service as a second process joining it over TLS with its own
// certificate (--nats-url), and the client commands with --tls-*.
func TestServeWithMutualTLS(t *testing.T) {
	t.Parallel()
	files := natstest.WriteTLSFiles(t)
	const servicePassword = "tls-test-service-pw"
	url, _ := startServe(t, "--services", "auth,registry,messaging", "--service-password", servicePassword,
		"--tls-cert", files.ServerCert, "--tls-key", files.ServerKey, "--tls-client-ca", files.CA)
	url = strings.Replace(url, "nats://", "tls://", 1)
	var nc *nats.Conn
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() (err error) {
		nc, err = nats.Connect(url, nats.RootCAs(files.CA), nats.ClientCert(files.ClientCert, files.ClientKey))
		return err
	})
	defer nc.Close()
	_, _ = startServe(t, "--services", "lock", "--nats-url", url,
		"--nats-user", "roster-service", "--nats-password", servicePassword,
		"--nats-tls-ca", files.CA, "--nats-tls-cert", files.ClientCert, "--nats-tls-key", files.ClientKey)
	// Without the CA its servers' certificates are not trusted: the error says which
	// flag trusts them.
	sctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := run(sctx, []string{"serve", "--log-level", "error", "--services", "lock", "--nats-url", url,
		"--nats-user", "roster-service", "--nats-password", servicePassword,
		"--nats-tls-cert", files.ClientCert, "--nats-tls-key", files.ClientKey})
	if err == nil || !strings.Contains(err.Error(), "give --nats-tls-ca") {
		t.Errorf("serve joining a TLS server whose CA it was not given: got %v, want an error naming --nats-tls-ca", err)
	}
	want := []string{"roster-auth", "roster-lock", "roster-messaging", "roster-registry"}
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if got := pingAll(t, nc); !equal(got, want) {
			return errorf("got services %v, want %v", got, want)
		}
		return nil
	})

	c := cli{t: t, server: url}
	ctx := testCtx(t)
	tlsFlags := []string{"--tls-ca", files.CA, "--tls-cert", files.ClientCert, "--tls-key", files.ClientKey}
	r := c.run(ctx, "", append(append([]string{"lock", "acquire", "orders/1"}, tlsFlags...), "--", "true")...)
	if r.err != nil || !strings.HasPrefix(r.stdout, "acquired orders/1 ") {
		t.Fatalf("lock acquire over mutual TLS: got %q, %v", r.stdout, r.err)
	}
	r = c.run(ctx, "", append([]string{"session", "list"}, tlsFlags...)...)
	if r.err != nil || !strings.HasSuffix(r.stdout, "0 sessions\n") { // the command's own is left out
		t.Fatalf("session list over mutual TLS: got %q, %v", r.stdout, r.err)
	}

	// Each failure names the flag that mends it.
	other := natstest.WriteTLSFiles(t)
	for _, bad := range []struct {
		name string
		args []string
		hint string
	}{
		{"no client certificate", []string{"--tls-ca", files.CA}, ""},
		{"server certificate not trusted", []string{"--tls-cert", files.ClientCert, "--tls-key", files.ClientKey}, "give --tls-ca"},
		{"another CA", []string{"--tls-ca", other.CA, "--tls-cert", files.ClientCert, "--tls-key", files.ClientKey}, "check --tls-ca " + other.CA},
	} {
		if r := c.run(ctx, "", append([]string{"session", "list"}, bad.args...)...); r.exit() != exitUnavailable || r.err == nil || !strings.Contains(r.err.Error(), bad.hint) {
			t.Errorf("%s: got %v (exit %d), want exit %d naming %q", bad.name, r.err, r.exit(), exitUnavailable, bad.hint)
		}
	}
	if r := c.run(ctx, "", "session", "list", "--tls-cert", files.ClientCert); r.exit() != 2 {
		t.Errorf("--tls-cert without --tls-key: got %v (exit %d), want a usage error (2)", r.err, r.exit())
	}
}

func TestServeTLSFlagsChecked(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--tls-cert", "cert.pem"},
		{"--tls-client-ca", "ca.pem"},
		{"--nats-url", "nats://127.0.0.1:1", "--tls-cert", "c.pem", "--tls-key", "k.pem"},
		{"--nats-tls-ca", "ca.pem"},
		{"--nats-url", "nats://127.0.0.1:1", "--nats-tls-key", "k.pem"},
	} {
		base := []string{"serve"}
		if !slices.Contains(args, "--nats-url") { // with it, --data-dir is a usage error of its own
			base = append(base, "--data-dir", t.TempDir())
		}
		err := run(t.Context(), append(base, args...))
		if exitCode(err) != 2 {
			t.Errorf("serve %q: got %v (exit %d), want a usage error (2)", args, err, exitCode(err))
		}
	}
}
