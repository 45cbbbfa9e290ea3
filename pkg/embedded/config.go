package embedded

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Account and user names of the layout.
const (
	ServicesAccount = "SERVICES"
	ClientsAccount  = "CLIENTS"
	SystemAccount   = "SYS"

	// ServiceUser is the user the Roster services connect as.
	ServiceUser = "roster-service"
	// SystemUser is the system-account user.
	SystemUser = "roster-system"
	// AnonymousUser is the CLIENTS user a connection without credentials becomes in the
	// development configuration.
	AnonymousUser = "anonymous"
)

// ServiceExports lists the request subjects the SERVICES account exports to clients.
var ServiceExports = []string{
	"roster.v1.auth.>",
	"roster.v1.session.>",
	"roster.v1.lock.>",
	"roster.v1.msg.>",
}

// DeliverSubjects is what the CLIENTS account exports to the services for deliveries.
const DeliverSubjects = "roster.v1.deliver.>"

// DisconnectAdvisories is the server's advisory subject for closed client connections
// of the CLIENTS account. SYS exports it and SERVICES imports it, so the registry can
// move the sessions of a lost connection to RECOVERING without system credentials.
const DisconnectAdvisories = "$SYS.ACCOUNT." + ClientsAccount + ".DISCONNECT"

// ClientConnections is the server's request subject listing the open connections of
// the CLIENTS account. SYS exports it to SERVICES alone, so the registry can tell
// which bound connections are gone when it missed their advisories (it was not
// running, or the server that held them stopped).
const ClientConnections = "$SYS.REQ.ACCOUNT." + ClientsAccount + ".CONNZ"

// KickConnections is the servers' request subject that closes a connection by id
// ($SYS.REQ.SERVER.<server id>.KICK). SYS exports it to SERVICES alone, so the auth
// service can end the connections admitted with grants a policy change withdrew:
// NATS fixes a connection's permissions when it is admitted, and they would last as
// long as the connection.
const KickConnections = "$SYS.REQ.SERVER.*.KICK"

// Config configures an embedded server.
type Config struct {
	// Name is the server name ($ServerName of sessions connected here).
	Name string
	// Listen is the client address, host:port; port 0 or -1 picks a free one.
	Listen string
	// WebSocket, when not empty, is the host:port of a WebSocket listener (with TLS
	// when TLS is set, plain otherwise); port 0 or -1 picks a free one.
	WebSocket string
	// Monitor, when not empty, is the host:port of the NATS HTTP monitoring endpoint;
	// port 0 or -1 picks a free one.
	Monitor string
	// DataDir holds JetStream's storage (under DataDir/jetstream).
	DataDir string
	// SyncInterval is how often JetStream fsyncs. Zero means on every write, the
	// default: anything else can lose acknowledged writes when the machine crashes.
	SyncInterval time.Duration
	// ServicePassword and SystemPassword are the passwords of the service and system
	// users. Start generates random ones when empty.
	ServicePassword string
	SystemPassword  string
	// AllowAnonymous lets connections without credentials into CLIENTS. It is
	// ignored when CalloutIssuer is set: the auth service then decides.
	AllowAnonymous bool
	// CalloutIssuer, when set, turns on NATS's auth callout: every connection except
	// the service and system users (and ClientUsers) is authenticated by the auth
	// service, which answers $SYS.REQ.USER.AUTH in the SERVICES account and signs its
	// answers with the account key whose public key (A…) this is. A connection is
	// refused while no auth service answers.
	CalloutIssuer string
	// Cluster, when its Listen is set, makes the server a node of a NATS cluster with
	// clustered JetStream. Every node needs a unique Name, the same account layout and
	// the same service and system passwords.
	Cluster Cluster
	// ClientUsers are CLIENTS users that bypass the auth callout, with every
	// permission in CLIENTS: for trusted bridges, and for tests that observe the
	// clients account. Leave empty otherwise.
	ClientUsers []UserPassword
	// TLS, when its CertFile is set, makes the client and WebSocket listeners require
	// TLS (wss://). Routes and the monitoring endpoint stay plain.
	TLS TLS
}

// TLS configures TLS on the client listener. The server's own in-process
// connections (the services of its process) need none.
type TLS struct {
	// CertFile and KeyFile are the server's certificate chain and private key (PEM).
	CertFile, KeyFile string
	// ClientCAFile, when set, makes both listeners require client certificates signed
	// by one of its CAs (PEM): mutual TLS. Connections still authenticate as users.
	ClientCAFile string
}

