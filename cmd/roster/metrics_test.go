package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// collector is an OTLP/gRPC metrics receiver that remembers what it was sent.
type collector struct {
	colmetricspb.UnimplementedMetricsServiceServer
	mu      sync.Mutex
	names   map[string]bool
	service string
}

func (c *collector) Export(_ context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		for _, a := range rm.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.service = a.GetValue().GetStringValue()
			}
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				c.names[m.GetName()] = true
			}
		}
	}
	return &colmetricspb.ExportMetricsServiceResponse{}, nil
}

// TestServeExportsMetrics: roster serve, told by the standard variables where a
// collector listens, sends it the services' metrics over OTLP/gRPC.
func TestServeExportsMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{names: map[string]bool{}}
	gs := grpc.NewServer()
	colmetricspb.RegisterMetricsServiceServer(gs, col)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+l.Addr().String())
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
	url, stop := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s *client.Session
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() (err error) {
		s, err = client.Open(ctx, url, client.Options{})
		return err
	})
	defer func() { _ = s.Close(ctx) }()

	want := []string{"rpc.server.call.duration", "roster.sessions", "roster.auth.attempts", "roster.locks.held"}
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		col.mu.Lock()
		defer col.mu.Unlock()
		var missing []string
		for _, n := range want {
			if !col.names[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 || col.service != "roster" {
			got := make([]string, 0, len(col.names))
			for n := range col.names {
				got = append(got, n)
			}
			slices.Sort(got)
			return fmt.Errorf("collector has %v from %q; missing %v", got, col.service, missing)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
