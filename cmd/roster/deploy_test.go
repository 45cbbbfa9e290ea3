package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/seed-3c836eab/roster/pkg/roster"
)

// TestDeployedEnvironmentsPassServesChecks gives serve the environment of every
// Roster service in deploy/ (docker compose and Kubernetes) and runs the checks it
// makes before starting: deploy/'s own tests check that each ROSTER_ variable names a
// flag, not that serve takes the values and their combination (a flag of the
// embedded server beside ROSTER_NATS_URL, a --replicas out of range, a bad duration
// or log level would pass them, and fail every pod at start).
func TestDeployedEnvironmentsPassServesChecks(t *testing.T) {
	envs := composeEnvs(t, "../../deploy/docker-compose.yml")
	for name, env := range kubernetesEnvs(t, "../../deploy/k8s/roster.yaml") {
		envs[name] = env
	}
	if len(envs) != 8 {
		t.Fatalf("got %d Roster services in deploy/, want 8 (4 in compose, 4 in Kubernetes): %v", len(envs), envs)
	}
	for name, env := range envs {
		t.Run(name, func(t *testing.T) {
			if err := checkServeEnv(t, env); err != nil {
				t.Errorf("%v (environment %v)", err, env)
			}
		})
	}
	// The check itself: an embedded server's flag beside ROSTER_NATS_URL fails it.
	t.Run("with ROSTER_DATA_DIR", func(t *testing.T) {
		env := maps.Clone(envs["compose lock"])
		env["ROSTER_DATA_DIR"] = "/data"
		if err := checkServeEnv(t, env); exitCode(err) != 2 {
			t.Errorf("got %v, want a usage error", err)
		}
	})
}

// checkServeEnv runs what serve checks before it starts, with env as the whole
// ROSTER_ environment and no arguments.
func checkServeEnv(t *testing.T, env map[string]string) error {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix) {
			t.Setenv(k, "") // restored after the test
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd, o := serveCommand()
	if err := cmd.ParseFlags(nil); err != nil {
		return err
	}
	if err := bindEnv(cmd); err != nil {
		return err
	}
	o.changed = cmd.Flags().Changed
	if _, err := newLogger(io.Discard, o.logFormat, o.logLevel); err != nil {
		return usageError{err}
	}
	for _, s := range o.services {
		if !slices.Contains(roster.ServiceNames, s) {
			return usageError{fmt.Errorf("unknown service %q", s)}
		}
	}
	_, err := o.config()
	return err
}

func readDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, doc)
	}
}

// composeEnvs returns the environment of each compose service that runs roster,
// with ROSTER_NATS_PASSWORD, which roster.env (generated) holds.
func composeEnvs(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	services, _ := readDocs(t, path)[0]["services"].(map[string]any)
	for name, s := range services {
		svc, _ := s.(map[string]any)
		if fmt.Sprint(svc["command"]) != "[serve]" {
			continue
		}
		env := map[string]string{"ROSTER_NATS_PASSWORD": "generated"}
		vars, _ := svc["environment"].(map[string]any)
		for k, v := range vars {
			env[k] = fmt.Sprint(v)
		}
		out["compose "+name] = env
	}
	return out
}

// kubernetesEnvs returns the environment of each container of the Deployments,
// with a placeholder for each value taken from a Secret.
func kubernetesEnvs(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, doc := range readDocs(t, path) {
		if doc["kind"] != "Deployment" {
			continue
		}
		spec, _ := doc["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		podSpec, _ := tmpl["spec"].(map[string]any)
		containers, _ := podSpec["containers"].([]any)
		for _, c := range containers {
			c, _ := c.(map[string]any)
			env := map[string]string{}
			vars, _ := c["env"].([]any)
			for _, v := range vars {
				v, _ := v.(map[string]any)
				if val, ok := v["value"]; ok {
					env[fmt.Sprint(v["name"])] = fmt.Sprint(val)
				} else {
					env[fmt.Sprint(v["name"])] = "from-secret"
				}
			}
			out[fmt.Sprintf("kubernetes %s", c["name"])] = env
		}
	}
	return out
}
