package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/seed-3c836eab/roster/deploy/internal/gensecrets"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/roster"
)

// The paths `roster serve --health-listen` serves (pkg/roster, HealthHandler; the
// cluster test requests both).
const (
	livez  = "/livez"
	readyz = "/readyz"
)

// serveFlags returns the flags of `roster serve`, read from cmd/roster/serve.go and
// tuning.go: the name argument of every fs.XxxVar(…) and fs.Xxx(…) call on a flag
// set.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	flags := map[string]bool{}
	// serve.go defines serve's flags, tuning.go the services' limits and timeouts.
	for _, file := range []string{"../cmd/roster/serve.go", "../cmd/roster/tuning.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		inspectFlags(f, flags)
	}
	// Sanity: the parse found the flags this deployment relies on.
	for _, f := range []string{"services", "nats-url", "replicas", "health-listen", "auth-callout-seed-file", "policy", "session-timeout"} {
		if !flags[f] {
			t.Fatalf("the parse of serve.go and tuning.go found no --%s (found %v): update serveFlags", f, flags)
		}
	}
	return flags
}

// inspectFlags adds to flags the names of the flags f defines on a FlagSet named fs.
func inspectFlags(f *ast.File, flags map[string]bool) {
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if recv, ok := sel.X.(*ast.Ident); !ok || recv.Name != "fs" {
			return true
		}
		arg := 0
		if strings.HasSuffix(sel.Sel.Name, "Var") || strings.HasSuffix(sel.Sel.Name, "VarP") {
			arg = 1
		}
		if len(call.Args) > arg {
			if lit, ok := call.Args[arg].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				name, _ := strconv.Unquote(lit.Value)
				flags[name] = true
			}
		}
		return true
	})
}

// envFlag maps ROSTER_FOO_BAR to foo-bar, as cmd/roster's bindEnv reads it.
func envFlag(env string) (string, bool) {
	rest, ok := strings.CutPrefix(env, "ROSTER_")
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-")), ok
}

// checkEnv fails for a ROSTER_ variable that names no serve flag.
func checkEnv(t *testing.T, where string, flags map[string]bool, env map[string]string) {
	t.Helper()
	for k := range env {
		if flag, ok := envFlag(k); ok && !flags[flag] {
			t.Errorf("%s: %s sets --%s, which roster serve does not have", where, k, flag)
		}
	}
}

func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// get walks a decoded YAML tree: string keys index maps, ints index lists.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// natsVersion is the nats-server version in go.mod: the NATS image must be the same
// server the embedded one and these tests run.
func natsVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod: no nats-server")
	}
	return string(m[1])
}

// healthPort is the port of a --health-listen value such as ":8080".
func healthPort(t *testing.T, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		t.Fatalf("ROSTER_HEALTH_LISTEN %q: %v", listen, err)
	}
	return port
}

