package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/deploy/internal/gensecrets"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// natsConf is the one NATS configuration every node runs (compose mounts it, the k8s
// ConfigMap is generated from it).
const natsConf = "nats/nats.conf"

// deployment is nats.conf beside a generated secrets.conf, as a node sees them.
type deployment struct {
	dir     string
	conf    string // path of the copied nats.conf
	secrets *gensecrets.Secrets
	// routePassword is NATS_ROUTE_PASSWORD of the generated nats.env, which compose
	// and Kubernetes put in every node's environment.
	routePassword string
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	dir := t.TempDir()
	s, err := gensecrets.Generate(dir, gensecrets.Options{NATSCost: bcrypt.MinCost, UserCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(natsConf)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, data, 0o644); err != nil {
		t.Fatal(err)
	}
	env := readEnvFile(t, filepath.Join(dir, gensecrets.NATSEnvFile))
	return &deployment{dir: dir, conf: conf, secrets: s, routePassword: env["NATS_ROUTE_PASSWORD"]}
}

// readEnvFile reads a NAME=value file as gensecrets writes them.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not NAME=value", path, line)
		}
		env[k] = v
	}
	return env
}

// options parses nats.conf as nats-server does for the node named name, with the
// route password of the deployment.
func (d *deployment) options(t *testing.T, name string, routes []string) *server.Options {
	t.Helper()
	return d.optionsWithRoutePassword(t, name, routes, d.routePassword)
}

// optionsWithRoutePassword parses nats.conf for a node given routePassword as
// NATS_ROUTE_PASSWORD.
func (d *deployment) optionsWithRoutePassword(t *testing.T, name string, routes []string, routePassword string) *server.Options {
	t.Helper()
	t.Setenv("NATS_SERVER_NAME", name)
	t.Setenv("NATS_ROUTE_PASSWORD", routePassword)
	t.Setenv("NATS_ROUTES", "["+strings.Join(routes, ", ")+"]")
	opts, err := server.ProcessConfigFile(d.conf)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	return opts
}

var composeRouteHosts = []string{"nats-0:6222", "nats-1:6222", "nats-2:6222"}

// routeURLs returns the route URLs of hosts with the route user and password, as
// compose and Kubernetes write NATS_ROUTES: a node presents to a configured route
// only the credentials in its URL.
func routeURLs(password string, hosts ...string) []string {
	var urls []string
	for _, h := range hosts {
		urls = append(urls, "nats://"+embedded.RouteUser+":"+password+"@"+h)
	}
	return urls
}

// plainRouteURLs returns the route URLs of hosts without credentials.
func plainRouteURLs(hosts ...string) []string {
	var urls []string
	for _, h := range hosts {
		urls = append(urls, "nats://"+h)
	}
	return urls
}

