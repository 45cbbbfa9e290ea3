package registry

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestThrottledWarn: a warning repeated for every event while storage is away is
// logged once per interval, the next line counting the ones left out; before, an
// outage logged one line per event.
func TestThrottledWarn(t *testing.T) {
	var logs natstest.Buffer
	w := newThrottledWarn(logs.Logger(), "publishing a session event", time.Hour)
	for range 1000 {
		w.warn("err", "no responders")
	}
	if n := strings.Count(logs.String(), "publishing a session event"); n != 1 {
		t.Fatalf("1000 failures in an interval logged %d lines, want 1:\n%s", n, logs.String())
	}
	w.last = w.last.Add(-time.Hour) // the interval has passed
	w.warn("err", "no responders")
	if !strings.Contains(logs.String(), `"suppressed":999`) {
		t.Fatalf("the line after the interval does not count the 999 left out:\n%s", logs.String())
	}
}

// TestThrottledWarnCountsTheLastOnes: occurrences left out that no later line
// counts (the failures stopped within the interval) are counted at its end; they
// were never logged.
func TestThrottledWarnCountsTheLastOnes(t *testing.T) {
	var logs natstest.Buffer
	w := newThrottledWarn(logs.Logger(), "publishing a session event", 50*time.Millisecond)
	for range 10 {
		w.warn("err", "no responders")
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), `"suppressed":9`) {
			return fmt.Errorf("the 9 left out are not counted:\n%s", logs.String())
		}
		return nil
	})
}

// TestEventWarnNamesTheService: the failed-publish warning carries the service's
// attribute, as every other line of the instance does; it was given the logger New
// was called with, without it, so a search of the registry's lines missed it.
func TestEventWarnNamesTheService(t *testing.T) {
	srv := natstest.Start(t)
	var logs natstest.Buffer
	s, err := New(srv.ServiceConn(t), Config{}, testPolicy(), noop.NewTracerProvider(), logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.svc.Stop(context.Background()) })
	s.eventWarn.warn("err", "no responders")
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "publishing a session event") {
			if !strings.Contains(line, `"service":"`+Name+`"`) {
				t.Fatalf("got %s, want the line to name service %s", line, Name)
			}
			return
		}
	}
	t.Fatalf("no warning logged:\n%s", logs.String())
}
