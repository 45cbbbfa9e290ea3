package policy_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
)

const sample = `
roles:
  trader:
    - permission: ACQUIRE_LOCK
      names: ["orders/*"]
    - permission: SEND_TO_FILTER
      names: ["prices/**"]
  admin:
    - permission: MODIFY_SECURITY
anonymous:
  allowed: true
  roles: [guest]
properties:
  default: veto
  max_value_length: 8
  rules:
    - key: Department
      values: [sales, ops]
    - key: Tier
      set: basic
    - key: "Internal*"
      veto: true
    - key: "Client*"
`

func TestParse(t *testing.T) {
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Allowed([]string{"trader"}, policy.AcquireLock, "orders/1") || p.Allowed([]string{"trader"}, policy.AcquireLock, "orders/1/x") {
		t.Fatal("scoped grant not applied as written")
	}
	if !p.Allowed([]string{"trader"}, policy.SendToFilter, "prices/eu/x") || !p.Anonymous.Allowed || !slices.Equal(p.Anonymous.Roles, []string{"guest"}) {
		t.Fatalf("got %+v", p)
	}
	for name, bad := range map[string]string{
		"unknown field":      "roles: {}\nanonymous: {allowed: false}\nextra: 1\n",
		"unknown permission": "roles: {x: [{permission: FLY}]}\n",
		"bad pattern":        "roles: {x: [{permission: ACQUIRE_LOCK, names: ['a/**/b']}]}\n",
		"bad default":        "properties: {default: maybe}\n",
		"bad glob":           "properties: {rules: [{key: '['}]}\n",
		"veto and set":       "properties: {rules: [{key: a, veto: true, set: b}]}\n",
		"empty":              "",
		"two documents":      "roles: {}\n---\nroles: {}\n",
		"not yaml":           "roles: [",
		"too large":          strings.Repeat("#", policy.MaxSize+1),
	} {
		if _, err := policy.Parse([]byte(bad)); err == nil {
			t.Errorf("%s: got nil, want an error", name)
		}
	}
}

func TestVetProperties(t *testing.T) {
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	got, vetoed := p.VetProperties(map[string]string{
		"Department": "sales", "Tier": "gold", "ClientApp": "web", "InternalX": "1", "Other": "x",
		"$Roles": "admin", "ClientLong": "123456789", "Client Bad": "x", "Department2": "x",
	})
	want := map[string]string{"Department": "sales", "Tier": "basic", "ClientApp": "web"}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	wantVetoed := []string{"$Roles", "Client Bad", "ClientLong", "Department2", "InternalX", "Other"}
	if !slices.Equal(vetoed, wantVetoed) {
		t.Fatalf("vetoed %v, want %v", vetoed, wantVetoed)
	}
	if got, _ := p.VetProperties(map[string]string{"Department": "hr"}); len(got) != 0 {
		t.Fatalf("got %v, want the value vetoed", got)
	}
	dev := policy.Development()
	if got, _ := dev.VetProperties(map[string]string{"Any": "x", "$Principal": "root"}); !maps.Equal(got, map[string]string{"Any": "x"}) {
		t.Fatalf("development policy: got %v", got)
	}
	var nilPolicy *policy.Policy
	if got, _ := nilPolicy.VetProperties(map[string]string{"a": "b"}); len(got) != 0 {
		t.Fatal("a nil policy accepted a property")
	}
}

