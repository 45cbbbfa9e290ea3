package roster_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
)

// TestStartWaitsForNATS starts a service process joining a NATS that does not listen
// yet, as a container started beside its servers does: it waits and comes up once the
// server does, instead of failing.
func TestStartWaitsForNATS(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	const password = "dial-test-service-pw"
	logs := &natstest.Buffer{}
	type started struct {
		p   *roster.Process
		err error
	}
	done := make(chan started, 1)
	go func() {
		p, err := roster.Start(context.Background(), roster.Config{
			Services:    []string{"lock"},
			NATSURL:     "nats://127.0.0.1:" + strconv.Itoa(port),
			NATSOptions: []nats.Option{nats.UserInfo("roster-service", password)},
		}, logs.Logger())
		done <- started{p, err}
	}()
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case s := <-done:
			t.Fatalf("Start returned before NATS listened: %v", s.err)
		default:
		}
		if !strings.Contains(logs.String(), "NATS not reachable yet") {
			return errors.New("no failed attempt logged yet")
		}
		return nil
	})

	server, err := roster.Start(context.Background(), roster.Config{
		Services: []string{"auth", "registry", "messaging"},
		Embedded: embedded.Config{
			Name: "dial-test", Listen: "127.0.0.1:" + strconv.Itoa(port), DataDir: t.TempDir(),
			SyncInterval: time.Minute, ServicePassword: password,
		},
	}, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Stop() })
	select {
	case s := <-done:
		if s.err != nil {
			t.Fatalf("Start, once NATS listened: %v", s.err)
		}
		if err := s.p.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Start did not return within a minute of NATS listening")
	}
}

// TestStartFailsOnRefusedCredentials: a NATS that answers and refuses the process's
// credentials fails Start at once; only a NATS that does not answer is waited for.
func TestStartFailsOnRefusedCredentials(t *testing.T) {
	t.Parallel()
	server, err := roster.Start(context.Background(), roster.Config{
		Services: []string{"auth", "registry"},
		Embedded: embedded.Config{Name: "dial-test-refused", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), SyncInterval: time.Minute},
	}, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = roster.Start(ctx, roster.Config{
		Services:    []string{"lock"},
		NATSURL:     server.ClientURL(),
		NATSOptions: []nats.Option{nats.UserInfo("roster-service", "not-the-password")},
	}, natstest.Logger(t))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("got %v, want nats.ErrAuthorization", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Start waited for its context to end instead of failing")
	}
}

// TestStartDoesNotRepeatAnUnparsableURL: a --nats-url whose password keeps it from
// parsing (a '/' of base64) was retried as a NATS not listening yet — url.Parse's
// error is a net.Error — for the whole start timeout, and each retry logged the
// error, which repeats the URL, password and all, at warn, as did the error Start
// failed with. A URL that does not parse fails Start at once, and names no piece of
// the password.
func TestStartDoesNotRepeatAnUnparsableURL(t *testing.T) {
	t.Parallel()
	const password = "k7Q/x9Z+Secret"
	logs := &natstest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := roster.Start(ctx, roster.Config{
		Services:     []string{"lock"},
		NATSURL:      "nats://roster-service:" + password + "@127.0.0.1:4222",
		StartTimeout: 10 * time.Second,
	}, logs.Logger())
	if err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Fatalf("got %v, want an error saying the URL does not parse", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Start waited for its context to end instead of failing")
	}
	if strings.Contains(logs.String(), "NATS not reachable yet") {
		t.Errorf("a URL that does not parse was retried as a NATS not listening yet:\n%s", logs)
	}
	for what, text := range map[string]string{"the error": err.Error(), "the log": logs.String()} {
		for _, piece := range []string{password, "k7Q", "x9Z"} {
			if strings.Contains(text, piece) {
				t.Errorf("%s repeats the password (%q): %s", what, piece, text)
			}
		}
	}
}
