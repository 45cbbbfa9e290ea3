package registry

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestEventWarnNamesTheService: the failed-publish warning carries the service's
// attribute, as every other line of the instance does; it was given the logger New
// was called with, without it, so a search of the registry's lines missed it.
func TestEventWarnNamesTheService(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	var logs natstest.Buffer
	s, err := New(srv.ServiceConn(t), Config{}, testPolicy(), noop.NewTracerProvider(), logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.svc.Stop(context.Background()) })
	s.eventWarn.Warn("err", "no responders")
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