// TestVetChange: a session changing its own properties is held to the rules that
// vet proposals at open; it may also remove a key the rules accept some value of,
// but not one they veto whatever the value.
func TestVetChange(t *testing.T) {
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	got, refused := p.VetChange(
		map[string]string{"Department": "hr", "Tier": "gold", "ClientApp": "web", "InternalX": "1", "$Roles": "admin"},
		[]string{"Department", "Tier", "ClientOld", "InternalY", "Other", "$Principal"})
	if want := map[string]string{"Tier": "basic", "ClientApp": "web"}; !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(refused) != 6 { // the 3 set and 3 removed that are checked one by one below
		t.Fatalf("refused %q, want 6 keys", refused)
	}
	// Set: Department=hr (not a listed value), InternalX and $Roles (vetoed keys),
	// ClientLong (over max_value_length); removed: InternalY (veto rule), Other (no
	// rule, default veto), $Principal.
	_, refused = p.VetChange(map[string]string{"Department": "hr", "InternalX": "1", "$Roles": "admin", "ClientLong": "123456789"}, nil)
	wantRefused := []string{
		`"$Roles": the rules veto the key`,
		`"ClientLong": the value is 9 bytes, over max_value_length 8`,
		`"Department": not a value the rules accept`,
		`"InternalX": the rules veto the key`,
	}
	if !slices.Equal(refused, wantRefused) {
		t.Fatalf("refused %q, want %q", refused, wantRefused)
	}
	_, refused = p.VetChange(nil, []string{"Department", "Tier", "ClientOld", "InternalY", "Other", "$Principal"})
	wantRefused = []string{
		`"$Principal": the rules veto the key, so it may not be removed either`,
		`"InternalY": the rules veto the key, so it may not be removed either`,
		`"Other": the rules veto the key, so it may not be removed either`,
	}
	if !slices.Equal(refused, wantRefused) {
		t.Fatalf("refused %q, want %q", refused, wantRefused)
	}
	if _, refused := policy.Development().VetChange(map[string]string{"Any": "x"}, []string{"Other"}); len(refused) != 0 {
		t.Fatalf("development policy refused %v", refused)
	}
	var nilPolicy *policy.Policy
	if _, refused := nilPolicy.VetChange(nil, []string{"a"}); len(refused) != 1 {
		t.Fatal("a nil policy allowed a removal")
	}
}

func TestStoreAndWatch(t *testing.T) {
	store, js := openStore(t)
	ctx := context.Background()
	if _, _, err := store.Get(ctx); !errors.Is(err, policy.ErrNoPolicy) {
		t.Fatalf("got %v, want ErrNoPolicy", err)
	}
	h := policy.NewHolder(&policy.Policy{})
	watch(t, store, h, natstest.Logger(t))

	rev, err := store.Create(ctx, policy.Development())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, policy.Development()); !errors.Is(err, policy.ErrConflict) {
		t.Fatalf("second Create: got %v, want ErrConflict", err)
	}
	natstest.CheckFor(t, time.Second, 5*time.Millisecond, func() error {
		if !h.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") {
			return errors.New("the holder has not seen the created policy")
		}
		return nil
	})
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := store.Put(ctx, p, rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, p, rev); !errors.Is(err, policy.ErrConflict) {
		t.Fatalf("stale Put: got %v, want ErrConflict", err)
	}
	if _, err := store.Put(ctx, &policy.Policy{Roles: map[string][]policy.Grant{"x": {{Permission: "FLY"}}}}, 0); err == nil {
		t.Fatal("Put stored an invalid policy")
	}
	natstest.CheckFor(t, time.Second, 5*time.Millisecond, func() error {
		if h.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") || !h.Allowed([]string{"admin"}, policy.ModifySecurity, "") {
			return errors.New("the holder has not seen the change")
		}
		return nil
	})
	got, gotRev, err := store.Get(ctx)
	if err != nil || gotRev != rev2 || !got.Anonymous.Allowed {
		t.Fatalf("Get: got %+v at %d (%v), want the sample at %d", got, gotRev, err, rev2)
	}
	// A value written behind the store's back that does not validate is skipped, and
	// the watch goes on to apply the next good one.
	kv, err := js.KeyValue(ctx, policy.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, policy.Key, []byte(`{"roles":{"x":[{"permission":"FLY"}]},"anonymous":{"allowed":true}}`)); err != nil {
		t.Fatal(err)
	}
	p.Anonymous.Allowed = false
	if _, err := store.Put(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, time.Second, 5*time.Millisecond, func() error {
		if cur := h.Load(); cur.Anonymous.Allowed || cur.Roles["x"] != nil {
			return errors.New("the holder has not moved past the invalid value to the next good one")
		}
		return nil
	})
}

func ExamplePolicy_Allowed() {
	p, err := policy.Parse([]byte(`
roles:
  trader:
    - permission: ACQUIRE_LOCK
      names: ["orders/*"]
anonymous:
  allowed: false
`))
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Allowed([]string{"trader"}, policy.AcquireLock, "orders/42"))
	fmt.Println(p.Allowed([]string{"trader"}, policy.AcquireLock, "invoices/7"))
	// Output:
	// true
	// false
}

