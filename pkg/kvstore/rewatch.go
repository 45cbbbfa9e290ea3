package kvstore

import (
	"context"
	"log/slog"
	"time"

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