// Cluster configures clustering.
type Cluster struct {
	// Name is the cluster's name (default "roster").
	Name string
	// Listen is the host:port of the route listener; port 0 or -1 picks a free one.
	Listen string
	// Routes are the route URLs of the other nodes (nats://host:port). A URL
	// without credentials is given RouteUser and Password.
	Routes []string
	// Password authenticates the routes: a node admits a route only from a peer
	// that presents RouteUser and it, and presents them to its peers. Every node
	// needs the same. Start derives it from SystemPassword when empty
	// (RoutePassword), so that nodes sharing their system password, as they must,
	// share it too.
	Password string
}

// RouteUser is the user the nodes of a cluster authenticate their routes as.
const RouteUser = "roster-route"

// RoutePassword is the route password of the nodes whose system password is
// systemPassword: an HMAC of it, so that a route URL, which carries the password
// and which nats-server may show, does not reveal the system user's. Plain text in
// the configuration, not a bcrypt hash as the users' are: a node presents it to the
// peers it learns of from the others (gossiped routes), as the configuration holds it.
//
// It starts with a letter: nats.conf reads it from the environment
// ($NATS_ROUTE_PASSWORD), and nats-server parses a variable's value as it would
// parse the configuration, so hex that began with digits could be read as a number
// ("123456e" is a size in exabytes), and the routes would fail on that one password.
func RoutePassword(systemPassword string) string {
	m := hmac.New(sha256.New, []byte(systemPassword))
	m.Write([]byte("roster route password"))
	return "route" + hex.EncodeToString(m.Sum(nil))
}

// routeURL returns u with RouteUser and password as its credentials unless it
// has its own.
func routeURL(u, password string) (string, error) {
	parsed, err := url.Parse(u)
	if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
		// Not the URL itself: it may carry a password.
		return "", fmt.Errorf("a route URL does not parse: %w", uerr.Err)
	} else if err != nil {
		return "", err
	}
	if parsed.User == nil {
		parsed.User = url.UserPassword(RouteUser, password)
	}
	return parsed.String(), nil
}

// UserPassword is a configured user.
type UserPassword struct {
	User, Password string
}

// anonymous reports whether connections without credentials become AnonymousUser.
func (cfg Config) anonymous() bool { return cfg.AllowAnonymous && cfg.CalloutIssuer == "" }