// TestWatchOutlivesItsWatcher deletes the policy bucket under a watch: nats.go cannot
// recreate the watcher's consumer and ends it. Watch watches again and applies the
// policy stored once the bucket exists again.
func TestWatchOutlivesItsWatcher(t *testing.T) {
	t.Parallel()
	store, js := openStore(t)
	ctx := context.Background()
	if _, err := store.Create(ctx, policy.Development()); err != nil {
		t.Fatal(err)
	}
	h := policy.NewHolder(nil)
	logs := &natstest.Buffer{}
	watch(t, store, h, logs.Logger())

	if err := js.DeleteStream(ctx, "KV_"+policy.Bucket); err != nil {
		t.Fatal(err)
	}
	// The watcher's consumer misses its heartbeats and cannot be recreated (10 s).
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "watching it again") {
			return errors.New("the watch has not noticed its watcher ended")
		}
		return nil
	})
	if !h.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") {
		t.Fatal("the holder lost the last policy with the bucket")
	}
	store, err := policy.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") || !h.Allowed([]string{"admin"}, policy.ModifySecurity, "") {
			return errors.New("the holder has not seen the policy stored after the watcher ended")
		}
		return nil
	})
}

// TestWatchFollowsABucketCreatedAgainAtOnce deletes the policy bucket and creates it
// again before the watcher's consumer misses a heartbeat: nats.go then recreates the
// consumer on the new stream, after the last revision it delivered, and the watch
// goes on without the new bucket's first revisions and without an error. Watch
// notices the new stream and applies the policy stored in it.
func TestWatchFollowsABucketCreatedAgainAtOnce(t *testing.T) {
	t.Parallel()
	store, js := openStore(t)
	ctx := context.Background()
	if _, err := store.Create(ctx, policy.Development()); err != nil {
		t.Fatal(err)
	}
	for range 3 { // revisions the new bucket's first policy will not reach
		if _, err := store.Put(ctx, policy.Development(), 0); err != nil {
			t.Fatal(err)
		}
	}
	h := policy.NewHolder(nil)
	watch(t, store, h, natstest.Logger(t))

	if err := js.DeleteStream(ctx, "KV_"+policy.Bucket); err != nil {
		t.Fatal(err)
	}
	again, err := policy.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if h.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") || !h.Allowed([]string{"admin"}, policy.ModifySecurity, "") {
			return errors.New("the holder has not seen the policy stored in the bucket created again")
		}
		return nil
	})
}

// watch runs store.Watch on h until the test ends, and returns once the stored
// policy, if any, is applied.
func watch(t *testing.T, store *policy.Store, h *policy.Holder, log *slog.Logger) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := store.Watch(ctx, h, log, ready); err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-ready
}

