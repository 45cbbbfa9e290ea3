package embedded_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/embedded"
)

const (
	childEnv    = "ROSTER_EMBEDDED_CHILD_DIR"
	childPass   = "crash-test-password"
	readyPrefix = "READY "
	writers     = 4
	minAcked    = 200
	bucketName  = "crash"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		runChild(dir)
		return
	}
	os.Exit(m.Run())
}

// runChild runs an embedded server until it is killed, printing its URL.
func runChild(dir string) {
	s, err := embedded.Start(embedded.Config{
		Name: "crash-child", Listen: "127.0.0.1:-1", DataDir: dir, ServicePassword: childPass, SyncInterval: syncInterval(),
	}, nil)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println(readyPrefix + s.ClientURL())
	select {}
}

// startChild starts the test binary as a server process on dir and returns it with
// its client URL.
func startChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), readyPrefix) || strings.HasPrefix(sc.Text(), "ERROR") {
				lines <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		url, ok := strings.CutPrefix(line, readyPrefix)
		if !ok {
			t.Fatalf("child: %s", line)
		}
		return cmd, url
	case <-time.After(30 * time.Second):
		t.Fatal("child server did not start within 30s")
		return nil, ""
	}
}

// TestAcknowledgedWritesSurviveSIGKILL writes to a KV bucket from several goroutines,
// kills the server process with SIGKILL in the middle of the writes, restarts it on
// the same data directory and checks that every write it acknowledged is there.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dir := t.TempDir()
	child, url := startChild(t, dir)
	nc, err := nats.Connect(url, nats.UserInfo(embedded.ServiceUser, childPass), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketName, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	acked := map[string]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key, val := fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("value-%d-%d", w, i)
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := kv.Put(wctx, key, []byte(val))
				cancel()
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked[key] = val
				mu.Unlock()
			}
		}()
	}
	// Kill once enough writes are acknowledged, while writers are still writing.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= minAcked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes acknowledged in 30s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	wg.Wait()
	nc.Close()

	_, url = startChild(t, dir)
	nc2, err := nats.Connect(url, nats.UserInfo(embedded.ServiceUser, childPass))
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	kv2, err := js2.KeyValue(ctx, bucketName)
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	lost := 0
	for key, want := range acked {
		e, err := kv2.Get(ctx, key)
		if err != nil || string(e.Value()) != want {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write %s=%s: got %v", key, want, err)
			}
		}
	}
	t.Logf("%d acknowledged writes before SIGKILL, %d lost", len(acked), lost)
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(acked))
	}
}

// syncInterval lets a manual run change the child's fsync interval
// (ROSTER_CRASH_SYNC=2m). The test passes with it too: a killed process leaves its
// written pages in the kernel's cache, so SIGKILL checks that JetStream acknowledges
// only what it has written, not that it reached the disk. fsync on every write (the
// default) is what protects acknowledged writes from a machine crash or power loss,
// which a test on one machine cannot produce.
func syncInterval() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("ROSTER_CRASH_SYNC"))
	return d
}
