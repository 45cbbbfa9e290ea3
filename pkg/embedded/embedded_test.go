package embedded_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestLayout(t *testing.T) {
	s := natstest.Start(t)
	svc := s.ServiceConn(t)
	client := s.ClientConn(t)

	gotInfo := make(chan string, 1)
	ms, err := micro.AddService(svc, micro.Config{Name: "probe", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Stop()
	err = ms.AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) {
		select {
		case gotInfo <- r.Headers().Get(wire.HeaderRequestInfo):
		default:
		}
		_ = r.Respond(r.Data())
	}), micro.WithEndpointSubject("roster.v1.session.echo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}

	t.Run("client reaches an exported request subject with request info", func(t *testing.T) {
		msg, err := client.Request("roster.v1.session.echo", []byte("hi"), 5*time.Second)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		if string(msg.Data) != "hi" {
			t.Fatalf("got %q, want %q", msg.Data, "hi")
		}
		info := <-gotInfo
		ri := wire.ParseRequestInfo(info)
		if ri == nil {
			t.Fatalf("no Nats-Request-Info on the imported request (header %q)", info)
		}
		if ri.Account != "CLIENTS" || ri.ClientIP() != "127.0.0.1" || ri.ID == 0 || ri.Transport() != "TCP" {
			t.Fatalf("got request info %+v, want CLIENTS account, 127.0.0.1, a connection id, TCP", ri)
		}
	})

	t.Run("client discovers services with $SRV.PING", func(t *testing.T) {
		msg, err := client.Request("$SRV.PING", nil, 5*time.Second)
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
		var ping micro.Ping
		if err := json.Unmarshal(msg.Data, &ping); err != nil || ping.Name != "probe" {
			t.Fatalf("got %s (%v), want a ping from probe", msg.Data, err)
		}
	})

	t.Run("client has no JetStream", func(t *testing.T) {
		js, err := jetstream.New(client)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err == nil {
			t.Fatal("client account reached the JetStream API")
		}
	})

	t.Run("services have JetStream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.JetStream(t).AccountInfo(ctx); err != nil {
			t.Fatalf("service account info: %v", err)
		}
	})

	t.Run("unexported subjects do not cross accounts", func(t *testing.T) {
		sub, err := svc.SubscribeSync("private.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := client.Publish("private.x", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := client.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(200 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("got %v, want no message across accounts", err)
		}
	})
}
