// Command etcd measures Roster's session locks beside etcd's concurrency.Mutex on
// the same machine and disk, in one process, each with fsync on every write, and
// beside the raw JetStream KV floor Roster's own lock benchmark uses: an
// uncontended acquire+release, interleaved so that all three see the same moments
// of the disk, then a number of sessions contending for one lock.
//
// It is a module of its own so that etcd never becomes a dependency of Roster:
//
//	make bench-etcd      (or: cd bench/etcd && go run . -n 2000)
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/roster"
)

func main() {
	n := flag.Int("n", 2000, "uncontended acquire+release rounds, each of the three interleaved")
	contenders := flag.Int("contenders", 8, "sessions contending for one lock")
	perContender := flag.Int("grants", 100, "grants each contending session takes")
	flag.Parse()
	if err := run(*n, *contenders, *perContender); err != nil {
		log.Fatal(err)
	}
}

func run(n, contenders, perContender int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "roster-bench-etcd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	etcd, endpoint, err := startEtcd(dir + "/etcd")
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	ecl, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}})
	if err != nil {
		return err
	}
	defer ecl.Close()
	esess, err := concurrency.NewSession(ecl)
	if err != nil {
		return err
	}
	defer esess.Close()

	password := rand.Text()
	p, err := roster.Start(ctx, roster.Config{Embedded: embedded.Config{
		Name: "bench-etcd", Listen: "127.0.0.1:0", DataDir: dir + "/roster", ServicePassword: password,
	}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("roster: %w", err)
	}
	defer p.Stop()
	svc, err := nats.Connect(p.ClientURL(), nats.UserInfo(embedded.ServiceUser, password))
	if err != nil {
		return err
	}
	defer svc.Close()
	js, err := jetstream.New(svc)
	if err != nil {
		return err
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench_floor"})
	if err != nil {
		return err
	}
	rcl, err := client.Connect(p.ClientURL())
	if err != nil {
		return err
	}
	defer rcl.Close(ctx)
	rsess, err := rcl.Open(ctx, client.Options{})
	if err != nil {
		return err
	}

	floor := func(i int) error {
		key := "l" + strconv.Itoa(i)
		rev, err := kv.Create(ctx, key, []byte(`{}`))
		if err != nil {
			return err
		}
		return kv.Delete(ctx, key, jetstream.LastRevision(rev))
	}
	etcdLock := func(i int) error {
		m := concurrency.NewMutex(esess, "/bench/"+strconv.Itoa(i%16))
		if err := m.Lock(ctx); err != nil {
			return err
		}
		return m.Unlock(ctx)
	}
	rosterLock := func(i int) error {
		l, err := rsess.Lock(ctx, "bench/"+strconv.Itoa(i%16), client.LockOptions{})
		if err != nil {
			return err
		}
		return l.Unlock(ctx)
	}
	ops := []func(int) error{floor, etcdLock, rosterLock}
	times := make([][]time.Duration, len(ops))
	for i := range n {
		for j, op := range ops {
			t0 := time.Now()
			if err := op(i); err != nil {
				return err
			}
			times[j] = append(times[j], time.Since(t0))
		}
	}
	f50 := pct(times[0], .50)
	fmt.Printf("uncontended acquire+release, %d rounds interleaved, fsync on every write:\n\n", n)
	fmt.Printf("| | p50 | p99 | p50 / floor |\n|---|---|---|---|\n")
	for j, name := range []string{"raw JetStream KV Create + Delete (floor)", "etcd concurrency.Mutex Lock + Unlock", "Roster Session.Lock + Unlock (SDK)"} {
		fmt.Printf("| %s | %v | %v | %.2f× |\n", name, pct(times[j], .50).Round(time.Microsecond), pct(times[j], .99).Round(time.Microsecond), float64(pct(times[j], .50))/float64(f50))
	}

	eRate, err := contend(contenders, perContender, func() (func() error, func(), error) {
		s, err := concurrency.NewSession(ecl)
		if err != nil {
			return nil, nil, err
		}
		m := concurrency.NewMutex(s, "/contended")
		return func() error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(ctx)
		}, func() { s.Close() }, nil
	})
	if err != nil {
		return err
	}
	rRate, err := contend(contenders, perContender, func() (func() error, func(), error) {
		s, err := rcl.Open(ctx, client.Options{})
		if err != nil {
			return nil, nil, err
		}
		return func() error {
			l, err := s.Lock(ctx, "contended", client.LockOptions{})
			if err != nil {
				return err
			}
			return l.Unlock(ctx)
		}, func() { s.Close(ctx) }, nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("\n%d sessions contending for one lock, %d grants each:\n\n", contenders, perContender)
	fmt.Printf("| | grants/s |\n|---|---|\n| etcd concurrency.Mutex | %.0f |\n| Roster Session.Lock | %.0f (%.1f× etcd) |\n", eRate, rRate, rRate/eRate)
	return nil
}

// contend runs k sessions, each taking and releasing one lock per times, at once,
// and returns the grants per second.
func contend(k, times int, newSession func() (lockUnlock func() error, end func(), err error)) (float64, error) {
	fns := make([]func() error, k)
	for i := range fns {
		fn, end, err := newSession()
		if err != nil {
			return 0, err
		}
		defer end()
		fns[i] = fn
	}
	errs := make(chan error, k)
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, fn := range fns {
		wg.Go(func() {
			for range times {
				if err := fn(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(k*times) / elapsed.Seconds(), nil
}

// startEtcd starts a one-member etcd on free loopback ports with its defaults:
// its write-ahead log is fsynced on every commit.
func startEtcd(dir string) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "fatal"
	cu, err := freeURL()
	if err != nil {
		return nil, "", err
	}
	pu, err := freeURL()
	if err != nil {
		return nil, "", err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		e.Close()
		return nil, "", fmt.Errorf("not ready after a minute")
	}
	return e, cu.String(), nil
}

func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return url.Parse("http://" + l.Addr().String())
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*q)]
}
