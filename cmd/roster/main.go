// Command roster runs Roster's services and is its command-line client.
//
//	roster serve                       # all four services on an embedded NATS server
//	roster serve --services lock \
//	  --nats-url nats://nats:4222      # one service against an existing NATS cluster
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := stopOnSignal()
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "roster:", err)
		os.Exit(exitCode(err))
	}
}

// stopOnSignal returns a context that ends at the first SIGINT or SIGTERM. A second
// one ends the process at once, as if roster did not handle signals: a stop that
// waits for services to drain can be cut short.
func stopOnSignal() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// run builds the command tree and executes it.
func run(ctx context.Context, args []string) error {
	root := newRootCmd()
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
