package registry

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// requestDropper hands nats.go in-process connections to a server that, while armed,
// never send the next request published on a subject beginning with prefix: the rest
// of the connection goes on working. To the client it is a JetStream request no
// server answers, as after the node a consumer was placed on, or the meta leader,
// died and before the cluster noticed.
type requestDropper struct {
	srv    *server.Server
	prefix []byte
	mu     sync.Mutex
	armed  int // requests still to drop
	drops  int // requests dropped
}

func (d *requestDropper) InProcessConn() (net.Conn, error) {
	c, err := d.srv.InProcessConn()
	if err != nil {
		return nil, err
	}
	return &droppingConn{Conn: c, d: d}, nil
}

func (d *requestDropper) arm(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.armed = n
}

func (d *requestDropper) dropped() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.drops
}

// startDropped starts a registry instance whose connection goes through d, and
// waits until it is ready.
func startDropped(t *testing.T, srv *natstest.Server, d *requestDropper, cfg Config) *Service {
	t.Helper()
	nc := srv.ServiceConn(t, nats.InProcessServer(d))
	reg, err := New(nc, cfg, testPolicy(), noop.NewTracerProvider(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Run(t, reg.Run, nc.Close)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return reg.track.ready(t.Context()) })
	return reg
}

type droppingConn struct {
	net.Conn
	d *requestDropper
}

// Write leaves out of b a PUB or HPUB to the prefix, when one is wholly in it.
func (c *droppingConn) Write(b []byte) (int, error) {
	c.d.mu.Lock()
	if c.d.armed > 0 {
		if start, end, ok := findPub(b, c.d.prefix); ok {
			c.d.armed--
			c.d.drops++
			c.d.mu.Unlock()
			out := append(append([]byte(nil), b[:start]...), b[end:]...)
			_, err := c.Conn.Write(out)
			return len(b), err
		}
	}
	c.d.mu.Unlock()
	return c.Conn.Write(b)
}

// findPub finds in b the protocol message publishing to a subject beginning with
// prefix: PUB <subject> [reply] <size> or HPUB <subject> [reply] <hsize> <size>, then
// the payload.
func findPub(b, prefix []byte) (start, end int, ok bool) {
	i := bytes.Index(b, append([]byte("PUB "), prefix...))
	if i < 0 {
		return 0, 0, false
	}
	start = i
	if i > 0 && b[i-1] == 'H' {
		start = i - 1
	}
	eol := bytes.Index(b[i:], []byte("\r\n"))
	if eol < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i : i+eol])
	size, err := strconv.Atoi(string(f[len(f)-1]))
	if err != nil {
		return 0, 0, false
	}
	end = i + eol + 2 + size + 2
	if end > len(b) {
		return 0, 0, false
	}
	return start, end, true
}

// A reconnect made the instance read the activity it missed from the activity
// stream before it expired anything again, and when the request creating the
// replay's consumer went unanswered — the node it was placed on, or the meta leader,
// had just died — the catch-up waited out its 10 s, then counted every session as
// active at that moment: silent sessions closed 10 s + their timeout late (found
// killing the node leading the sessions bucket with the registries connected to it).
// Now every session counts as active at the reconnect until the stream has been read,
// and the reading is retried in short attempts until it succeeds: a session silent
// since just before the cut closes on time from the reconnect, and one silent for
// long before it on time from its own activity, once a retry has read the stream.
func TestCatchUpWhoseRequestIsLostIsRetried(t *testing.T) {
	const timeout = 5 * time.Second
	srv := startServer(t)
	startAuth(t, srv)
	d := &requestDropper{srv: srv.Server.Server, prefix: []byte("$JS.API.CONSUMER.CREATE." + ActivityStream)}
	reg := startDropped(t, srv, d, Config{DrainTimeout: 5 * time.Second})
	e := &env{srv: srv, reg: &instance{Service: reg}, js: srv.JetStream(t)}
	var err error
	e.kv, err = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	if err != nil {
		t.Fatal(err)
	}

	cl := srv.ClientConn(t)
	long, _ := open(t, cl, &wire.SessionOpenRequest{TimeoutMS: timeout.Milliseconds()})
	longSent, longReplied := keepaliveTimes(t, long)
	time.Sleep(3 * time.Second) // long is silent since
	short, _ := open(t, cl, &wire.SessionOpenRequest{TimeoutMS: timeout.Milliseconds()})
	shortSent, shortReplied := keepaliveTimes(t, short)
	d.arm(1)
	if err := reg.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		c             *client
		sent, replied time.Time
	}{{long, longSent, longReplied}, {short, shortSent, shortReplied}} {
		natstest.CheckFor(t, timeout+5*time.Second, 10*time.Millisecond, func() error {
			if r := e.record(t, s.c.id); !r.Closed() {
				return fmt.Errorf("session %s is %s", s.c.id, r.State)
			}
			return nil
		})
		closed := *e.record(t, s.c.id).ClosedAt
		if closed.Before(s.sent.Add(timeout)) {
			t.Errorf("session %s closed %v after its last keepalive was sent: before its %v timeout", s.c.id, closed.Sub(s.sent), timeout)
		}
		if late := closed.Sub(s.replied) - timeout; late > time.Second {
			t.Errorf("session %s closed %v after its timeout: want within 1 s", s.c.id, late)
		}
	}
	if d.dropped() != 1 {
		t.Fatalf("the catch-up's consumer was never asked for: %d requests dropped", d.dropped())
	}
}
