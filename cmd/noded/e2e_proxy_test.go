package main

// Nodes that hold no data: a proxy node (--proxy on) and the L4 gateway
// (`gateway start`) in front of a 3-member cluster, serving etcdctl while
// a member they forward to is killed.

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// isEtcd34 reports whether the binary under test is etcd 3.4, whose proxy
// serves the v2 API only.
func isEtcd34() bool {
	out, _ := exec.Command(e2eBinary, "--version").Output()
	return strings.Contains(string(out), "etcd Version: 3.4.")
}

// ctlEventually runs etcdctl until it prints want (the proxy may still be
// learning the cluster), failing after startTimeout.
func ctlEventually(t *testing.T, run func() ctlResult, want string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		res := run()
		if res.exitCode == 0 && res.stdout == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcdctl: exit %d %q %q, want %q", res.exitCode, res.stdout, res.stderr, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestProxyNode(t *testing.T) {
	etcdctlPath(t)
	c := newCluster(t, 3, "--enable-v2")
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peerURL)
	}
	port := freePorts(t, 1)[0]
	p := &e2eMember{name: "proxy", binary: e2eBinary, clientURL: fmt.Sprintf("http://127.0.0.1:%d", port), log: &logBuffer{}}
	p.dataDir = filepath.Join(t.TempDir(), "proxy.etcd")
	p.args = []string{"--name=proxy", "--proxy=on", "--data-dir=" + p.dataDir,
		"--listen-client-urls=" + p.clientURL, "--advertise-client-urls=" + p.clientURL,
		"--initial-cluster=" + strings.Join(initial, ","), "--proxy-failure-wait=2000", "--proxy-refresh-interval=2000"}
	c.members = append(c.members, p)
	p.start(t)
	proxy := []string{p.clientURL}
	v2 := func(args ...string) func() ctlResult {
		// --no-sync: talk to the proxy, not to the members it names.
		return func() ctlResult { return etcdctl2(t, proxy, append([]string{"--no-sync"}, args...)...) }
	}
	v3 := func(args ...string) func() ctlResult {
		return func() ctlResult { return etcdctl(t, proxy, "", args...) }
	}
	ctlEventually(t, v2("set", "/p/k", "v1"), "v1\n")
	ctlEventually(t, v2("get", "/p/k"), "v1\n")
	withV3 := !isEtcd34()
	if withV3 {
		ctlEventually(t, v3("put", "pk", "v1"), "OK\n")
		ctlEventually(t, v3("get", "pk", "--print-value-only"), "v1\n")
	}
	// Each follower in turn is killed (killing the leader costs an
	// election, which clients see whatever stands in front of the
	// cluster); every request through the proxy succeeds the first time.
	for i := 0; i < 3; i++ {
		core := &e2eCluster{members: c.members[:3]}
		if i == core.leader(t, core.client(t)) {
			continue
		}
		m := c.members[i]
		m.kill(t)
		for j := 0; j < 6; j++ {
			value := fmt.Sprintf("m%d-%d", i, j)
			if res := v2("set", "/p/k", value)(); res.exitCode != 0 || res.stdout != value+"\n" {
				t.Fatalf("v2 set through the proxy with %s down: exit %d %q %q", m.name, res.exitCode, res.stdout, res.stderr)
			}
			if withV3 {
				if res := v3("put", "pk", value)(); res.exitCode != 0 || res.stdout != "OK\n" {
					t.Fatalf("v3 put through the proxy with %s down: exit %d %q %q", m.name, res.exitCode, res.stdout, res.stderr)
				}
				if res := v3("get", "pk", "--print-value-only")(); res.exitCode != 0 || res.stdout != value+"\n" {
					t.Fatalf("v3 get through the proxy with %s down: exit %d %q %q", m.name, res.exitCode, res.stdout, res.stderr)
				}
			}
		}
		m.restart(t)
	}
}

// startForwarder starts `<binary> <subcommand> start` in front of a new
// 3-member cluster, with the cluster's endpoints and extra flags, and
// returns the cluster (the forwarder last) and the forwarder's URL.
func startForwarder(t *testing.T, subcommand string, extra ...string) (*e2eCluster, string) {
	t.Helper()
	c := newCluster(t, 3)
	port := freePorts(t, 1)[0]
	var eps []string
	for _, m := range c.members {
		eps = append(eps, strings.TrimPrefix(m.clientURL, "http://"))
	}
	g := &e2eMember{name: subcommand, binary: e2eBinary, clientURL: fmt.Sprintf("http://127.0.0.1:%d", port), log: &logBuffer{}}
	g.args = append([]string{subcommand, "start", fmt.Sprintf("--listen-addr=127.0.0.1:%d", port), "--endpoints=" + strings.Join(eps, ",")}, extra...)
	c.members = append(c.members, g)
	g.start(t)
	return c, g.clientURL
}

// survivesFollowerLoss kills a follower of the cluster's first three
// members and checks that puts and gets through endpoint all succeed.
func survivesFollowerLoss(t *testing.T, c *e2eCluster, endpoint, key string) {
	t.Helper()
	core := &e2eCluster{members: c.members[:3]}
	follower := (core.leader(t, core.client(t)) + 1) % 3
	c.members[follower].kill(t)
	for j := 0; j < 6; j++ {
		value := fmt.Sprintf("v%d", j+1)
		if res := etcdctl(t, []string{endpoint}, "", "put", key, value); res.exitCode != 0 || res.stdout != "OK\n" {
			t.Fatalf("put through %s with a member down: exit %d %q %q", endpoint, res.exitCode, res.stdout, res.stderr)
		}
		if res := etcdctl(t, []string{endpoint}, "", "get", key, "--print-value-only"); res.exitCode != 0 || res.stdout != value+"\n" {
			t.Fatalf("get through %s with a member down: exit %d %q %q", endpoint, res.exitCode, res.stdout, res.stderr)
		}
	}
	c.members[follower].restart(t)
}

func TestGateway(t *testing.T) {
	etcdctlPath(t)
	c, gw := startForwarder(t, "gateway", "--retry-delay=2s")
	ctlEventually(t, func() ctlResult { return etcdctl(t, []string{gw}, "", "put", "gk", "v0") }, "OK\n")
	survivesFollowerLoss(t, c, gw, "gk")
}

func TestGRPCProxy(t *testing.T) {
	etcdctlPath(t)
	c, proxied := startForwarder(t, "grpc-proxy", "--namespace=app/")
	ctlEventually(t, func() ctlResult { return etcdctl(t, []string{proxied}, "", "put", "k", "v0") }, "OK\n")
	wantCtl(t, c.endpoints()[:1], "app/k\nv0\n", "get", "app/k")
	wantCtl(t, []string{proxied}, "k\nv0\n", "get", "k")
	wantCtl(t, []string{proxied}, "v0\n", "get", "k", "--consistency=s", "--print-value-only")
	survivesFollowerLoss(t, c, proxied, "k")
}