// Variable references in a manifest: compose's interpolation (${VAR}, ${VAR:?msg}, …)
// and Kubernetes' dependent environment variables ($(VAR)).
var (
	composeVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}`)
	k8sVarRE     = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
)

// expandedVar is what checkRoutes puts in place of a reference to the variable
// name: it parses in a URL's userinfo, and no literal password looks like it.
func expandedVar(name string) string { return "expanded." + name }

// checkRoutes checks a NATS_ROUTES list: URLs of hosts, in order, each with the route
// user and, as its password, the variable NATS_ROUTE_PASSWORD (never a literal: the
// manifests are not secret). varRE finds the manifest's variable references.
func checkRoutes(t *testing.T, where, list string, varRE *regexp.Regexp, hosts []string) {
	t.Helper()
	list = varRE.ReplaceAllStringFunc(list, func(ref string) string {
		return expandedVar(varRE.FindStringSubmatch(ref)[1])
	})
	var got []string
	for _, raw := range strings.Split(strings.Trim(list, "[] "), ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			t.Errorf("%s: route %v", where, err)
			continue
		}
		got = append(got, u.Host)
		if pw, _ := u.User.Password(); u.Scheme != "nats" || u.User.Username() != embedded.RouteUser || pw != expandedVar("NATS_ROUTE_PASSWORD") {
			t.Errorf("%s: route %s: want nats://%s:<NATS_ROUTE_PASSWORD>@host: nats.conf's cluster authorization admits only that, and a node presents to a listed route only the URL's credentials",
				where, u.Redacted(), embedded.RouteUser)
		}
	}
	if !slices.Equal(got, hosts) {
		t.Errorf("%s: routes to %v, want %v", where, got, hosts)
	}
}

// generatedEnvFiles returns the keys of each NAME=value file gensecrets writes, by
// file name.
func generatedEnvFiles(t *testing.T) map[string][]string {
	t.Helper()
	d := newDeployment(t)
	files := map[string][]string{}
	for _, name := range []string{gensecrets.RosterEnvFile, gensecrets.NATSEnvFile} {
		files[name] = slices.Sorted(maps.Keys(readEnvFile(t, filepath.Join(d.dir, name))))
	}
	return files
}

func urlHosts(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		out = append(out, strings.TrimPrefix(strings.TrimSpace(u), "nats://"))
	}
	return out
}

func TestCompose(t *testing.T) {
	flags := serveFlags(t)
	docs := readYAML(t, "docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	volumes, _ := docs[0]["volumes"].(map[string]any)

	// Three NATS nodes from nats.conf, each with its own volume and name, routing to
	// all three with the route password of the env file gensecrets writes, which
	// compose's interpolation reads (--env-file): a service's env_file would not do.
	if keys := generatedEnvFiles(t)[gensecrets.NATSEnvFile]; !slices.Contains(keys, "NATS_ROUTE_PASSWORD") {
		t.Errorf("gensecrets' %s has %v, no NATS_ROUTE_PASSWORD", gensecrets.NATSEnvFile, keys)
	}
	envFileArg := "--env-file deploy/secrets/" + gensecrets.NATSEnvFile
	if data, err := os.ReadFile("docker-compose.yml"); err != nil || !strings.Contains(string(data), envFileArg+" -f deploy/docker-compose.yml up") {
		t.Errorf("docker-compose.yml's usage does not pass %s (%v)", envFileArg, err)
	}
	var routes, clientURLs []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-%d:6222", i))
	}
	for i := range 3 {
		name := fmt.Sprintf("nats-%d", i)
		svc := services[name]
		if svc == nil {
			t.Fatalf("no service %s", name)
		}
		clientURLs = append(clientURLs, name+":4222")
		if img := str(get(svc, "image")); img != "nats:"+natsVersion(t)+"-alpine" {
			t.Errorf("%s: image %s, want the nats-server of go.mod", name, img)
		}
		env, _ := get(svc, "environment").(map[string]any)
		if str(env["NATS_SERVER_NAME"]) != name {
			t.Errorf("%s: NATS_SERVER_NAME %v", name, env["NATS_SERVER_NAME"])
		}
		checkRoutes(t, name, str(env["NATS_ROUTES"]), composeVarRE, routes)
		if pw := str(env["NATS_ROUTE_PASSWORD"]); !regexp.MustCompile(`^\$\{NATS_ROUTE_PASSWORD:\?[^}]*` + regexp.QuoteMeta(envFileArg) + `[^}]*\}$`).MatchString(pw) {
			t.Errorf("%s: NATS_ROUTE_PASSWORD %q: want ${NATS_ROUTE_PASSWORD:?…%s…}, required and from the generated file", name, pw, envFileArg)
		}
		mounts := fmt.Sprint(get(svc, "volumes"))
		for _, want := range []string{"./nats/nats.conf:/etc/nats/nats.conf:ro", "./secrets/secrets.conf:/etc/nats/secrets.conf:ro", name + "-data:/data"} {
			if !strings.Contains(mounts, want) {
				t.Errorf("%s: no volume %s in %s", name, want, mounts)
			}
		}
		if _, ok := volumes[name+"-data"]; !ok {
			t.Errorf("volume %s-data is not declared", name)
		}
		if hc := fmt.Sprint(get(svc, "healthcheck", "test")); !strings.Contains(hc, ":8222/healthz") {
			t.Errorf("%s: health check %s", name, hc)
		}
	}

	// Each Roster service twice, alone in its process, joining all three nodes with
	// R3, with a health check on the port it serves probes on.
	for _, name := range roster.ServiceNames {
		svc := services[name]
		if svc == nil {
			t.Errorf("no service %s", name)
			continue
		}
		if r := get(svc, "deploy", "replicas"); r != 2 {
			t.Errorf("%s: replicas %v, want 2", name, r)
		}
		if cmd := fmt.Sprint(get(svc, "command")); cmd != "[serve]" {
			t.Errorf("%s: command %s", name, cmd)
		}
		env := map[string]string{}
		if m, ok := get(svc, "environment").(map[string]any); ok {
			for k, v := range m {
				env[k] = str(v)
			}
		}
		checkEnv(t, "compose "+name, flags, env)
		if env["ROSTER_SERVICES"] != name || env["ROSTER_REPLICAS"] != "3" || env["ROSTER_NATS_USER"] != "roster-service" {
			t.Errorf("%s: environment %v", name, env)
		}
		if got := urlHosts(env["ROSTER_NATS_URL"]); !slices.Equal(got, clientURLs) {
			t.Errorf("%s: ROSTER_NATS_URL %v, want %v", name, got, clientURLs)
		}
		port := healthPort(t, env["ROSTER_HEALTH_LISTEN"])
		if hc := fmt.Sprint(get(svc, "healthcheck", "test")); !strings.Contains(hc, ":"+port+readyz) {
			t.Errorf("%s: health check %s, want %s on port %s", name, hc, readyz, port)
		}
		if envFiles := fmt.Sprint(get(svc, "env_file")); !strings.Contains(envFiles, "secrets/roster.env") {
			t.Errorf("%s: env_file %s: want the generated ROSTER_NATS_PASSWORD", name, envFiles)
		}
	}
	auth := get(services["auth"], "environment").(map[string]any)
	for _, k := range []string{"ROSTER_AUTH_CALLOUT_SEED_FILE", "ROSTER_POLICY", "ROSTER_USERS_FILE"} {
		if auth[k] == nil {
			t.Errorf("auth: no %s", k)
		}
	}
}

// k8sObjects decodes every manifest of deploy/k8s by kind/name.
func k8sObjects(t *testing.T) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	for _, f := range []string{"k8s/namespace.yaml", "k8s/nats.yaml", "k8s/roster.yaml"} {
		for _, doc := range readYAML(t, f) {
			key := str(doc["kind"]) + "/" + str(get(doc, "metadata", "name"))
			if _, dup := objs[key]; dup {
				t.Errorf("%s: %s twice", f, key)
			}
			objs[key] = doc
		}
	}
	return objs
}

// containerEnv returns a container's literal env values ("<secret:name/key>" for
// references to secrets).
func containerEnv(c any) map[string]string {
	env := map[string]string{}
	list, _ := get(c, "env").([]any)
	for _, e := range list {
		name := str(get(e, "name"))
		switch {
		case get(e, "value") != nil:
			env[name] = str(get(e, "value"))
		case get(e, "valueFrom", "secretKeyRef") != nil:
			env[name] = "<secret:" + str(get(e, "valueFrom", "secretKeyRef", "name")) + "/" + str(get(e, "valueFrom", "secretKeyRef", "key")) + ">"
		default:
			env[name] = "<ref>"
		}
	}
	return env
}

// namedPort resolves a probe's port (a name or a number) against the container.
func namedPort(c any, port any) string {
	if name, ok := port.(string); ok {
		ports, _ := get(c, "ports").([]any)
		for _, p := range ports {
			if str(get(p, "name")) == name {
				return str(get(p, "containerPort"))
			}
		}
		return ""
	}
	return str(port)
}

// kustomization is what deploy/k8s/kustomization.yaml generates.
type kustomization struct {
	configMaps, secrets map[string]bool
	secretKeys          map[string][]string
}

func readKustomization(t *testing.T) kustomization {
	t.Helper()
	generated := generatedEnvFiles(t)
	k := kustomization{configMaps: map[string]bool{}, secrets: map[string]bool{}, secretKeys: map[string][]string{}}
	top := readYAML(t, "k8s/kustomization.yaml")[0]
	resources, _ := top["resources"].([]any)
	for _, r := range resources {
		path := filepath.Join("k8s", str(r))
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("resource %s: %v", r, err)
			continue
		}
		if !st.IsDir() {
			continue
		}
		// A base directory: its generated ConfigMaps, from files that must exist.
		base := readYAML(t, filepath.Join(path, "kustomization.yaml"))[0]
		gens, _ := base["configMapGenerator"].([]any)
		for _, g := range gens {
			k.configMaps[str(get(g, "name"))] = true
			files, _ := get(g, "files").([]any)
			for _, f := range files {
				if _, err := os.Stat(filepath.Join(path, str(f))); err != nil {
					t.Errorf("%s: %v", path, err)
				}
			}
		}
	}
	gens, _ := top["secretGenerator"].([]any)
	for _, g := range gens {
		name := str(get(g, "name"))
		k.secrets[name] = true
		files, _ := get(g, "files").([]any)
		for _, f := range files {
			key, _, _ := strings.Cut(str(f), "=")
			k.secretKeys[name] = append(k.secretKeys[name], key)
		}
		envs, _ := get(g, "envs").([]any)
		for _, e := range envs {
			// A file gensecrets writes into k8s/secrets: its keys.
			dir, file := filepath.Split(str(e))
			keys, ok := generated[file]
			if dir != "secrets/" || !ok {
				t.Errorf("secret %s: envs %s is not a file gensecrets writes into secrets/", name, e)
			}
			k.secretKeys[name] = append(k.secretKeys[name], keys...)
		}
	}
	return k
}

// checkSecretRefs fails for an environment variable from a secret key the
// kustomization does not generate.
func checkSecretRefs(t *testing.T, where string, kust kustomization, env map[string]string) {
	t.Helper()
	for k, v := range env {
		if ref, ok := strings.CutPrefix(v, "<secret:"); ok {
			secret, key, _ := strings.Cut(strings.TrimSuffix(ref, ">"), "/")
			if !slices.Contains(kust.secretKeys[secret], key) {
				t.Errorf("%s: %s from secret %s key %s, which the kustomization does not generate", where, k, secret, key)
			}
		}
	}
}

// envIndex is the position of the variable name in a container's env, or -1.
func envIndex(c any, name string) int {
	list, _ := get(c, "env").([]any)
	for i, e := range list {
		if str(get(e, "name")) == name {
			return i
		}
	}
	return -1
}

func TestKubernetes(t *testing.T) {
	flags := serveFlags(t)
	objs := k8sObjects(t)
	kust := readKustomization(t)

	// NATS: a StatefulSet of 3 with a headless service for the routes, a volume claim
	// per pod, the configuration from nats.conf, and probes on the monitoring port.
	sts := objs["StatefulSet/nats"]
	if sts == nil {
		t.Fatal("no StatefulSet nats")
	}
	if r := get(sts, "spec", "replicas"); r != 3 {
		t.Errorf("nats replicas %v", r)
	}
	svcName := str(get(sts, "spec", "serviceName"))
	headless := objs["Service/"+svcName]
	if headless == nil || str(get(headless, "spec", "clusterIP")) != "None" {
		t.Errorf("serviceName %q is not a headless service", svcName)
	}
	if get(sts, "spec", "volumeClaimTemplates", 0, "metadata", "name") != "data" {
		t.Error("no volume claim template data")
	}
	nats := get(sts, "spec", "template", "spec", "containers", 0)
	if img := str(get(nats, "image")); img != "nats:"+natsVersion(t)+"-alpine" {
		t.Errorf("nats image %s, want the nats-server of go.mod", img)
	}
	env := containerEnv(nats)
	var wantRoutes, wantURLs []string
	for i := range 3 {
		wantRoutes = append(wantRoutes, fmt.Sprintf("nats-%d.%s:6222", i, svcName))
		wantURLs = append(wantURLs, fmt.Sprintf("nats-%d.%s:4222", i, svcName))
	}
	checkRoutes(t, "nats", env["NATS_ROUTES"], k8sVarRE, wantRoutes)
	// The route password comes from a generated secret, and is defined before
	// NATS_ROUTES: Kubernetes expands $(VAR) only for variables defined above it.
	if pw := env["NATS_ROUTE_PASSWORD"]; !strings.HasPrefix(pw, "<secret:") || !strings.HasSuffix(pw, "/NATS_ROUTE_PASSWORD>") {
		t.Errorf("nats: NATS_ROUTE_PASSWORD = %q, want it from a secret", pw)
	}
	checkSecretRefs(t, "nats", kust, env)
	if i, j := envIndex(nats, "NATS_ROUTE_PASSWORD"), envIndex(nats, "NATS_ROUTES"); i < 0 || i > j {
		t.Errorf("nats: NATS_ROUTE_PASSWORD (env %d) is not defined before NATS_ROUTES (env %d)", i, j)
	}
	if str(get(nats, "env", 0, "valueFrom", "fieldRef", "fieldPath")) != "metadata.name" {
		t.Error("NATS_SERVER_NAME is not the pod name")
	}
	for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
		path := str(get(nats, probe, "httpGet", "path"))
		if !strings.HasPrefix(path, "/healthz") || namedPort(nats, get(nats, probe, "httpGet", "port")) != "8222" {
			t.Errorf("nats %s: %s on %v", probe, path, get(nats, probe, "httpGet", "port"))
		}
	}
	vols := fmt.Sprint(get(sts, "spec", "template", "spec", "volumes"))
	for _, want := range []string{"name:nats-config", "secretName:nats-secrets"} {
		if !strings.Contains(vols, want) {
			t.Errorf("nats volumes lack %s: %s", want, vols)
		}
	}
	if !kust.configMaps["nats-config"] || !kust.secrets["nats-secrets"] {
		t.Error("kustomization does not generate nats-config and nats-secrets")
	}
	if !strings.Contains(fmt.Sprint(get(nats, "lifecycle", "preStop")), "ldm") {
		t.Error("nats has no lame duck preStop hook")
	}
	if objs["PodDisruptionBudget/nats"] == nil {
		t.Error("no PodDisruptionBudget for nats")
	}

	// The services: a Deployment of 2 each, probes where --health-listen serves
	// them, resources, a PodDisruptionBudget, and only secrets and config maps the
	// kustomization generates.
	for _, name := range roster.ServiceNames {
		d := objs["Deployment/roster-"+name]
		if d == nil {
			t.Errorf("no Deployment roster-%s", name)
			continue
		}
		if r := get(d, "spec", "replicas"); r != 2 {
			t.Errorf("%s: replicas %v, want 2", name, r)
		}
		c := get(d, "spec", "template", "spec", "containers", 0)
		env := containerEnv(c)
		checkEnv(t, "k8s roster-"+name, flags, env)
		if env["ROSTER_SERVICES"] != name || env["ROSTER_REPLICAS"] != "3" || env["ROSTER_NATS_USER"] != "roster-service" {
			t.Errorf("%s: environment %v", name, env)
		}
		if got := urlHosts(env["ROSTER_NATS_URL"]); !slices.Equal(got, wantURLs) {
			t.Errorf("%s: ROSTER_NATS_URL %v, want %v", name, got, wantURLs)
		}
		port := healthPort(t, env["ROSTER_HEALTH_LISTEN"])
		for probe, path := range map[string]string{"readinessProbe": readyz, "livenessProbe": livez, "startupProbe": livez} {
			if got := str(get(c, probe, "httpGet", "path")); got != path {
				t.Errorf("%s %s: path %s, want %s", name, probe, got, path)
			}
			if got := namedPort(c, get(c, probe, "httpGet", "port")); got != port {
				t.Errorf("%s %s: port %s, want %s (ROSTER_HEALTH_LISTEN)", name, probe, got, port)
			}
		}
		for _, kind := range []string{"requests", "limits"} {
			for _, res := range []string{"cpu", "memory"} {
				if get(c, "resources", kind, res) == nil {
					t.Errorf("%s: no %s %s", name, res, kind)
				}
			}
		}
		checkSecretRefs(t, name, kust, env)
		volumes, _ := get(d, "spec", "template", "spec", "volumes").([]any)
		for _, v := range volumes {
			if s := str(get(v, "secret", "secretName")); s != "" && !kust.secrets[s] {
				t.Errorf("%s: volume of secret %s, which the kustomization does not generate", name, s)
			}
			if cm := str(get(v, "configMap", "name")); cm != "" && !kust.configMaps[cm] {
				t.Errorf("%s: volume of config map %s, which the kustomization does not generate", name, cm)
			}
		}
		pdb := objs["PodDisruptionBudget/roster-"+name]
		if pdb == nil || fmt.Sprint(get(pdb, "spec", "selector")) != fmt.Sprint(get(d, "spec", "selector")) {
			t.Errorf("%s: no PodDisruptionBudget selecting its pods", name)
		}
	}
	auth := containerEnv(get(objs["Deployment/roster-auth"], "spec", "template", "spec", "containers", 0))
	for k, file := range map[string]string{"ROSTER_AUTH_CALLOUT_SEED_FILE": "callout.nk", "ROSTER_USERS_FILE": "users.yaml", "ROSTER_POLICY": "policy.yaml"} {
		if filepath.Base(auth[k]) != file {
			t.Errorf("auth: %s = %q", k, auth[k])
		}
	}
}

// TestDeployedPolicy checks the policy the deployments store: valid, and none of the
// development relaxations.
func TestDeployedPolicy(t *testing.T) {
	p, err := policy.LoadFile("roster/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Anonymous.Allowed || p.Connections.SharedInbox || p.Connections.ServiceDiscovery {
		t.Errorf("policy relaxes security: anonymous %+v, connections %+v", p.Anonymous, p.Connections)
	}
	if len(p.Roles["admin"]) == 0 {
		t.Error("no admin role (gensecrets' user has it)")
	}
}

// TestREADMEFlags checks that every flag the deploy README passes to roster serve
// exists, and that every ROSTER_ variable it names is read by roster serve or, as
// ROSTER_PASSWORD, by the client commands.
func TestREADMEFlags(t *testing.T) {
	flags := serveFlags(t)
	clientFlags := map[string]bool{}
	f, err := parser.ParseFile(token.NewFileSet(), "../cmd/roster/clientflags.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	inspectFlags(f, clientFlags)
	if !clientFlags["password"] || !clientFlags["server"] {
		t.Fatalf("the parse of clientflags.go found no --password or --server (found %v): update TestREADMEFlags", clientFlags)
	}
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	flagRE := regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
	envRE := regexp.MustCompile(`\bROSTER_[A-Z_]+[A-Z]\b`)
	seen := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "roster serve") || strings.HasPrefix(strings.TrimSpace(line), "--") {
			for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
				seen++
				if !flags[m[1]] {
					t.Errorf("README: roster serve --%s does not exist: %s", m[1], strings.TrimSpace(line))
				}
			}
		}
		for _, env := range envRE.FindAllString(line, -1) {
			if flag, _ := envFlag(env); !flags[flag] && !clientFlags[flag] {
				t.Errorf("README: %s names no flag of roster serve or of the client commands", env)
			}
		}
	}
	if seen == 0 {
		t.Error("README shows no roster serve flags")
	}
}

// TestK8sUsesTheOneNATSConfig: the ConfigMap is generated from deploy/nats/nats.conf,
// the file the other tests start servers from.
func TestK8sUsesTheOneNATSConfig(t *testing.T) {
	base := readYAML(t, "nats/kustomization.yaml")[0]
	if got := fmt.Sprint(get(base, "configMapGenerator", 0, "files")); got != "[nats.conf]" {
		t.Errorf("nats-config is generated from %s", got)
	}
	top := readYAML(t, "k8s/kustomization.yaml")[0]
	if !slices.Contains(top["resources"].([]any), any("../nats")) {
		t.Error("deploy/k8s does not include ../nats")
	}
}

// TestTopREADMEServeFlagTable: the repository README's table of roster serve flags
// names every flag serve.go defines, and only those, each beside its environment
// variable.
func TestTopREADMEServeFlagTable(t *testing.T) {
	flags := serveFlags(t)
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "## `roster serve`")
	if !ok {
		t.Fatal("README has no roster serve section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	flagRE := regexp.MustCompile("`--([a-z][a-z0-9-]*)`")
	listed := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`--") {
			continue
		}
		for _, m := range flagRE.FindAllStringSubmatch(cells[1], -1) {
			listed[m[1]] = true
			if !flags[m[1]] {
				t.Errorf("README lists --%s, which roster serve does not define", m[1])
			}
			if env := "ROSTER_" + strings.ToUpper(strings.ReplaceAll(m[1], "-", "_")); !strings.Contains(cells[2], "`"+env+"`") && !strings.Contains(cells[2], "…") {
				t.Errorf("README: --%s is not beside %s: %q", m[1], env, strings.TrimSpace(cells[2]))
			}
		}
	}
	for f := range flags {
		if !listed[f] && f != "help" {
			t.Errorf("README's table of roster serve flags lacks --%s", f)
		}
	}
}
