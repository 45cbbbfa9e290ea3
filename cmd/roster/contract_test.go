package main

import (
	"encoding/json"
	"io/fs"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"gopkg.in/yaml.v3"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/schemas"
)

// asyncAPIAddresses returns the channel addresses of schemas/asyncapi.yaml.
func asyncAPIAddresses(t *testing.T) map[string]bool {
	t.Helper()
	data, err := fs.ReadFile(schemas.FS, "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI string `yaml:"asyncapi"`
		Channels map[string]struct {
			Address string `yaml:"address"`
		} `yaml:"channels"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Fatalf("asyncapi.yaml: got version %q, want 3.0.0", doc.AsyncAPI)
	}
	out := map[string]bool{}
	for _, c := range doc.Channels {
		out[c.Address] = true
	}
	return out
}

// TestEndpointsAreDocumented asks every running service for its endpoints and checks
// that each subject is a channel of the AsyncAPI document and each schema it names
// exists and compiles; then it validates every health reply against its schema.
func TestEndpointsAreDocumented(t *testing.T) {
	t.Parallel()
	url, _ := startServe(t)
	nc := connectAll(t, url)
	addresses := asyncAPIAddresses(t)

	for _, name := range []string{"roster-auth", "roster-registry", "roster-lock", "roster-messaging"} {
		t.Run(name, func(t *testing.T) {
			msg, err := nc.Request("$SRV.INFO."+name, nil, 5*time.Second)
			if err != nil {
				t.Fatalf("$SRV.INFO: %v", err)
			}
			var info micro.Info
			if err := json.Unmarshal(msg.Data, &info); err != nil {
				t.Fatal(err)
			}
			if len(info.Endpoints) == 0 {
				t.Fatal("service has no endpoints")
			}
			for _, ep := range info.Endpoints {
				if !addresses[ep.Subject] {
					t.Errorf("endpoint %s: subject %s is not a channel in schemas/asyncapi.yaml", ep.Name, ep.Subject)
				}
				for _, key := range []string{"request_schema", "response_schema"} {
					if s := ep.Metadata[key]; s != "" {
						if _, err := schematest.Schema(s); err != nil {
							t.Errorf("endpoint %s: %s %q: %v", ep.Name, key, s, err)
						}
					}
				}
				if ep.Name == "health" {
					reply, err := nc.Request(ep.Subject, nil, 5*time.Second)
					if err != nil {
						t.Fatalf("health: %v", err)
					}
					schematest.Validate(t, ep.Metadata["response_schema"], reply.Data)
				}
			}
		})
	}
}