// TestNATSConfig checks what nats.conf sets beyond the accounts: cluster, JetStream
// with fsync on every write, the callout, and no way in without credentials.
func TestNATSConfig(t *testing.T) {
	d := newDeployment(t)
	composeRoutes := routeURLs(d.routePassword, composeRouteHosts...)
	o := d.options(t, "nats-1", composeRoutes)

	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("server_name", o.ServerName, "nats-1")
	check("port", o.Port, 4222)
	check("max_payload", o.MaxPayload, 1<<20)
	check("http port", o.HTTPPort, 8222)
	check("jetstream", o.JetStream, true)
	check("sync_interval always", o.SyncAlways, true)
	check("store_dir", o.StoreDir, "/data/jetstream")
	check("cluster name", o.Cluster.Name, "roster")
	check("cluster port", o.Cluster.Port, 6222)
	var routes []string
	for _, r := range o.Routes {
		routes = append(routes, r.String())
	}
	check("routes", routes, composeRoutes)
	for _, r := range o.Routes {
		if pw, _ := r.User.Password(); r.User.Username() != embedded.RouteUser || pw != d.secrets.RoutePassword {
			t.Errorf("route %s does not carry the route user and the generated password", r.Redacted())
		}
	}
	// The routes authenticate: a node admits a route only from a peer presenting
	// roster-route and the generated password, which is the one `roster serve
	// --cluster-listen` derives from the same system password.
	check("cluster user", o.Cluster.Username, embedded.RouteUser)
	if o.Cluster.Password != d.secrets.RoutePassword || d.secrets.RoutePassword != embedded.RoutePassword(d.secrets.SystemPassword) {
		t.Error("cluster password is not the generated route password, derived from the system password")
	}
	if escaped := url.UserPassword(embedded.RouteUser, d.routePassword).String(); escaped != embedded.RouteUser+":"+d.routePassword {
		t.Errorf("the route password needs escaping in a URL: %s", escaped)
	}
	check("system_account", o.SystemAccount, embedded.SystemAccount)
	check("no_auth_user", o.NoAuthUser, "")
	if o.LameDuckDuration <= 0 || o.LameDuckGracePeriod <= 0 {
		t.Errorf("lame duck duration %v, grace %v: want both set", o.LameDuckDuration, o.LameDuckGracePeriod)
	}
	check("pid_file", o.PidFile, "/var/run/nats/nats.pid")

	if o.AuthCallout == nil {
		t.Fatal("no auth_callout")
	}
	check("callout issuer", o.AuthCallout.Issuer, d.secrets.CalloutIssuer)
	check("callout account", o.AuthCallout.Account, embedded.ServicesAccount)
	check("callout auth_users", o.AuthCallout.AuthUsers, []string{embedded.ServiceUser, embedded.SystemUser, d.secrets.AdminNkey})

	// Users: the service and system users with bcrypt hashes of the generated
	// passwords, the operators' nkey in SYS, and nobody in CLIENTS.
	users := map[string]*server.User{}
	for _, u := range o.Users {
		users[u.Username] = u
	}
	check("users", len(users), 2)
	for name, want := range map[string]struct{ account, password string }{
		embedded.ServiceUser: {embedded.ServicesAccount, d.secrets.ServicePassword},
		embedded.SystemUser:  {embedded.SystemAccount, d.secrets.SystemPassword},
	} {
		u := users[name]
		if u == nil {
			t.Errorf("no user %s", name)
			continue
		}
		check(name+" account", u.Account.Name, want.account)
		if !strings.HasPrefix(u.Password, "$2a$") || bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(want.password)) != nil {
			t.Errorf("%s: password is not the bcrypt hash of the generated one", name)
		}
	}
	if len(o.Nkeys) != 1 || o.Nkeys[0].Nkey != d.secrets.AdminNkey || o.Nkeys[0].Account.Name != embedded.SystemAccount {
		t.Errorf("nkey users = %+v, want the operators' nkey in SYS", o.Nkeys)
	}

	// The nkey user is what makes a plain nats-server send the nonce a client signs to
	// prove its connection key (the embedded server sets AlwaysEnableNonce in code).
	if info := serverInfo(t, standalone(t, o).Addr().String()); info["nonce"] == nil {
		t.Errorf("no nonce in INFO: %v", info)
	}
	without := o.Clone()
	without.Nkeys = nil
	if info := serverInfo(t, standalone(t, without).Addr().String()); info["nonce"] != nil {
		t.Errorf("a nonce without nkey users: the operators' nkey may no longer be needed for it")
	}
}

