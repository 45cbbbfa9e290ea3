package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// callWithTimeout sends req for the client's session with Roster-Timeout ms, and
// waits for the answer up to 60 s: longer than the deadline the header gives, so
// that the test sees what the registry answers once it passed (a client holding to
// its own deadline would have given up).
func (c *client) callWithTimeout(subject string, ms int, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	h := c.header()
	h.Set(wire.HeaderTimeout, fmt.Sprint(ms))
	reply, err := c.nc.RequestMsg(&nats.Msg{Subject: subject, Header: h, Data: body}, 60*time.Second)
	if err != nil {
		return err
	}
	if err := wire.ReplyError(reply); err != nil {
		return err
	}
	return json.Unmarshal(reply.Data, resp)
}

// expensiveFilter is 16 KiB of "ne" clauses: milliseconds a session.
func expensiveFilter() string {
	var b strings.Builder
	b.WriteString(`Desk ne "x0"`)
	for i := 1; b.Len() < filter.MaxLength-30; i++ {
		fmt.Fprintf(&b, ` and Desk ne "x%d"`, i)
	}
	return b.String()
}

// TestListEndsAtTheClientsDeadline: a list with an expensive filter over 10,000
// sessions (seconds of CEL) stops when the deadline its client gave passes, and
// says so. Before, the request carried no deadline and the pass went on to the
// last session, then answered a client that had long given up.
func TestListEndsAtTheClientsDeadline(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	// The list reads the instance's in-memory view only: records put there
	// directly stand for sessions opened (permanent ones, which nothing expires).
	for i := range 10000 {
		e.reg.track.written(&sessions.Record{
			ID: newID(), Principal: "p", State: wire.StateActive, Permanent: true, Revision: 1,
			User: map[string]string{"Desk": fmt.Sprint(i % 50)}, Fixed: map[string]string{},
		})
	}
	var resp wire.SessionListResponse
	err := adm.callWithTimeout(wire.SubjectSessionList, 100, &wire.SessionListRequest{Filter: expensiveFilter()}, &resp)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeTimeout || !strings.Contains(we.Message, "deadline passed") {
		t.Fatalf("list with a 100 ms deadline: got %v (total %d), want timeout: the request's deadline passed", err, resp.Total)
	}
	// Without a deadline, the same list runs to the end.
	if err := adm.call(wire.SubjectSessionList, &wire.SessionListRequest{Filter: `Desk is "7"`}, &resp); err != nil || resp.Total != 200 {
		t.Fatalf("list: got total %d and %v, want 200", resp.Total, err)
	}
}

// TestChangesByFilterStopAtTheClientsDeadline: an update or close by filter writes
// the matching sessions one after another; when the client's deadline passes it
// stops before the next one and says how many it did, and sending the request
// again finishes the rest. The write under way when the deadline passes is seen
// through, not abandoned. Before, nothing bounded such a request: it went on
// writing long after its client had been told timeout.
func TestChangesByFilterStopAtTheClientsDeadline(t *testing.T) {
	const total, stopAt = 10, 3
	// The stopAt-th write of the requests with a short deadline (300 ms; the
	// test's other calls give 10 s, the registry's own writes none) waits for the
	// deadline to pass, then goes on.
	var writes atomic.Int32
	e := newEnv(t, Config{beforeWrite: func(ctx context.Context, _ string) {
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > 2*time.Second {
			return
		}
		if writes.Add(1) != stopAt {
			return
		}
		<-ctx.Done()
	}})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	var ids []string
	for range total {
		c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x"}})
		ids = append(ids, c.id)
	}
	count := func(ok func(*sessions.Record) bool) int {
		n := 0
		for _, id := range ids {
			if ok(e.record(t, id)) {
				n++
			}
		}
		return n
	}

	writes.Store(0)
	var up wire.SessionUpdateResponse
	err := adm.callWithTimeout(wire.SubjectSessionUpdate, 300, &wire.SessionUpdateRequest{Filter: `team is "x"`, Set: map[string]string{"seen": "1"}}, &up)
	want := fmt.Sprintf("after updating %d of %d sessions: the request's deadline passed", stopAt, total)
	if !errors.Is(err, wire.ErrTimeout) || !strings.Contains(err.Error(), want) {
		t.Fatalf("update with a deadline: got %v (updated %d), want timeout saying %q", err, up.Updated, want)
	}
	if n := count(func(r *sessions.Record) bool { return r.User["seen"] == "1" }); n != stopAt {
		t.Fatalf("%d sessions updated, want %d: the one written as the deadline passed too, none after", n, stopAt)
	}
	up = wire.SessionUpdateResponse{}
	if err := adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `team is "x"`, Set: map[string]string{"seen": "1"}}, &up); err != nil || up.Updated != total-stopAt {
		t.Fatalf("update again: got %d updated and %v, want %d", up.Updated, err, total-stopAt)
	}

	writes.Store(0)
	var cl wire.SessionCloseResponse
	err = adm.callWithTimeout(wire.SubjectSessionClose, 300, &wire.SessionCloseRequest{Filter: `team is "x"`}, &cl)
	want = fmt.Sprintf("after closing %d of %d sessions: the request's deadline passed", stopAt, total)
	if !errors.Is(err, wire.ErrTimeout) || !strings.Contains(err.Error(), want) {
		t.Fatalf("close with a deadline: got %v (closed %d), want timeout saying %q", err, cl.Closed, want)
	}
	if n := count((*sessions.Record).Closed); n != stopAt {
		t.Fatalf("%d sessions closed, want %d", n, stopAt)
	}
	cl = wire.SessionCloseResponse{}
	if err := adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{Filter: `team is "x"`}, &cl); err != nil || cl.Closed != total-stopAt {
		t.Fatalf("close again: got %d closed and %v, want %d", cl.Closed, err, total-stopAt)
	}
	for _, id := range ids {
		e.waitEventCount(t, id, wire.EventClosed, 1)
	}
}
