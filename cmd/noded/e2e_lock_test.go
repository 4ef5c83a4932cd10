package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	"github.com/noded/noded/cmd/internal/memberproc"
)

var (
	nodectlOnce sync.Once
	nodectlPath string
	nodectlErr  error
)

// buildNodectl builds cmd/nodectl once per test run.
func buildNodectl(t *testing.T) string {
	t.Helper()
	nodectlOnce.Do(func() {
		_, thisFile, _, _ := runtime.Caller(0)
		dir, err := os.MkdirTemp("", "nodectl-bin-")
		if err != nil {
			nodectlErr = err
			return
		}
		nodectlPath = filepath.Join(dir, "nodectl")
		out, err := exec.Command("go", "build", "-o", nodectlPath, filepath.Join(filepath.Dir(thisFile), "..", "nodectl")).CombinedOutput()
		if err != nil {
			nodectlErr = fmt.Errorf("go build ./cmd/nodectl: %v\n%s", err, out)
		}
	})
	if nodectlErr != nil {
		t.Fatal(nodectlErr)
	}
	return nodectlPath
}

// TestLockHolderKilled: `nodectl lock` (etcdctl's client-side recipe) holds
// a lock; a Lock-service caller and a client/v3/concurrency caller wait in
// line behind it. The holder process is killed: its lease expires, the
// service caller gets the lock with a larger create revision (fencing
// token), and the recipe caller still waits behind it.
func TestLockHolderKilled(t *testing.T) {
	c := newCluster(t, 3)
	nodectl := buildNodectl(t)
	holder := exec.Command(nodectl, "--endpoints="+c.members[0].clientURL, "lock", "--ttl=3", "jobs")
	holder.Env = memberproc.Env()
	holder.SysProcAttr = memberproc.SysProcAttr()
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer memberproc.KillGroup(holder)
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatalf("nodectl lock printed nothing: %v", lines.Err())
	}
	holderKey := strings.TrimSpace(lines.Text())
	if !strings.HasPrefix(holderKey, "jobs/") {
		t.Fatalf("nodectl lock printed %q, want the key jobs/<lease>", holderKey)
	}
	cli := c.client(t, c.members[1].clientURL)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	held, err := cli.Get(ctx, holderKey)
	if err != nil || len(held.Kvs) != 1 {
		t.Fatalf("the holder's key: %v %v", held, err)
	}
	holderRev := held.Kvs[0].CreateRevision

	svcSess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer svcSess.Close()
	type lockResult struct {
		resp *v3lockpb.LockResponse
		err  error
	}
	svcGot := make(chan lockResult, 1)
	go func() {
		resp, err := v3lockpb.NewLockClient(cli.ActiveConnection()).Lock(ctx, &v3lockpb.LockRequest{Name: []byte("jobs"), Lease: int64(svcSess.Lease())})
		svcGot <- lockResult{resp, err}
	}()
	// The recipe caller queues after the service caller's key exists.
	waitFor(t, "the service caller's key in line", func() (bool, string) {
		resp, err := cli.Get(ctx, fmt.Sprintf("jobs/%x", svcSess.Lease()))
		return err == nil && len(resp.Kvs) == 1, fmt.Sprint(err)
	})
	recipeSess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer recipeSess.Close()
	recipeGot := make(chan error, 1)
	go func() { recipeGot <- concurrency.NewMutex(recipeSess, "jobs").Lock(ctx) }()

	select {
	case r := <-svcGot:
		t.Fatalf("the service caller got the lock while nodectl holds it: %v %v", r.resp, r.err)
	case <-time.After(time.Second):
	}
	if err := memberproc.KillGroup(holder); err != nil {
		t.Fatal(err)
	}
	holder.Wait()
	r := <-svcGot
	if r.err != nil {
		t.Fatal(r.err)
	}
	if gone, err := cli.Get(ctx, holderKey); err != nil || len(gone.Kvs) != 0 {
		t.Fatalf("the service caller holds the lock while the killed holder's key exists: %v %v", gone, err)
	}
	mine, err := cli.Get(ctx, string(r.resp.Key))
	if err != nil || len(mine.Kvs) != 1 || mine.Kvs[0].CreateRevision <= holderRev {
		t.Fatalf("the new holder's fencing revision does not exceed the old one's (%d): %v %v", holderRev, mine, err)
	}
	select {
	case err := <-recipeGot:
		t.Fatalf("the recipe caller got the lock (%v) while the service caller holds it", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := v3lockpb.NewLockClient(cli.ActiveConnection()).Unlock(ctx, &v3lockpb.UnlockRequest{Key: r.resp.Key}); err != nil {
		t.Fatal(err)
	}
	if err := <-recipeGot; err != nil {
		t.Fatal(err)
	}
}

// nodectl is etcdctl's own command line: its version lines.
func TestNodectlVersion(t *testing.T) {
	requireE2E(t)
	out, err := exec.Command(buildNodectl(t), "version").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "etcdctl version: 3.7.") || lines[1] != "API version: 3.7" {
		t.Fatalf("nodectl version: %q", out)
	}
}
