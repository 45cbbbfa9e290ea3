package kvstore

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Rewatch starts a watch again after the last one ended on its own. nats.go recreates a
// watch's ordered consumer after missed heartbeats, and gives up — closing the watch's
// channel — on an error it does not retry (the bucket's stream deleted; in a cluster,
// an error outside its short list of transient ones); whoever followed the watch would
// then hold stale state without a word. Rewatch logs that, then calls start every
// 250 ms doubling to 5 s until it returns a watcher, which it returns; nil once ctx
// ends. what names what is watched, for the log.
func Rewatch(ctx context.Context, log *slog.Logger, what string, start func(context.Context) (jetstream.KeyWatcher, error)) jetstream.KeyWatcher {
	log.Warn("the watch of " + what + " ended; watching it again")
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		w, err := start(ctx)
		if err == nil {
			log.Info("following " + what + " again")
			return w
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("watching "+what+" again", "err", err, "retry_in", min(2*wait, 5*time.Second))
	}
}

// RecheckEvery is how often a follower of a watch checks that its bucket was not
// deleted and created again (Recreated).
const RecheckEvery = 5 * time.Second

// Created returns when the stream behind kv was created: a bucket deleted and
// created again has another time.
func Created(ctx context.Context, kv jetstream.KeyValue) (time.Time, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return time.Time{}, errors.New("kvstore: the bucket's status has no stream info")
	}
	return bs.StreamInfo().Created, nil
}

// Recreated reports whether kv's bucket, whose stream was created at created (zero:
// unknown, never reported), has been deleted and created again since. A watch does
// not end when that happens quickly enough: nats.go recreates the watch's consumer
// after missed heartbeats, on the new stream, starting after the last revision it
// delivered — revisions that the new bucket, starting over at 1, reaches late or
// never — and the watch goes on without an error, its follower stale for good. A
// follower checks every RecheckEvery and starts again as after a watch that ended.
// An error reading the stream reports false: a bucket that is gone ends the watch on
// its own.
func Recreated(ctx context.Context, kv jetstream.KeyValue, created time.Time) bool {
	if created.IsZero() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := Created(ctx, kv)
	return err == nil && !c.Equal(created)
}

// StopWatch stops w, a watch on nc. Stopping deletes the watch's consumer, a
// JetStream request that, while nc has no server, waits out its timeout (5 s) and
// held whoever was stopping — a process told to stop while NATS is down, once per
// watch. It then goes on in the background, and ends when the connection closes or
// the request times out; the server removes a consumer nobody reads by itself.
func StopWatch(nc *nats.Conn, w jetstream.KeyWatcher) {
	if nc != nil && !nc.IsConnected() {
		go func() { _ = w.Stop() }()
		return
	}
	_ = w.Stop()
}

// Follow passes w's entries to apply (nil marks the end of the initial values) until
// w ends, ctx ends, or kv's bucket, whose stream was created at created, turns out to
// have been deleted and created again (Recreated, checked every RecheckEvery), and
// stops w (StopWatch; nc is w's connection). what names the bucket, for the log.
func Follow(ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue, w jetstream.KeyWatcher, created time.Time, log *slog.Logger, what string, apply func(jetstream.KeyValueEntry)) {
	defer StopWatch(nc, w)
	recheck := time.NewTicker(RecheckEvery)
	defer recheck.Stop()
	for {
		select {
		case <-recheck.C:
			if Recreated(ctx, kv, created) {
				log.Warn(what + " was deleted and created again under its watch")
				return
			}
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			apply(e)
		case <-ctx.Done():
			return
		}
	}
}
