package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// startRoster runs Roster in the example's process, as roster serve does with its
// development configuration, and returns its URL and a function that stops it.
// A real program connects to a running Roster instead.
func startRoster() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "roster-example")
	if err != nil {
		log.Fatal(err)
	}
	p, err := roster.Start(context.Background(), roster.Config{
		Embedded: embedded.Config{Name: "example", Listen: "127.0.0.1:-1", DataDir: dir, SyncInterval: time.Minute},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err)
	}
	return p.ClientURL(), func() {
		_ = p.Stop()
		_ = os.RemoveAll(dir)
	}
}

// Open a session with proposed properties, change them, and close it.
func ExampleOpen() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := client.Open(ctx, url, client.Options{
		Properties: map[string]string{"Department": "Accounts", "Desk": "FX"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("state:", s.State())
	fmt.Println("roles:", s.Roles())
	fmt.Println("Department:", s.Properties()["Department"])

	// Set Desk, remove Department.
	if err := s.SetProperties(ctx, map[string]string{"Desk": "Rates"}, "Department"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("properties:", s.Info().Properties)

	if err := s.Close(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = s.Refresh(ctx)
	fmt.Println("after close:", s.State(), errors.Is(err, client.ErrSessionClosed))
	// Output:
	// state: ACTIVE
	// roles: [anonymous]
	// Department: Accounts
	// properties: map[Desk:Rates]
	// after close: CLOSED true
}

// Take a lock, pass its fencing token to the protected resource, and release it.
// Give ctx a deadline to bound the wait; TryLock does not wait at all.
func ExampleSession_Lock() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close(ctx)
	bob, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close(ctx)

	l, err := alice.Lock(ctx, "orders/42", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice holds", l.Name(), "with a token:", l.Token() > 0)

	_, err = bob.TryLock(ctx, "orders/42", client.LockOptions{})
	fmt.Println("bob tries:", errors.Is(err, client.ErrTimeout))

	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer wcancel()
	_, err = bob.Lock(wctx, "orders/42", client.LockOptions{})
	fmt.Println("bob waits 200ms:", errors.Is(err, client.ErrTimeout))

	if err := l.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	lb, err := bob.Lock(ctx, "orders/42", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob got it with a higher token:", lb.Token() > l.Token())
	// Output:
	// alice holds orders/42 with a token: true
	// bob tries: true
	// bob waits 200ms: true
	// bob got it with a higher token: true
}

// Send to every session matching a filter; receivers handle a path.
func ExampleSession_Send() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	receiver, err := client.Open(ctx, url, client.Options{Properties: map[string]string{"Department": "Accounts"}})
	if err != nil {
		log.Fatal(err)
	}
	defer receiver.Close(ctx)
	got := make(chan string, 1)
	if _, err := receiver.Handle("chat/room1", func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- fmt.Sprintf("%s %s %s", m.Path, m.ContentType, m.Payload)
		return nil, nil
	}); err != nil {
		log.Fatal(err)
	}

	sender, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close(ctx)
	n, err := sender.Send(ctx, client.ToFilter(`Department is "Accounts"`), "chat/room1", []byte("hello"), client.ContentType("text/plain"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered to", n)
	fmt.Println("received:", <-got)
	// Output:
	// delivered to 1
	// received: chat/room1 text/plain hello
}

// Ask every matching session and collect one result per session.
func ExampleSession_Request() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, desk := range []string{"FX", "Rates"} {
		s, err := client.Open(ctx, url, client.Options{Properties: map[string]string{"Desk": desk}})
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close(ctx)
		if _, err := s.Handle("quote", func(_ context.Context, m *client.Message) ([]byte, error) {
			return []byte(desk + " quotes " + string(m.Payload)), nil
		}); err != nil {
			log.Fatal(err)
		}
	}
	asker, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer asker.Close(ctx)

	res, err := asker.Request(ctx, client.ToFilter("has Desk"), "quote", []byte("EURUSD"), 2*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	var answers []string
	for _, r := range res.Results {
		answers = append(answers, string(r.Status)+": "+string(r.Payload))
	}
	slices.Sort(answers)
	fmt.Println(res.Expected, "sessions")
	for _, a := range answers {
		fmt.Println(a)
	}
	// Output:
	// 2 sessions
	// ok: FX quotes EURUSD
	// ok: Rates quotes EURUSD
}

// With VIEW_SESSION and MODIFY_SESSION a session can find, change and close others.
func ExampleSession_CloseSessions() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		s, err := client.Open(ctx, url, client.Options{Properties: map[string]string{"Department": "Payroll"}})
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close(ctx)
	}
	admin, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close(ctx)

	page, err := admin.ListSessions(ctx, wire.SessionListRequest{Filter: `Department is "Payroll"`})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("payroll sessions:", page.Total)
	updated, err := admin.UpdateSessions(ctx, wire.SessionUpdateRequest{Filter: `Department is "Payroll"`, Set: map[string]string{"Status": "Closing"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("updated:", updated)
	closed, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{Filter: `Status is "Closing"`})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("closed:", closed)
	// Output:
	// payroll sessions: 2
	// updated: 2
	// closed: 2
}