// TestNATSConfigMatchesEmbeddedLayout starts one server from nats.conf and one from
// pkg/embedded's ConfigText (what `roster serve`, and so `--services none`, runs) and
// compares their accounts as the servers report them: JetStream, exports with their
// response types, imports with their sharing.
func TestNATSConfigMatchesEmbeddedLayout(t *testing.T) {
	d := newDeployment(t)
	deployed := d.options(t, "nats-0", routeURLs(d.routePassword, composeRouteHosts...))

	// As `roster serve` configures it: route URLs without credentials (it adds them)
	// and the route password derived from the system password.
	text, err := embedded.ConfigText(embedded.Config{
		Name: "nats-0", Listen: "0.0.0.0:4222", DataDir: "/data",
		ServicePassword: d.secrets.ServicePassword, SystemPassword: d.secrets.SystemPassword,
		CalloutIssuer: d.secrets.CalloutIssuer,
		Cluster: embedded.Cluster{Name: "roster", Listen: "0.0.0.0:6222", Routes: plainRouteURLs(composeRouteHosts...),
			Password: embedded.RoutePassword(d.secrets.SystemPassword)},
	})
	if err != nil {
		t.Fatal(err)
	}
	embeddedOpts := &server.Options{}
	if err := embeddedOpts.ProcessConfigString(text); err != nil {
		t.Fatal(err)
	}

	if deployed.SyncAlways != embeddedOpts.SyncAlways || deployed.JetStream != embeddedOpts.JetStream ||
		deployed.MaxPayload != embeddedOpts.MaxPayload || deployed.SystemAccount != embeddedOpts.SystemAccount ||
		deployed.Cluster.Name != embeddedOpts.Cluster.Name {
		t.Errorf("server settings differ from the embedded server's")
	}
	// The same route credentials, asked for and presented: nodes from the binary and
	// from nats.conf can form one cluster.
	if deployed.Cluster.Username != embeddedOpts.Cluster.Username || deployed.Cluster.Password != embeddedOpts.Cluster.Password {
		t.Errorf("cluster authorization %q/%q, embedded %q/%q", deployed.Cluster.Username, deployed.Cluster.Password,
			embeddedOpts.Cluster.Username, embeddedOpts.Cluster.Password)
	}
	routeStrings := func(o *server.Options) []string {
		var out []string
		for _, r := range o.Routes {
			out = append(out, r.String())
		}
		return out
	}
	if a, b := routeStrings(deployed), routeStrings(embeddedOpts); !slices.Equal(a, b) {
		t.Errorf("routes %v, embedded %v", a, b)
	}
	if deployed.AuthCallout.Account != embeddedOpts.AuthCallout.Account || deployed.AuthCallout.Issuer != embeddedOpts.AuthCallout.Issuer {
		t.Errorf("auth callout %+v, embedded %+v", deployed.AuthCallout, embeddedOpts.AuthCallout)
	}
	for _, u := range embeddedOpts.AuthCallout.AuthUsers {
		if !slices.Contains(deployed.AuthCallout.AuthUsers, u) {
			t.Errorf("auth_users lacks %s", u)
		}
	}
	accountsOf := func(o *server.Options) map[string]string {
		m := map[string]string{}
		for _, u := range o.Users {
			m[u.Username] = u.Account.Name
		}
		return m
	}
	if a, b := accountsOf(deployed), accountsOf(embeddedOpts); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("users' accounts %v, embedded %v", a, b)
	}

	got := accountLayout(t, standalone(t, deployed))
	want := accountLayout(t, standalone(t, embeddedOpts))
	if len(want) != 3 {
		t.Fatalf("embedded layout has %d accounts, want 3: %v", len(want), want)
	}
	for _, acc := range []string{embedded.SystemAccount, embedded.ServicesAccount, embedded.ClientsAccount} {
		if got[acc] != want[acc] {
			t.Errorf("account %s:\n nats.conf: %s\n embedded:  %s", acc, got[acc], want[acc])
		}
	}
	// The layout docs/architecture.md describes, spelled out, so that a change to
	// both at once is noticed too.
	for _, subject := range embedded.ServiceExports {
		if !strings.Contains(got[embedded.ServicesAccount], "export service "+subject+";") {
			t.Errorf("SERVICES does not export %s", subject)
		}
		if !strings.Contains(got[embedded.ClientsAccount], "import service "+subject+" from SERVICES share") {
			t.Errorf("CLIENTS does not import %s with share", subject)
		}
	}
	for acc, want := range map[string]string{
		embedded.ServicesAccount: "export service $SRV.> streamed",
		embedded.ClientsAccount:  "import service $SRV.> from SERVICES;",
	} {
		if !strings.Contains(got[acc], want) {
			t.Errorf("%s lacks %q", acc, want)
		}
	}
}

