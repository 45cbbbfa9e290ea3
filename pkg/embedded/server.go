package embedded

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
	cfg Config
	// unlock releases the data dir once the server has shut down.
	unlock func()
}

// lockFileName is the file in the data dir that a running server holds locked.
const lockFileName = "roster.lock"

// Start starts an embedded server and waits until it accepts connections and
// JetStream is ready. logger receives the server's log (notices at debug level).
// The data dir serves one server at a time: Start fails while another server,
// in this process or another, runs on it, and the dir is free again once the
// server has shut down (Stop) or its process has ended.
func Start(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded: data dir is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded: data dir: %w", err)
	}
	release, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	s, err := start(cfg, logger)
	if err != nil {
		release()
		return nil, err
	}
	var once sync.Once
	s.unlock = func() { once.Do(release) }
	// Released too when the server is shut down other than by Stop.
	go func() {
		s.WaitForShutdown()
		s.unlock()
	}()
	return s, nil
}

// start starts the server on a data dir already locked for it.
func start(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.ServicePassword == "" {
		cfg.ServicePassword = randomSecret()
	}
	if cfg.SystemPassword == "" {
		cfg.SystemPassword = randomSecret()
	}
	if cfg.Cluster.Listen != "" && cfg.Cluster.Password == "" {
		cfg.Cluster.Password = RoutePassword(cfg.SystemPassword)
	}
	hashed, err := withHashedPasswords(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	text, err := ConfigText(hashed)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		return nil, fmt.Errorf("embedded: configuration: %w", err)
	}
	opts.NoSigs = true
	if cfg.CalloutIssuer != "" {
		// A nonce lets a client prove its per-connection key (a user nkey) to the
		// auth callout; without nkey users configured the server sends none.
		opts.AlwaysEnableNonce = true
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The server reports what stops it starting — an address in use, a monitoring
	// port it cannot bind — only as a fatal log line, and readiness would then wait
	// its whole timeout; the adapter hands that line over so Start fails at once.
	fatal := make(chan string, 1)
	ns.SetLoggerV2(&slogAdapter{l: logger.With("component", "nats"), fatal: fatal}, false, false, false)
	ns.Start()
	for deadline := time.Now().Add(readyTimeout); !ns.ReadyForConnections(50 * time.Millisecond); {
		select {
		case msg := <-fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded: server not ready for connections after %s", readyTimeout)
		}
	}
	return &Server{Server: ns, cfg: cfg}, nil
}

// readyTimeout bounds how long Start waits for the server to accept connections.
const readyTimeout = 30 * time.Second

// withHashedPasswords returns cfg with bcrypt hashes in place of its passwords: what
// the server is given to check connections against (a plaintext password in its
// configuration draws a warning on every start). The lowest cost is enough: the
// hashes never leave this process, which holds the passwords themselves.
func withHashedPasswords(cfg Config) (Config, error) {
	hash := func(pw string) (string, error) {
		if pw == "" || strings.HasPrefix(pw, "$2") {
			return pw, nil
		}
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		return string(h), err
	}
	var err error
	if cfg.ServicePassword, err = hash(cfg.ServicePassword); err != nil {
		return cfg, err
	}
	if cfg.SystemPassword, err = hash(cfg.SystemPassword); err != nil {
		return cfg, err
	}
	users := make([]UserPassword, len(cfg.ClientUsers))
	for i, u := range cfg.ClientUsers {
		if u.Password, err = hash(u.Password); err != nil {
			return cfg, err
		}
		users[i] = u
	}
	cfg.ClientUsers = users
	return cfg, nil
}

// Config returns the configuration the server runs with (including generated
// passwords).
func (s *Server) Config() Config { return s.cfg }

// ServiceOptions returns the nats.Options that connect a Roster service to this server
// in-process, as the service user.
func (s *Server) ServiceOptions() []nats.Option {
	return []nats.Option{
		nats.InProcessServer(s.Server),
		nats.UserInfo(ServiceUser, s.cfg.ServicePassword),
	}
}

// ConnectService connects to the SERVICES account in-process.
func (s *Server) ConnectService(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append(s.ServiceOptions(), opts...)...)
}

// ConnectSystem connects to the system account in-process.
func (s *Server) ConnectSystem(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(s.Server), nats.UserInfo(SystemUser, s.cfg.SystemPassword)}, opts...)
	return nats.Connect("", all...)
}

// Stop shuts the server down, waits until it has, and frees its data dir for the
// next server.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
	s.unlock()
}

func randomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic("embedded: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// slogAdapter sends nats-server's log to slog. Notices are debug-level: Roster prints
// its own summary of where it listens. A fatal line (the server gives up) also goes to
// fatal, when nothing is waiting there yet.
type slogAdapter struct {
	l     *slog.Logger
	fatal chan<- string
}

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.l.Error(msg)
	select {
	case a.fatal <- msg:
	default:
	}
}
func (a *slogAdapter) Errorf(format string, v ...any) { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
