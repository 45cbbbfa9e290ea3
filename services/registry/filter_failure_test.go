package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestChangesByFilterReportWhatTheyDidBeforeAFailure: a write that fails part-way
// through an update or close by filter ends the request with the storage's error,
// and the sessions written before it stay written; the error must say how many, or
// the client cannot tell a request that did nothing from one that did most of its
// work. One matching session's record is made too large for the bucket to take
// (its stream's max_msg_size), so that its write alone fails.
func TestChangesByFilterReportWhatTheyDidBeforeAFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	const small = 4
	for range small {
		open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x"}})
	}
	open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x", "big": strings.Repeat("b", 4000)}})
	stream, err := e.js.Stream(context.Background(), "KV_"+sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxMsgSize = 4000
	if _, err := e.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	count := func(ok func(*sessions.Record) bool) int {
		n := 0
		e.reg.track.rangeRecords(func(r *sessions.Record) {
			if r = r.Full(); r.User["team"] == "x" && ok(r) { // a tombstone is compact
				n++
			}
		})
		return n
	}

	err = adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `team is "x"`, Set: map[string]string{"seen": "1"}}, nil)
	wantCode(t, err, wire.CodeUnavailable)
	done := count(func(r *sessions.Record) bool { return r.User["seen"] == "1" })
	if want := fmt.Sprintf("after updating %d of %d sessions", done, small+1); !strings.Contains(err.Error(), want) {
		t.Errorf("update by filter: got %v, want it to say %q", err, want)
	}

	err = adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{Filter: `team is "x"`}, nil)
	wantCode(t, err, wire.CodeUnavailable)
	done = count((*sessions.Record).Closed)
	if want := fmt.Sprintf("after closing %d of %d sessions", done, small+1); !strings.Contains(err.Error(), want) {
		t.Errorf("close by filter: got %v, want it to say %q", err, want)
	}
}

// TestFilterPassesEndWithTheContext: a list, update or close by filter evaluates the
// filter over every record of the instance, which for a long filter over many
// sessions takes seconds to minutes; the pass gives up when the request's context
// ends (unavailable), as messaging's selection does. A service being stopped waits
// for its handlers, and the pass went on to the last record whatever the context.
func TestFilterPassesEndWithTheContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	for range 3 {
		open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x"}})
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if recs, _, err := e.reg.matching(ended, `team is "x"`); !errors.Is(err, wire.ErrUnavailable) || len(recs) != 0 {
		t.Errorf("matching with the context ended: got %d records and %v, want none and unavailable", len(recs), err)
	}
	if err := e.reg.eachRecord(ended, func(*sessions.Record) { t.Error("a record was evaluated after the context ended") }); !errors.Is(err, wire.ErrUnavailable) {
		t.Errorf("eachRecord with the context ended: got %v, want unavailable", err)
	}
	if recs, _, err := e.reg.matching(context.Background(), `team is "x"`); err != nil || len(recs) != 3 {
		t.Errorf("matching: got %d records and %v, want 3", len(recs), err)
	}
}