// standalone starts a server from o without its cluster and on free ports: the
// accounts do not depend on either.
func standalone(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o = o.Clone()
	o.Host, o.Port, o.HTTPPort = "127.0.0.1", -1, 0
	o.Cluster = server.ClusterOpts{}
	o.Routes = nil
	o.StoreDir = t.TempDir()
	o.PidFile = ""
	o.NoSigs, o.NoLog = true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

// accountLayout describes each configured account's JetStream, exports and imports
// (sorted, one string per account) from the server's own account report.
func accountLayout(t *testing.T, s *server.Server) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{embedded.SystemAccount, embedded.ServicesAccount, embedded.ClientsAccount} {
		az, err := s.Accountz(&server.AccountzOptions{Account: name})
		if err != nil || az.Account == nil {
			t.Fatalf("accountz %s: %v", name, err)
		}
		a := az.Account
		var lines []string
		for _, e := range a.Exports {
			l := fmt.Sprintf("export %s %s", e.Type, e.Subject)
			if e.ResponseType != "" && e.ResponseType != "Singleton" {
				l += " " + strings.ToLower(string(e.ResponseType))
			}
			lines = append(lines, l)
		}
		for _, i := range a.Imports {
			if i.Account == "" || i.Account == name {
				continue
			}
			l := fmt.Sprintf("import %s %s from %s", i.Type, i.Subject, i.Account)
			if i.LocalSubject != "" && string(i.LocalSubject) != string(i.Subject) {
				l += " as " + string(i.LocalSubject)
			}
			if i.Share {
				l += " share"
			}
			if i.Invalid {
				l += " INVALID"
			}
			lines = append(lines, l)
		}
		sort.Strings(lines)
		out[name] = fmt.Sprintf("jetstream=%v; %s", a.JetStream, strings.Join(lines, "; "))
	}
	return out
}

