package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// rosterBin is the roster binary the tests run as separate processes, built once by
// TestMain.
var rosterBin string

// consultSources stats, once, every file the roster binary is built from. go test
// caches a package's result until its Go inputs change, and the binary, built by a
// command, is none of them: a change to a service or to cmd/roster left this
// package's result cached, reported ok for code it never ran. A file of the module
// that a test stats is an input too (its size and time): with these, a change to
// any of them runs the tests again.
func consultSources() {
	sourcesOnce.Do(func() {
		for _, root := range []string{"../cmd", "../pkg", "../services", "../go.mod", "../go.sum"} {
			_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.HasSuffix(path, "_test.go") {
					_, _ = os.Stat(path)
				}
				return nil
			})
		}
	})
}

var sourcesOnce sync.Once

// childBinEnv names, in a run of this test binary that a test starts as a child
// (TestProcessesEndWithTheTests), the roster binary the parent built.
const childBinEnv = "ROSTER_INTEGRATION_BIN"

func TestMain(m *testing.M) {
	if bin := os.Getenv(childBinEnv); bin != "" {
		rosterBin = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "roster-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rosterBin = filepath.Join(dir, "roster")
	build := exec.Command("go", "build", "-o", rosterBin, "github.com/seed-3c836eab/roster/cmd/roster")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building roster:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// testPolicy admits anonymous sessions with every permission, and lets test
// connections use shared inboxes; the tests are about failures, not permissions.
const testPolicy = `roles:
  anonymous:
    - permission: VIEW_SESSION
    - permission: MODIFY_SESSION
    - permission: MODIFY_OWN_PROPERTIES
    - permission: PERMANENT_SESSION
    - permission: ACQUIRE_LOCK
    - permission: VIEW_LOCKS
    - permission: SEND_TO_SESSION
    - permission: SEND_TO_FILTER
anonymous:
  allowed: true
  roles: [anonymous]
properties:
  default: accept
`

// proc is a child process: a NATS node or a Roster service instance.
type proc struct {
	name string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	consultSources()
	p.cmd = exec.Command(rosterBin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	endWithTheTests(p.cmd)
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
}

func (p *proc) running() bool {
	if p.cmd == nil || p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if p.running() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	if p.done != nil {
		<-p.done
	}
}

// stop sends SIGTERM and waits up to 30 s before killing.
func (p *proc) stop() {
	p.signal(syscall.SIGTERM)
	if p.done == nil {
		return
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

// tail returns the last lines of the process's log, for failure messages.
func (p *proc) tail() string {
	f, err := os.Open(p.log)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// node is one NATS server of the cluster, run as roster serve --services none.
type node struct {
	proc
	port int
}

func (n *node) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// service is one Roster service instance, run as roster serve --services <name>.
type service struct {
	proc
	service string
	health  string
}

// cluster is a 3-node NATS cluster with clustered JetStream (R3, fsync on every
// write) and Roster's account layout, and Roster services as separate processes.
type cluster struct {
	t           *testing.T
	dir         string
	seedFile    string
	policyFile  string
	servicePass string
	nodes       []*node
	mu          sync.Mutex
	services    []*service
}

// freePort returns a port of 127.0.0.1 that nothing listens on, for a process to
// listen on. The port is free when chosen, and bound by the process given it later: a port
// the kernel hands out for port 0 comes from the ephemeral range, from which it
// also takes the source ports of outgoing connections, and the many connections of
// these tests took one in between (a node failing with "address already in use",
// at its start or at a restart on its port). So ports come from below that range,
// which outgoing connections never use, each handed out once per test binary.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	low, high := listenRange()
	for range 1000 {
		p := low + rand.IntN(high-low)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free port in [%d, %d)", low, high)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// listenRange is where freePort chooses: the 10,000 ports below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range; 32768 where it cannot be read).
func listenRange() (low, high int) {
	high = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11024 {
				high = n
			}
		}
	}
	return high - 10000, high
}

// startCluster starts n NATS nodes and waits until JetStream has a leader.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), servicePass: "integration-service-password"}
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	c.seedFile = filepath.Join(c.dir, "callout.seed")
	c.policyFile = filepath.Join(c.dir, "policy.yaml")
	if err := os.WriteFile(c.seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.policyFile, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// Registered before the first node starts: a failure to start a later one
	// stops those already running.
	t.Cleanup(c.shutdown)
	clusterPorts := make([]int, n)
	for i := range n {
		clusterPorts[i] = freePort(t)
		c.nodes = append(c.nodes, &node{port: freePort(t)})
	}
	for i, nd := range c.nodes {
		var routes []string
		for j, p := range clusterPorts {
			if j != i {
				routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(p))
			}
		}
		name := fmt.Sprintf("n%d", i+1)
		nd.name = name
		nd.log = filepath.Join(c.dir, name+".log")
		nd.args = []string{"serve", "--services", "none",
			"--server-name", name,
			"--listen", "127.0.0.1:" + strconv.Itoa(nd.port),
			"--cluster-listen", "127.0.0.1:" + strconv.Itoa(clusterPorts[i]),
			"--routes", strings.Join(routes, ","),
			"--data-dir", filepath.Join(c.dir, name),
			"--service-password", c.servicePass,
			"--system-password", "integration-system-password",
			"--auth-callout-seed-file", c.seedFile,
			"--log-level", "warn",
		}
		nd.start(t)
	}
	natstest.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		for _, nd := range c.nodes {
			// Two nodes elect a JetStream leader: without this check a node that
			// could not start (its port taken since freePort chose it) left a
			// cluster of two, and the test failed later, of a lost quorum.
			if !nd.running() {
				t.Fatalf("%s exited:\n%s", nd.name, nd.tail())
			}
		}
		nc, err := c.serviceConn()
		if err != nil {
			return err
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err
	})
	return c
}

// urls lists the client URLs of every node.
func (c *cluster) urls() string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.url())
	}
	return strings.Join(out, ",")
}

