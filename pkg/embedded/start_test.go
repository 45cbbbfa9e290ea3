package embedded_test

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// An address another process holds stops Start with the server's own reason, not a
// wait for readiness that cannot come.
func TestStartReportsAnAddressInUse(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*embedded.Config, string)
	}{
		{"client port", func(c *embedded.Config, addr string) { c.Listen = addr }},
		{"monitoring port", func(c *embedded.Config, addr string) { c.Monitor = addr }},
		{"route port", func(c *embedded.Config, addr string) {
			c.Cluster = embedded.Cluster{Name: "c", Listen: addr, Routes: []string{"nats://" + addr}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			cfg := embedded.Config{Name: "in-use", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), AllowAnonymous: true}
			tc.set(&cfg, held.Addr().String())
			s, err := embedded.Start(cfg, nil)
			if err == nil {
				s.Stop()
				t.Fatalf("Start on %s held by another listener succeeded", held.Addr())
			}
			if !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("got error %q, want the reason (address already in use)", err)
			}
		})
	}
}

// The server is given bcrypt hashes of the passwords, so it has no plaintext password
// to warn about, and the passwords still admit their users.
func TestStartGivesTheServerHashedPasswords(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := embedded.Start(embedded.Config{
		Name: "hashed", Listen: "127.0.0.1:-1", DataDir: t.TempDir(),
		ServicePassword: "service-pw", ClientUsers: []embedded.UserPassword{{User: "bridge", Password: "bridge-pw"}},
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	for _, c := range []struct {
		name string
		conn func() (*nats.Conn, error)
	}{
		{"service", func() (*nats.Conn, error) { return s.ConnectService() }},
		{"system", func() (*nats.Conn, error) { return s.ConnectSystem() }},
		{"client user", func() (*nats.Conn, error) { return nats.Connect(s.ClientURL(), nats.UserInfo("bridge", "bridge-pw")) }},
	} {
		nc, err := c.conn()
		if err != nil {
			t.Fatalf("%s connection: %v", c.name, err)
		}
		nc.Close()
	}
	if _, err := nats.Connect(s.ClientURL(), nats.UserInfo("bridge", "wrong")); err == nil {
		t.Fatal("a wrong password was admitted")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logged.String(), "Plaintext passwords") {
		t.Fatalf("the server was given plaintext passwords:\n%s", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Port 0 is any free port, as in Go, for every listener; to nats-server it means the
// default client port (4222), or no monitoring or WebSocket listener at all.
func TestPortZeroIsAnyFreePort(t *testing.T) {
	s, err := embedded.Start(embedded.Config{
		Name: "zero", Listen: "127.0.0.1:0", Monitor: "127.0.0.1:0", WebSocket: "127.0.0.1:0",
		DataDir: t.TempDir(), AllowAnonymous: true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if addr, ok := s.Addr().(*net.TCPAddr); !ok || addr.Port == 0 || addr.Port == 4222 {
		t.Errorf("client listener on %v, want a free port", s.Addr())
	}
	if m := s.MonitorAddr(); m == nil || m.Port == 0 {
		t.Errorf("monitoring listener %v, want one on a free port", m)
	}
	if ws := s.WebsocketURL(); ws == "" || strings.HasSuffix(ws, ":0") {
		t.Errorf("WebSocket listener %q, want one on a free port", ws)
	}
}

// A route listener on port 0 is on any free port too: to nats-server a cluster port
// 0 means no clustering at all, and the node would run alone with a JetStream of its
// own while its --routes connect to nothing.
func TestClusterPortZeroIsAnyFreePort(t *testing.T) {
	s, err := embedded.Start(embedded.Config{
		Name: "cluster-zero", Listen: "127.0.0.1:0", DataDir: t.TempDir(), AllowAnonymous: true,
		// A route to a peer not started yet, as a node of a cluster coming up has.
		Cluster: embedded.Cluster{Listen: "127.0.0.1:0", Routes: []string{"nats://127.0.0.1:1"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if addr := s.ClusterAddr(); addr == nil || addr.Port == 0 {
		t.Errorf("route listener %v, want one on a free port", addr)
	}
}

// With TLS the client listener admits TLS connections only, and with a client CA only
// those presenting a certificate it signed; the in-process service connections need
// neither.
func TestTLSListener(t *testing.T) {
	files := natstest.WriteTLSFiles(t)
	for _, mutual := range []bool{false, true} {
		t.Run(map[bool]string{false: "server certificate", true: "mutual"}[mutual], func(t *testing.T) {
			cfg := embedded.Config{
				Name: "tls", Listen: "127.0.0.1:-1", WebSocket: "127.0.0.1:-1", DataDir: t.TempDir(), AllowAnonymous: true,
				TLS: embedded.TLS{CertFile: files.ServerCert, KeyFile: files.ServerKey},
			}
			if mutual {
				cfg.TLS.ClientCAFile = files.CA
			}
			s, err := embedded.Start(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			svc, err := s.ConnectService()
			if err != nil {
				t.Fatalf("in-process service connection: %v", err)
			}
			svc.Close()

			if !strings.HasPrefix(s.ClientURL(), "tls://") {
				t.Errorf("client URL %s, want a tls:// one", s.ClientURL())
			}
			url := s.Addr().String()
			if _, err := nats.Connect("nats://"+url, nats.MaxReconnects(0)); err == nil {
				t.Error("a client without TLS was admitted")
			}
			if _, err := nats.Connect("tls://"+url, nats.MaxReconnects(0)); err == nil {
				t.Error("a client that does not trust the test CA was admitted")
			}
			nc, err := nats.Connect("tls://"+url, nats.RootCAs(files.CA), nats.MaxReconnects(0))
			if mutual {
				if err == nil {
					nc.Close()
					t.Fatal("a client without a certificate was admitted")
				}
				nc, err = nats.Connect("tls://"+url, nats.RootCAs(files.CA), nats.ClientCert(files.ClientCert, files.ClientKey), nats.MaxReconnects(0))
			}
			if err != nil {
				t.Fatalf("TLS client: %v", err)
			}
			defer nc.Close()
			if !nc.TLSRequired() {
				t.Error("the server does not say TLS is required")
			}

			ws, ok := strings.CutPrefix(s.WebsocketURL(), "wss://")
			if !ok {
				t.Fatalf("WebSocket URL %s, want a wss:// one", s.WebsocketURL())
			}
			if _, err := nats.Connect("ws://"+ws, nats.MaxReconnects(0)); err == nil {
				t.Error("a WebSocket client without TLS was admitted")
			}
			wsOpts := []nats.Option{nats.RootCAs(files.CA), nats.MaxReconnects(0)}
			if mutual {
				if _, err := nats.Connect("wss://"+ws, wsOpts...); err == nil {
					t.Error("a WebSocket client without a certificate was admitted")
				}
				wsOpts = append(wsOpts, nats.ClientCert(files.ClientCert, files.ClientKey))
			}
			wnc, err := nats.Connect("wss://"+ws, wsOpts...)
			if err != nil {
				t.Fatalf("TLS WebSocket client: %v", err)
			}
			wnc.Close()
		})
	}
}

func TestTLSNeedsCertificateAndKey(t *testing.T) {
	_, err := embedded.Start(embedded.Config{
		Name: "tls", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), TLS: embedded.TLS{CertFile: "cert.pem"},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("got %v, want an error asking for the key file", err)
	}
}

// Two servers on one data dir would each run JetStream over the same files, each
// with its own view of them: a second roster serve given the same --data-dir on
// another port started, and its writes and the first's interleaved in one store.
// The second Start is refused, and once the first has stopped the dir is free again.
func TestDataDirServesOneServerAtATime(t *testing.T) {
	dir := t.TempDir()
	cfg := embedded.Config{Name: "first", Listen: "127.0.0.1:-1", DataDir: dir, AllowAnonymous: true}
	first, err := embedded.Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Name = "second"
	second, err := embedded.Start(cfg, nil)
	if err == nil {
		second.Stop()
		first.Stop()
		t.Fatalf("a second server started on data dir %s while the first ran", dir)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "in use") {
		t.Errorf("got error %q, want one that names the data dir as in use", err)
	}
	first.Stop()
	again, err := embedded.Start(cfg, nil)
	if err != nil {
		t.Fatalf("start after the first server stopped: %v", err)
	}
	again.Stop()
}