// TestClusterFromConfig runs the deployment in miniature: three nats-servers from
// nats.conf (on local ports instead of nats-N:4222) whose routes carry the generated
// route password, and all four services joining them as separate connections with
// the generated credentials and R3 buckets, as the compose file and the Kubernetes
// manifests do. Servers without the route password get no route; a node from the
// roster binary given the system password joins. A client then connects with a
// connection key and the administrator's password and opens a session.
func TestClusterFromConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster")
	}
	d := newDeployment(t)
	const nodes = 3
	clusterPorts := freePorts(t, nodes)
	var routeHosts []string
	for _, p := range clusterPorts {
		routeHosts = append(routeHosts, fmt.Sprintf("127.0.0.1:%d", p))
	}
	routes := routeURLs(d.routePassword, routeHosts...)
	servers := make([]*server.Server, nodes)
	var urls []string
	for i := range nodes {
		name := fmt.Sprintf("nats-%d", i)
		o := d.options(t, name, routes)
		o.Host, o.Port, o.HTTPPort = "127.0.0.1", -1, 0
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", clusterPorts[i]
		o.StoreDir = t.TempDir()
		o.PidFile = filepath.Join(t.TempDir(), "nats.pid")
		o.NoSigs, o.NoLog = true, true
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready", name)
		}
		servers[i] = s
		urls = append(urls, s.ClientURL())
	}
	waitFor(t, 30*time.Second, "a JetStream meta leader", func() bool {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})

	// The server sends a nonce: without it no client could prove a connection key.
	if info := serverInfo(t, servers[1].Addr().String()); info["nonce"] == nil || info["auth_required"] != true {
		t.Fatalf("INFO = %v: want a nonce and auth_required", info)
	}
	checkRoutesAdmitOnlyTheCluster(t, d, servers, routeHosts)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := roster.Start(ctx, roster.Config{
		Services:    roster.ServiceNames,
		NATSURL:     strings.Join(urls, ","),
		NATSOptions: []nats.Option{nats.UserInfo(embedded.ServiceUser, d.secrets.ServicePassword)},
		Auth: roster.AuthConfig{
			CalloutSeedFile: filepath.Join(d.dir, gensecrets.CalloutSeedFile),
			PolicyFile:      "roster/policy.yaml",
			UsersFile:       filepath.Join(d.dir, gensecrets.UsersFile),
		},
		Replicas:     3,
		DrainTimeout: 2 * time.Second,
	}, log)
	if err != nil {
		t.Fatalf("services joining the cluster: %v", err)
	}
	defer func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()

	// The probe paths the manifests use, served by the process's handler.
	probes := httptest.NewServer(p.HealthHandler())
	defer probes.Close()
	waitFor(t, 20*time.Second, "/readyz to answer 200", func() bool { return httpStatus(t, probes.URL+"/readyz") == http.StatusOK })
	if code := httpStatus(t, probes.URL+"/livez"); code != http.StatusOK {
		t.Errorf("/livez: %d", code)
	}

	// The buckets the services created with --replicas 3 are replicated 3 times.
	svc, err := nats.Connect(urls[0], nats.UserInfo(embedded.ServiceUser, d.secrets.ServicePassword))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	js, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	for _, bucket := range []string{"roster_policy", "roster_locks"} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Errorf("bucket %s: %v", bucket, err)
			continue
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 3 {
			t.Errorf("bucket %s has %d replicas, want 3", bucket, r)
		}
	}
	// Every stream and bucket is R3.
	for name := range js.StreamNames(ctx).Name() {
		info, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := info.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s: %d replicas, want 3", name, r)
		}
	}

	// A client with a connection key and the administrator's credentials, on another
	// node than the auth service's connection may be on.
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := kp.PublicKey()
	nc, err := nats.Connect(urls[2],
		nats.Nkey(key, kp.Sign),
		nats.CustomInboxPrefix(wire.ConnectionInbox(key)),
		nats.UserInfo("admin", d.secrets.AdminPassword))
	if err != nil {
		t.Fatalf("client connection: %v", err)
	}
	defer nc.Close()
	var opened wire.SessionOpenResponse
	creds := &wire.Credentials{Type: wire.CredentialsPassword, Username: "admin", Password: d.secrets.AdminPassword}
	if err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{Credentials: creds}, &opened); err != nil {
		t.Fatalf("session open: %v", err)
	}
	if opened.Session == nil || opened.Session.Principal != "admin" || opened.Session.Fixed["$ServerName"] != "nats-2" {
		t.Errorf("opened %+v: want principal admin on nats-2", opened.Session)
	}

	// The deployed policy admits nobody without credentials.
	anon, err := nats.Connect(urls[0], nats.Timeout(3*time.Second))
	if err == nil {
		anon.Close()
		t.Error("a connection without credentials was admitted")
	}

	checkRosterServeNodeJoins(t, d, routeHosts)
}