// serviceConn connects to the SERVICES account (for checks on the stored state).
func (c *cluster) serviceConn(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(c.urls(), append([]nats.Option{nats.UserInfo(embedded.ServiceUser, c.servicePass)}, opts...)...)
}

// startService starts one instance of a Roster service and waits until it is ready.
func (c *cluster) startService(name string) *service {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.services)
	c.mu.Unlock()
	hp := freePort(c.t)
	s := &service{service: name, health: "http://127.0.0.1:" + strconv.Itoa(hp)}
	s.name = fmt.Sprintf("%s-%d", name, i)
	s.log = filepath.Join(c.dir, s.name+".log")
	s.args = []string{"serve", "--services", name,
		"--nats-url", c.urls(),
		"--nats-user", embedded.ServiceUser, "--nats-password", c.servicePass,
		"--replicas", "3",
		"--health-listen", "127.0.0.1:" + strconv.Itoa(hp),
		"--log-level", "warn",
	}
	if name == "auth" {
		// Only the auth service answers the callout: serve refuses the seed (and
		// the policy) in a process without it.
		s.args = append(s.args, "--auth-callout-seed-file", c.seedFile, "--policy", c.policyFile)
	}
	s.start(c.t)
	c.mu.Lock()
	c.services = append(c.services, s)
	c.mu.Unlock()
	c.waitReady(s, 60*time.Second)
	return s
}

// waitReady polls the instance's /readyz until it answers 200.
func (c *cluster) waitReady(s *service, total time.Duration) {
	c.t.Helper()
	natstest.CheckFor(c.t, total, 100*time.Millisecond, func() error {
		if !s.running() {
			c.t.Fatalf("%s exited:\n%s", s.name, s.tail())
		}
		resp, err := probeClient.Get(s.health + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
}

// probeClient bounds each readiness probe: http.Get waits as long as an instance
// that took the connection takes to answer, past the poll's deadline.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// startServices starts `instances` instances of every service, in dependency order.
func (c *cluster) startServices(instances int) {
	c.t.Helper()
	for _, name := range []string{"auth", "registry", "lock", "messaging"} {
		for range instances {
			c.startService(name)
		}
	}
}

// instances returns the running instances of a service.
func (c *cluster) instances(name string) []*service {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*service
	for _, s := range c.services {
		if s.service == name && s.running() {
			out = append(out, s)
		}
	}
	return out
}

// restartNode starts a stopped or killed node again on its data directory.
func (c *cluster) restartNode(i int) {
	c.t.Helper()
	c.nodes[i].start(c.t)
	natstest.CheckFor(c.t, 60*time.Second, 100*time.Millisecond, func() error {
		if !c.nodes[i].running() {
			// Say why, rather than "connection refused" for a minute.
			c.t.Fatalf("%s exited:\n%s", c.nodes[i].name, c.nodes[i].tail())
		}
		nc, err := nats.Connect(c.nodes[i].url(), nats.UserInfo(embedded.ServiceUser, c.servicePass))
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
}

// waitStreamsCurrent waits until every stream has a leader and every replica of it
// is current: a node just restarted has caught up, and the cluster can lose another
// and still write.
func (c *cluster) waitStreamsCurrent(total time.Duration) {
	c.t.Helper()
	natstest.CheckFor(c.t, total, 250*time.Millisecond, func() error {
		nc, err := c.serviceConn()
		if err != nil {
			return err
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		streams := js.ListStreams(ctx)
		n := 0
		for info := range streams.Info() {
			n++
			cl := info.Cluster
			if cl == nil || cl.Leader == "" {
				return fmt.Errorf("stream %s has no leader", info.Config.Name)
			}
			for _, r := range cl.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("stream %s: replica %s is not current", info.Config.Name, r.Name)
				}
			}
		}
		if err := streams.Err(); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no stream listed")
		}
		return nil
	})
}

// streamLeader returns the index of the node leading a stream's RAFT group.
func (c *cluster) streamLeader(stream string) (int, error) {
	nc, err := c.serviceConn()
	if err != nil {
		return -1, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1, err
	}
	if info.Cluster == nil {
		return -1, errors.New("stream has no cluster info")
	}
	for i, n := range c.nodes {
		if n.name == info.Cluster.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("leader %q is not a node of the cluster", info.Cluster.Leader)
}

func (c *cluster) shutdown() {
	c.mu.Lock()
	services := append([]*service(nil), c.services...)
	c.mu.Unlock()
	for _, s := range services {
		s.stop()
	}
	for _, n := range c.nodes {
		n.stop()
	}
	if c.t.Failed() {
		for _, s := range services {
			c.t.Logf("--- %s log:\n%s", s.name, s.tail())
		}
		for _, n := range c.nodes {
			c.t.Logf("--- %s log:\n%s", n.name, n.tail())
		}
	}
}