// ConfigText renders cfg as nats-server configuration.
func ConfigText(cfg Config) (string, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("listen address: %w", err)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	if cfg.Name != "" {
		w("server_name: %s", strconv.Quote(cfg.Name))
	}
	w("host: %s", strconv.Quote(host))
	w("port: %d", port)
	w("max_payload: 1MB")
	if t := cfg.TLS; t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return "", errors.New("TLS needs both a certificate and a key file")
		}
		w("tls {\n  cert_file: %s\n  key_file: %s", strconv.Quote(t.CertFile), strconv.Quote(t.KeyFile))
		if t.ClientCAFile != "" {
			w("  ca_file: %s\n  verify: true", strconv.Quote(t.ClientCAFile))
		}
		w("}")
	}
	if cfg.Monitor != "" {
		w("http: %s", strconv.Quote(anyFreePort(cfg.Monitor)))
	}
	if cfg.WebSocket != "" {
		w("websocket {\n  listen: %s", strconv.Quote(anyFreePort(cfg.WebSocket)))
		if cfg.TLS.CertFile != "" {
			w("  tls {\n    cert_file: %s\n    key_file: %s", strconv.Quote(cfg.TLS.CertFile), strconv.Quote(cfg.TLS.KeyFile))
			if cfg.TLS.ClientCAFile != "" {
				w("    ca_file: %s\n    verify: true", strconv.Quote(cfg.TLS.ClientCAFile))
			}
			w("  }")
		} else {
			w("  no_tls: true")
		}
		if cfg.anonymous() {
			w("  no_auth_user: %q", AnonymousUser)
		}
		w("}")
	}
	sync := "always"
	if cfg.SyncInterval > 0 {
		sync = strconv.Quote(cfg.SyncInterval.String())
	}
	w("jetstream {\n  store_dir: %s\n  sync_interval: %s\n}", strconv.Quote(cfg.DataDir+"/jetstream"), sync)
	if cfg.Cluster.Listen != "" {
		name := cfg.Cluster.Name
		if name == "" {
			name = "roster"
		}
		routes := make([]string, len(cfg.Cluster.Routes))
		for i, r := range cfg.Cluster.Routes {
			if cfg.Cluster.Password != "" {
				if r, err = routeURL(r, cfg.Cluster.Password); err != nil {
					return "", err
				}
			}
			routes[i] = strconv.Quote(r)
		}
		w("cluster {\n  name: %s\n  listen: %s", strconv.Quote(name), strconv.Quote(anyFreePort(cfg.Cluster.Listen)))
		if cfg.Cluster.Password != "" {
			w("  authorization { user: %q, password: %q }", RouteUser, cfg.Cluster.Password)
		}
		w("  routes: [ %s ]\n}", strings.Join(routes, ", "))
	}
	w("system_account: %s", SystemAccount)
	w("accounts {")
	w("  %s {\n    users: [ { user: %q, password: %q } ]", SystemAccount, SystemUser, cfg.SystemPassword)
	w("    exports: [")
	w("      { stream: %q }", DisconnectAdvisories)
	w("      { service: %q, response_type: stream, accounts: [ %s ] }", ClientConnections, ServicesAccount)
	w("      { service: %q, accounts: [ %s ] }", KickConnections, ServicesAccount)
	w("    ]\n  }")
	w("  %s {", ServicesAccount)
	w("    jetstream: enabled")
	w("    users: [ { user: %q, password: %q } ]", ServiceUser, cfg.ServicePassword)
	w("    exports: [")
	for _, s := range ServiceExports {
		w("      { service: %q }", s)
	}
	w("      { service: \"$SRV.>\", response_type: stream }")
	w("    ]")
	w("    imports: [")
	w("      { service: { account: %s, subject: %q } }", ClientsAccount, DeliverSubjects)
	w("      { stream: { account: %s, subject: %q } }", SystemAccount, DisconnectAdvisories)
	w("      { service: { account: %s, subject: %q } }", SystemAccount, ClientConnections)
	w("      { service: { account: %s, subject: %q } }", SystemAccount, KickConnections)
	w("    ]")
	w("  }")
	w("  %s {", ClientsAccount)
	var clientUsers []string
	if cfg.anonymous() {
		clientUsers = append(clientUsers, fmt.Sprintf("{ user: %q }", AnonymousUser))
	}
	for _, u := range cfg.ClientUsers {
		clientUsers = append(clientUsers, fmt.Sprintf("{ user: %q, password: %q }", u.User, u.Password))
	}
	if len(clientUsers) > 0 {
		w("    users: [ %s ]", strings.Join(clientUsers, ", "))
	}
	w("    exports: [ { service: %q } ]", DeliverSubjects)
	w("    imports: [")
	for _, s := range ServiceExports {
		w("      { service: { account: %s, subject: %q }, share: true }", ServicesAccount, s)
	}
	w("      { service: { account: %s, subject: \"$SRV.>\" } }", ServicesAccount)
	w("    ]")
	w("  }")
	w("}")
	if cfg.anonymous() {
		w("no_auth_user: %q", AnonymousUser)
	}
	if cfg.CalloutIssuer != "" {
		bypass := []string{strconv.Quote(ServiceUser), strconv.Quote(SystemUser)}
		for _, u := range cfg.ClientUsers {
			bypass = append(bypass, strconv.Quote(u.User))
		}
		w("authorization {")
		w("  auth_callout {")
		w("    issuer: %q", cfg.CalloutIssuer)
		w("    account: %s", ServicesAccount)
		w("    auth_users: [ %s ]", strings.Join(bypass, ", "))
		w("  }")
		w("}")
	}
	return b.String(), nil
}

func splitHostPort(addr string) (string, int, error) {
	if addr == "" {
		return "127.0.0.1", -1, nil
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		port = -1 // nats-server reads 0 as its default port; Go reads it as any free one
	}
	return host, port, nil
}

// anyFreePort rewrites port 0 of a host:port to nats-server's -1, any free port: to
// nats-server a monitoring, WebSocket or route port 0 means no listener at all.
func anyFreePort(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		return net.JoinHostPort(host, "-1")
	}
	return addr
}