// TestStoredPolicyWithNamesOnUnscopedPermissions: a policy stored before names on
// unscoped permissions were refused still loads, with the meaning it had then.
// Those grants were checked against no name, which only "**" matches: with it the
// grant held everywhere, without it it granted nothing. Refusing the stored value
// instead stopped the auth service from starting and left every other service
// with no policy at all, denying everything, after an upgrade.
func TestStoredPolicyWithNamesOnUnscopedPermissions(t *testing.T) {
	store, js := openStore(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, policy.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// As an earlier release stored it: Put validated it then.
	old := `{"roles":{"viewer":[{"permission":"VIEW_SESSION","names":["**"]},{"permission":"MODIFY_SESSION","names":["orders/*"]},{"permission":"ACQUIRE_LOCK","names":["orders/*"]}]},"anonymous":{"allowed":false}}`
	if _, err := kv.Put(ctx, policy.Key, []byte(old)); err != nil {
		t.Fatal(err)
	}
	got, _, err := store.Get(ctx)
	if err != nil {
		t.Fatalf("Get of the stored policy: %v, want it read as it applied before", err)
	}
	h := policy.NewHolder(nil)
	watch(t, store, h, natstest.Logger(t))
	for name, p := range map[string]*policy.Policy{"Get": got, "Watch": h.Load()} {
		roles := []string{"viewer"}
		switch {
		case p == nil:
			t.Fatalf("%s: no policy, want the stored one", name)
		case !p.Allowed(roles, policy.ViewSession, ""):
			t.Errorf("%s: VIEW_SESSION with names [**]: not granted, want granted as before", name)
		case p.Allowed(roles, policy.ModifySession, ""):
			t.Errorf("%s: MODIFY_SESSION with names [orders/*]: granted, want nothing as before", name)
		case !p.Allowed(roles, policy.AcquireLock, "orders/1") || p.Allowed(roles, policy.AcquireLock, "x"):
			t.Errorf("%s: ACQUIRE_LOCK on orders/*: not as stored", name)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v, want a policy that can be set again as read", name, err)
		}
	}
	// What is written now is still checked: names there are refused.
	bad := &policy.Policy{Roles: map[string][]policy.Grant{"x": {{Permission: policy.ViewSession, Names: policy.List{"**"}}}}}
	if _, err := store.Put(ctx, bad, 0); err == nil || !strings.Contains(err.Error(), "not granted per name") {
		t.Fatalf("Put with names on VIEW_SESSION: %v, want refused", err)
	}
}

// TestStoredPolicyOfANewerFormatIsNotApplied: a policy a newer version of Roster
// stored in a later format may hold restrictions this version does not know, and
// would apply without them. It is refused: Get names it invalid and why, and a watch
// keeps the last good policy. What this version stores carries its format.
func TestStoredPolicyOfANewerFormatIsNotApplied(t *testing.T) {
	store, js := openStore(t)
	ctx := context.Background()
	if _, err := store.Create(ctx, policy.Development()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, policy.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, policy.Key)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"format":%d`, policy.Format); !strings.Contains(string(e.Value()), want) {
		t.Errorf("stored policy %s: want %s in it", e.Value(), want)
	}
	h := policy.NewHolder(nil)
	var logs natstest.Buffer
	watch(t, store, h, logs.Logger())
	newer := fmt.Sprintf(`{"format":%d,"roles":{},"anonymous":{"allowed":true},"deny":["everything"]}`, policy.Format+1)
	if _, err := kv.Put(ctx, policy.Key, []byte(newer)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Get(ctx); !errors.Is(err, policy.ErrInvalidStored) || !strings.Contains(err.Error(), "newer version") {
		t.Fatalf("Get: got %v, want ErrInvalidStored naming a newer version", err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "newer version") {
			return errors.New("the watch has not logged the newer policy")
		}
		return nil
	})
	if p := h.Load(); p == nil || !p.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") {
		t.Fatalf("holder has %+v, want the development policy kept", p)
	}
	// The watch goes on to the next good policy.
	dev := policy.Development()
	dev.Anonymous.Roles = []string{"after"}
	if _, err := store.Put(ctx, dev, 0); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		p := h.Load()
		if p == nil || len(p.Anonymous.Roles) != 1 || p.Anonymous.Roles[0] != "after" {
			return fmt.Errorf("holder has %+v, want the policy stored after the newer one", p)
		}
		return nil
	})
}

// openStore opens the policy store on a new embedded server.
func openStore(t *testing.T) (*policy.Store, jetstream.JetStream) {
	t.Helper()
	js := natstest.Start(t).JetStream(t)
	store, err := policy.OpenStore(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return store, js
}

// TestWatchLogsEachPolicyItApplies: every policy a watch applies is logged at info
// with its revision. A process that starts before any policy is stored warns that
// every permission check fails until one is; the policy's arrival was logged only
// at debug, so at the default level the warning was the last word.
func TestWatchLogsEachPolicyItApplies(t *testing.T) {
	store, _ := openStore(t)
	logs := &natstest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := policy.NewHolder(nil)
	watch(t, store, h, log)
	rev, err := store.Create(context.Background(), policy.Development())
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`"level":"INFO","msg":"policy applied","revision":%d`, rev)
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), want) {
			return fmt.Errorf("log %q, want a line with %s", logs.String(), want)
		}
		return nil
	})
}

// TestChangedTellsOfTheNextStoredPolicy: a holder's Changed channel is closed when
// the watch applies a policy stored after it was taken, and not before; a channel
// taken after that waits for the next one.
func TestChangedTellsOfTheNextStoredPolicy(t *testing.T) {
	store, _ := openStore(t)
	ctx := context.Background()
	rev, err := store.Create(ctx, policy.Development())
	if err != nil {
		t.Fatal(err)
	}
	h := policy.NewHolder(nil)
	watch(t, store, h, natstest.Logger(t))
	changed := h.Changed()
	select {
	case <-changed:
		t.Fatal("Changed was closed before any policy was stored after it was taken")
	default:
	}
	p, err := policy.Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, p, rev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed was not closed when the watch applied the stored policy")
	}
	if !h.Allowed([]string{"admin"}, policy.ModifySecurity, "") || h.Allowed([]string{"anonymous"}, policy.ModifySecurity, "") {
		t.Fatal("Changed was closed before the new policy was the holder's")
	}
	select {
	case <-h.Changed():
		t.Fatal("a channel taken after the change is closed already")
	default:
	}
}
