package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// goneWorkers bounds the events-stream lookups closeGone has in flight.
const goneWorkers = 8

// closeGone closes the sessions whose record the KV TTL removed while no registry
// watched (docs/architecture.md, "Removed while no registry ran"). gone are the keys
// whose last entry was a removal marker when the instance's view loaded.
//
// A marker is left both by a tombstone reaching the end of its retention — the
// session was closed, and its closed event was stored — and by a live record's TTL
// firing while no registry ran: then no closed event was ever stored. The events
// stream tells them apart. It drops events oldest first, and a session's closed
// event is its last, so while any event of the session is left its closed event, had
// there been one, is left too. A session with events but no closed event was
// never closed: the instance writes its tombstone over the marker, with the closed
// event (reason expired) in its outbox. The write is a compare-and-set on the
// marker's revision, so of the instances starting together one writes it, and the
// event is published once. A session none of whose events is left proves nothing
// and is left as it is.
func (s *Service) closeGone(ctx context.Context, gone []sessions.Gone) {
	total, closed := len(gone), 0
	// A key whose check fails — the events stream not answering yet: after a whole
	// cluster restarted each stream elects its leader on its own — is checked
	// again, until none is left or the instance stops. Given up, its session got
	// neither its tombstone nor its closed event from this instance.
	for wait := goneRetryFirst; len(gone) > 0; wait = min(2*wait, goneRetryMax) {
		n, failed, err := s.closeGoneOnce(ctx, gone)
		closed += n
		if len(failed) == 0 || ctx.Err() != nil {
			break
		}
		s.log.Warn("checking sessions removed while no registry ran; retrying", "sessions", len(failed), "err", err, "retry_in", wait)
		if !sleepCtx(ctx, wait) {
			break
		}
		gone = failed
	}
	if closed > 0 {
		s.log.Info("closed sessions whose records expired while no registry ran", "sessions", closed, "removed_keys", total)
	}
}

// goneRetryFirst and goneRetryMax space the checks of removed keys that failed.
const (
	goneRetryFirst = time.Second
	goneRetryMax   = 30 * time.Second
)

// goneStorageWait bounds each storage call of the work on removed records
// (Config.gonePatience).
const goneStorageWait = 10 * time.Second

// closeGoneOnce checks each key of gone once (closeGoneOne). It returns how many
// sessions it closed, the keys whose check failed and the first failure.
func (s *Service) closeGoneOnce(ctx context.Context, gone []sessions.Gone) (int, []sessions.Gone, error) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.gonePatience)
	stream, err := s.js.Stream(sctx, EventsStream)
	cancel()
	if err != nil {
		return 0, gone, err
	}
	sem := make(chan struct{}, goneWorkers)
	var wg sync.WaitGroup
	var closed atomic.Int64
	var mu sync.Mutex
	var failed []sessions.Gone
	var first error
	for _, g := range gone {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return int(closed.Load()), failed, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ok, err := s.closeGoneOne(ctx, stream, g)
			switch {
			case err != nil:
				mu.Lock()
				failed = append(failed, g)
				if first == nil {
					first = err
				}
				mu.Unlock()
			case ok:
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(closed.Load()), failed, first
}

// closeGoneOne writes the tombstone of g if the session has events but no closed
// one. It reports whether it wrote it.
func (s *Service) closeGoneOne(ctx context.Context, stream jetstream.Stream, g sessions.Gone) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.gonePatience)
	defer cancel()
	last, err := lastEvent(ctx, stream, wire.SessionEventSubject(g.ID, "*"))
	if err != nil || last == nil || last.Kind == wire.EventClosed {
		return false, err
	}
	if closedEv, err := lastEvent(ctx, stream, wire.SessionEventSubject(g.ID, wire.EventClosed)); err != nil || closedEv != nil {
		return false, err // a closed event stored out of order, before a late one
	}
	opened, err := lastEvent(ctx, stream, wire.SessionEventSubject(g.ID, wire.EventOpened))
	if err != nil {
		return false, err
	}
	now := s.cfg.Now()
	rec := &sessions.Record{
		ID:          g.ID,
		Principal:   last.Principal,
		State:       wire.StateClosed,
		CloseReason: wire.ClosedExpired,
		UpdatedAt:   now,
		ClosedAt:    &now,
	}
	if opened != nil {
		rec.StartTime = opened.Time
	}
	// Every fixed key, as a session has them: what the events do not tell is empty
	// (NaN for latitude and longitude), as for any property that cannot be determined.
	rec.Fixed = fixedProperties(rec.ID, rec.Principal, nil, nil, rec.StartTime, &wire.SessionOpenRequest{})
	if opened == nil {
		rec.Fixed[sessions.PropStartTime] = ""
	}
	stage(ctx, rec, wire.EventClosed, nil)
	data, err := sessions.Encode(rec)
	if err != nil {
		return false, err
	}
	rev, err := s.st.write(ctx, g.ID, g.Revision, data, ttlFor(&s.cfg, rec))
	if errors.Is(err, errConflict) {
		return false, nil // another instance wrote it, or the key changed since
	}
	if err != nil {
		return false, err
	}
	rec.Revision = rev
	s.track.written(rec)
	s.metrics.sessionClosed(ctx, rec)
	s.publishStaged(rec)
	return true, nil
}

// lastEvent returns the last stored event on subject (a wildcard allowed), or nil
// when there is none.
func lastEvent(ctx context.Context, stream jetstream.Stream, subject string) (*wire.SessionEvent, error) {
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ev wire.SessionEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return nil, nil // not an event the registry wrote: nothing to learn from it
	}
	return &ev, nil
}
