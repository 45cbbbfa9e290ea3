package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestOpenRefusesTimeoutsOutsideTheBounds: timeout_ms is compared with the bounds
// in milliseconds. It was converted to a time.Duration first, which overflows past
// 2^63 ns: 2^58 ms wrapped to 0 (the default timeout) and 2^58 ms + 60 000 to 60 s,
// both opened instead of refused.
func TestOpenRefusesTimeoutsOutsideTheBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	before := e.lastSeq(t)
	for _, ms := range []int64{
		1<<58 + 60_000, // × 10^6 ns wraps to exactly 60 s
		1 << 58,        // wraps to 0: the default
		24*3600*1000 + 1,
		1<<63 - 1,
	} {
		t.Run(fmt.Sprint(ms), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var resp wire.SessionOpenResponse
			err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: ms}, &resp)
			if err == nil {
				t.Fatalf("timeout_ms %d: got a session with timeout_ms %d, want bad_request", ms, resp.Session.TimeoutMS)
			}
			wantCode(t, err, wire.CodeBadRequest)
		})
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("refused opens wrote the bucket: sequence %d, then %d", before, after)
	}
	// The bounds themselves are accepted.
	for _, ms := range []int64{1000, 24 * 3600 * 1000} {
		_, resp := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: ms})
		if resp.Session.TimeoutMS != ms {
			t.Fatalf("got timeout_ms %d, want %d", resp.Session.TimeoutMS, ms)
		}
	}
}
