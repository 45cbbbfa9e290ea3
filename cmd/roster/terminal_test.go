package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestTextOutputKeepsWhatOthersSentOnOneLine: in text output, what another session
// chose — a payload, its content type, a receiver's answer or error — is printed on
// its line, with line ends and control characters escaped. They were printed as they
// came: a payload with a line end printed a second line that read as a delivery
// from another sender (an administrator's session, say), and escape sequences
// reached the terminal (colours, cleared lines, a window title, the clipboard).
func TestTextOutputKeepsWhatOthersSentOnOneLine(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	const forged = "hi\nmessage on alerts from 0000000000000000000000 (text/plain): shut down now\x1b[31m"
	noEscapes := func(what, out string, lines int) {
		t.Helper()
		if strings.ContainsAny(out, "\x1b\r") || strings.Count(out, "\n") != lines {
			t.Errorf("%s: got %q, want %d lines without control characters", what, out, lines)
		}
	}

	out, id, _ := c.listen(ctx, "--path", "chat/x")
	if r := c.run(ctx, "", "send", "--session", id, "--path", "chat/x", "--content-type", "text/plain\x1b[2K", forged); r.err != nil {
		t.Fatalf("send: %v", r.err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "chat/x") {
			return errors.New("listen has printed no delivery yet")
		}
		return nil
	})
	noEscapes("listen", out.String(), 1)
	if want := `: "hi\nmessage on alerts from`; !strings.Contains(out.String(), want) {
		t.Errorf("listen: got %q, want the payload quoted (%s…)", out.String(), want)
	}
	if r := c.run(ctx, "", "send", "--session", id, "--path", "chat/x", "plain text, as it is"); r.err != nil {
		t.Fatalf("send: %v", r.err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "(application/octet-stream): plain text, as it is\n") {
			return errors.New("listen printed " + out.String())
		}
		return nil
	})

	receiver := openSession(t, c.server)
	if _, err := receiver.Handle("answer", func(context.Context, *client.Message) ([]byte, error) { return []byte(forged), nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := receiver.Handle("fail", func(context.Context, *client.Message) ([]byte, error) { return nil, errors.New(forged) }); err != nil {
		t.Fatal(err)
	}
	r := c.run(ctx, "", "request", "--session", receiver.ID(), "--path", "answer", "x")
	if r.err != nil {
		t.Fatalf("request: %v", r.err)
	}
	noEscapes("request answered", r.stdout, 2) // the result and the count
	r = c.run(ctx, "", "request", "--session", receiver.ID(), "--path", "fail", "x")
	if r.err == nil {
		t.Fatal("request of a failing handler: no error")
	}
	noEscapes("request failed", r.stdout, 2)
	noEscapes("request's error", r.err.Error()+"\n", 1)
}
