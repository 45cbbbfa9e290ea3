package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// One connection, a session per user: what a gateway does. Closing the client
// closes the sessions opened on it.
func ExampleConnect() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	var sessions []*client.Session
	for _, user := range []string{"u1", "u2"} {
		s, err := c.Open(ctx, client.Options{
			GatewayType: "web", GatewayID: "gw-1",
			Properties: map[string]string{"User": user},
		})
		if err != nil {
			log.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	fmt.Println("sessions on one connection:", len(sessions), sessions[0].Client() == sessions[1].Client())
	fmt.Println("u2:", sessions[1].Properties()["User"])

	if err := c.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after Client.Close:", sessions[0].State(), sessions[1].State())
	// Output:
	// sessions on one connection: 2 true
	// u2: u2
	// after Client.Close: CLOSED CLOSED
}

// Handle a path: the handler's return value answers a request; for a send it is
// ignored. The returned function removes the handler and waits for the ones still
// running.
func ExampleSession_Handle() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	remove, err := s.Handle("echo", func(_ context.Context, m *client.Message) ([]byte, error) {
		if len(m.Payload) == 0 {
			// A *wire.Error keeps its code; any other error is sent as internal.
			return nil, &wire.Error{Code: wire.CodeBadRequest, Message: "empty payload"}
		}
		return append([]byte("echo: "), m.Payload...), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	defer remove()

	for _, payload := range []string{"hi", ""} {
		res, err := s.Request(ctx, client.ToSession(s.ID()), "echo", []byte(payload), time.Second)
		if err != nil {
			log.Fatal(err)
		}
		r := res.Results[0]
		if r.Status == wire.StatusOK {
			fmt.Printf("%s: %s\n", r.Status, r.Payload)
		} else {
			fmt.Printf("%s: %s\n", r.Status, r.Error.Code)
		}
	}
	// Output:
	// ok: echo: hi
	// error: bad_request
}

// RequestStream hands each session's result to a function as it arrives, rather
// than all of them at the end.
func ExampleSession_RequestStream() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"fast", "slow"} {
		s, err := client.Open(ctx, url, client.Options{Properties: map[string]string{"Worker": name}})
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close(ctx)
		if _, err := s.Handle("work", func(context.Context, *client.Message) ([]byte, error) {
			if name == "slow" {
				time.Sleep(300 * time.Millisecond)
			}
			return []byte(name + " done"), nil
		}); err != nil {
			log.Fatal(err)
		}
	}
	asker, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer asker.Close(ctx)

	n, err := asker.RequestStream(ctx, client.ToFilter("has Worker"), "work", nil, 2*time.Second, func(r wire.MsgResult) {
		fmt.Println(r.Status, string(r.Payload))
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("results:", n)
	// Output:
	// ok fast done
	// ok slow done
	// results: 2
}

// A session learns when it is closed by someone else: OnStateChange listeners are
// told, the locks it held are reported lost, and every later call fails with
// ErrSessionClosed.
func ExampleSession_OnStateChange() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	changes := make(chan client.StateChange, 4)
	s.OnStateChange(func(ch client.StateChange) { changes <- ch }) // must not block
	l, err := s.Lock(ctx, "orders/42", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}

	admin, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: s.ID()}); err != nil {
		log.Fatal(err)
	}

	ch := <-changes
	fmt.Println(ch.Old, "->", ch.New, ch.Reason)
	<-l.Lost()
	fmt.Println("lock lost:", errors.Is(l.Err(), client.ErrLockLost), errors.Is(l.Err(), client.ErrSessionClosed))
	_, err = s.Send(ctx, client.ToSession(admin.ID()), "hello", nil)
	fmt.Println("send:", errors.Is(err, client.ErrSessionClosed))
	// Output:
	// ACTIVE -> CLOSED by_server
	// lock lost: true true
	// send: true
}

// Every condition a caller may act on has an error to match with errors.Is;
// errors.As with *wire.Error gives the code and the server's message.
func Example_errors() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Nothing listens on the address: ErrUnavailable.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	nowhere := "nats://" + l.Addr().String()
	l.Close()
	_, err = client.Open(ctx, nowhere, client.Options{})
	fmt.Println("no server:", errors.Is(err, client.ErrUnavailable))

	a, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := client.Open(ctx, url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}

	// A lock another session holds: ErrTimeout, whether tried once or waited for
	// until ctx's deadline.
	if _, err := a.Lock(ctx, "jobs/1", client.LockOptions{}); err != nil {
		log.Fatal(err)
	}
	_, err = b.TryLock(ctx, "jobs/1", client.LockOptions{})
	fmt.Println("lock busy:", errors.Is(err, client.ErrTimeout))

	// Sending to a session that does not exist: ErrSessionNotFound (about the
	// receiver; the sender's session is fine).
	_, err = a.Send(ctx, client.ToSession("0000000000000000000000"), "hello", nil)
	fmt.Println("no such receiver:", errors.Is(err, client.ErrSessionNotFound))

	// A filter that does not parse: ErrInvalidFilter, with the server's message.
	_, err = a.Send(ctx, client.ToFilter(`Department is`), "hello", nil)
	var we *wire.Error
	fmt.Println("bad filter:", errors.Is(err, client.ErrInvalidFilter), errors.As(err, &we) && we.Code == wire.CodeInvalidFilter)

	// Any call on a closed session: ErrSessionClosed.
	if err := b.Close(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = b.Refresh(ctx)
	fmt.Println("closed session:", errors.Is(err, client.ErrSessionClosed))

	// ctx ended by the caller: the context's own error.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_, err = a.Send(cctx, client.ToSession(a.ID()), "hello", nil)
	fmt.Println("cancelled:", errors.Is(err, context.Canceled))
	// Output:
	// no server: true
	// lock busy: true
	// no such receiver: true
	// bad filter: true true
	// closed session: true
	// cancelled: true
}

// Follow the session's own events, in the order they were stored: its opening, each
// change of its properties or state, its close. fn's error ends FollowEvents. A
// reader that keeps the Seq of the last event it handled starts again after it
// (StartSeq: Seq+1) and misses nothing.
func ExampleSession_FollowEvents() {
	url, stop := startRoster()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Open(ctx, url, client.Options{Properties: map[string]string{"Desk": "FX"}})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	if err := s.SetProperties(ctx, map[string]string{"Desk": "Rates"}); err != nil {
		log.Fatal(err)
	}

	errEnough := errors.New("enough")
	var last uint64
	err = s.FollowEvents(ctx, wire.SessionEventsRequest{SessionID: s.ID()}, func(e wire.StoredSessionEvent) error {
		fmt.Println(e.Event.Kind, e.Event.State, e.Event.Keys)
		last = e.Seq
		if e.Event.Kind == wire.EventUpdated {
			return errEnough
		}
		return nil
	})
	fmt.Println("ended by fn:", errors.Is(err, errEnough), "last seq kept:", last > 0)
	// Output:
	// opened ACTIVE []
	// updated ACTIVE [Desk]
	// ended by fn: true last seq kept: true
}
