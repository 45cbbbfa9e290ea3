package main

import (
	"bufio"
	"context"
	"errors"
	"io"
)

// readInput reads r, standard input, to its end (at most limit bytes when limit is
// above 0), or until ctx ends.
func readInput(ctx context.Context, r io.Reader, limit int64) ([]byte, error) {
	if limit > 0 {
		r = io.LimitReader(r, limit)
	}
	return untilDone(ctx, func() ([]byte, error) { return io.ReadAll(r) })
}

// readLine reads the first line of r, standard input, without its line end, or
// until ctx ends. A last line without a line end counts.
func readLine(ctx context.Context, r io.Reader) (string, error) {
	return untilDone(ctx, func() (string, error) {
		line, err := bufio.NewReader(r).ReadString('\n')
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return line, err
	})
}

// untilDone returns what read returns, or ctx's error when ctx ends first. roster
// catches Ctrl-C to end ctx, so a read from a terminal nobody types on must give
// way to it: the read is left behind, and the process ends soon after.
func untilDone[T any](ctx context.Context, read func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := read()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