// checkRoutesAdmitOnlyTheCluster: the route port of a node from nats.conf asks for
// credentials, and a nats-server presenting none, or another route password, gets
// no route.
func checkRoutesAdmitOnlyTheCluster(t *testing.T, d *deployment, servers []*server.Server, routeHosts []string) {
	t.Helper()
	if info := serverInfo(t, servers[0].ClusterAddr().String()); info["auth_required"] != true {
		t.Errorf("route port INFO = %v: want auth_required", info)
	}

	// stranger starts a nats-server from o that routes to the cluster, and stops it
	// once it has been refused.
	stranger := func(what string, o *server.Options) {
		t.Helper()
		o.Host, o.Port, o.HTTPPort = "127.0.0.1", -1, 0
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", -1
		if o.Cluster.Username == "" {
			// Its own route port admits no one: a route it gets is one it asked
			// for. Without credentials there, a node of another cluster on this
			// machine (another test binary's) whose route URL named the port this
			// one happened to take routed into it (a stranger with 3 routes, the
			// pool of one node, once in about a dozen runs under load). Routes it
			// asks for present only the credentials of their URLs.
			o.Cluster.Username, o.Cluster.Password = "stranger", nuid.Next()
		}
		o.JetStream = false // not needed to ask for a route
		o.StoreDir, o.PidFile = "", ""
		o.NoSigs, o.NoLog = true, true
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		log := &logRecorder{}
		s.SetLogger(log, false, false)
		s.Start()
		defer func() { s.Shutdown(); s.WaitForShutdown() }()
		waitFor(t, 10*time.Second, "refusal of "+what, func() bool { return log.contains("Authorization Violation") })
		if n := s.NumRoutes(); n != 0 {
			rz, _ := s.Routez(nil)
			var peers []string
			if rz != nil {
				for _, r := range rz.Routes {
					peers = append(peers, fmt.Sprintf("%s (%s:%d)", r.RemoteName, r.IP, r.Port))
				}
			}
			t.Errorf("%s has %d routes, want none: %v", what, n, peers)
		}
	}
	stranger("a nats-server without credentials", &server.Options{
		Cluster: server.ClusterOpts{Name: "roster"},
		Routes:  server.RoutesFromStr(strings.Join(plainRouteURLs(routeHosts...), ",")),
	})
	const wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	stranger("a node from nats.conf with another route password",
		d.optionsWithRoutePassword(t, "stranger", routeURLs(wrong, routeHosts...), wrong))
}

// checkRosterServeNodeJoins: a `roster serve --cluster-listen` node given the
// deployment's system password joins the nats.conf nodes, as it derives the route
// password gensecrets wrote from it.
func checkRosterServeNodeJoins(t *testing.T, d *deployment, routeHosts []string) {
	t.Helper()
	binary, err := embedded.Start(embedded.Config{
		Name: "binary", Listen: "127.0.0.1:-1", DataDir: t.TempDir(),
		ServicePassword: d.secrets.ServicePassword, SystemPassword: d.secrets.SystemPassword,
		CalloutIssuer: d.secrets.CalloutIssuer,
		Cluster:       embedded.Cluster{Listen: "127.0.0.1:0", Routes: plainRouteURLs(routeHosts...)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer binary.Stop()
	waitFor(t, 10*time.Second, "route between the roster serve node and the nats.conf nodes", func() bool {
		return binary.NumRoutes() > 0
	})
}

// logRecorder is a nats-server logger that keeps what it is given.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) logf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *logRecorder) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

func (l *logRecorder) Noticef(format string, v ...any) { l.logf(format, v...) }
func (l *logRecorder) Warnf(format string, v ...any)   { l.logf(format, v...) }
func (l *logRecorder) Fatalf(format string, v ...any)  { l.logf(format, v...) }
func (l *logRecorder) Errorf(format string, v ...any)  { l.logf(format, v...) }
func (l *logRecorder) Debugf(format string, v ...any)  { l.logf(format, v...) }
func (l *logRecorder) Tracef(format string, v ...any)  { l.logf(format, v...) }

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// serverInfo reads the INFO a NATS server greets a new connection with.
func serverInfo(t *testing.T, addr string) map[string]any {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info); err != nil {
		t.Fatalf("INFO %q: %v", line, err)
	}
	return info
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGenerateRefusesToOverwrite: replacing the secrets of a running deployment locks
// every service out until all nodes restart, so it takes -force.
func TestGenerateRefusesToOverwrite(t *testing.T) {
	d := newDeployment(t)
	opts := gensecrets.Options{NATSCost: bcrypt.MinCost, UserCost: bcrypt.MinCost}
	if _, err := gensecrets.Generate(d.dir, opts); err == nil {
		t.Fatal("overwrote existing secrets")
	}
	opts.Force = true
	s, err := gensecrets.Generate(d.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s.ServicePassword == d.secrets.ServicePassword || s.CalloutIssuer == d.secrets.CalloutIssuer {
		t.Error("-force did not generate new secrets")
	}
	seed, err := os.ReadFile(filepath.Join(d.dir, gensecrets.CalloutSeedFile))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != s.CalloutIssuer {
		t.Errorf("callout.nk is not the issuer's seed")
	}
}
