package lock

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestWaitIsNotHeldPastTheRequestersDeadline: a waiting acquire whose requester gives
// a deadline (Roster-Timeout) shorter than its wait ends at that deadline: answered
// timeout and out of the queue, so the lock freed afterwards is granted to no one.
// Before, the service held it for MaxWait (a minute), after its requester had gone,
// and answered no one; then, answered at the deadline but detached, it kept its
// place for Reattach and was granted the lock freed meanwhile (found by review).
func TestWaitIsNotHeldPastTheRequestersDeadline(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{MaxWait: time.Minute, Reattach: time.Minute})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "busy"})

	body, err := json.Marshal(&wire.LockAcquireRequest{Name: "busy", WaitMS: wire.WaitForever, RequestID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: wire.SubjectLockAcquire, Header: b.header(), Data: body}
	m.Header.Set(wire.HeaderTimeout, "300")
	// The test listens far longer than it said it would: the answer must come anyway.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reply, err := b.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("no answer to a wait whose requester's deadline passed: %v", err)
	}
	wantCode(t, wire.ReplyError(reply), wire.CodeTimeout)
	if q := e.waiting(t, "busy"); len(q) != 0 {
		t.Errorf("waiting after the requester's deadline: %v, want none", q)
	}
	a.mustRelease(t, "busy")
	if rec := e.lockRecord(t, "busy"); rec != nil && len(rec.Holders) != 0 {
		t.Errorf("the lock freed after the requester gave up is held: %s", jsonString(rec.Holders))
	}
}
