package main

// DNS SRV discovery with real processes: members find each other through
// _etcd-server._tcp records and etcdctl finds the cluster through
// _etcd-client._tcp, all served by an in-process DNS server. The member
// processes and etcdctl resolve through it by a private /etc/resolv.conf:
// each runs under `unshare --mount` with the test's file bind-mounted
// over the machine's, which nothing else sees.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noded/noded/cmd/internal/memberproc"
	"github.com/noded/noded/server/discovery/dnstest"
)

// privateResolver starts a DNS server on port 53 of a loopback address of
// its own and returns it with the wrapper that runs a command with a
// resolv.conf naming only it.
func privateResolver(t *testing.T) (*dnstest.Server, []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a DNS server on port 53 and a private mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skipf("unshare (util-linux) not found: %v", err)
	}
	var srv *dnstest.Server
	var err error
	for i := 0; i < 10; i++ {
		srv, err = dnstest.Start(fmt.Sprintf("127.53.%d.%d:53", 1+rand.IntN(250), 1+rand.IntN(250)))
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("DNS server on a loopback port 53: %v", err)
	}
	t.Cleanup(srv.Close)
	conf, err := srv.ResolvConf()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Checked once: the wrapper must work here before members depend on it.
	wrapper := []string{"unshare", "--mount", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, path}
	out, err := exec.Command(wrapper[0], append(wrapper[1:], "cat", "/etc/resolv.conf")...).CombinedOutput()
	if err != nil || string(out) != conf {
		t.Skipf("cannot give a process a private resolv.conf here: %v %s", err, out)
	}
	return srv, wrapper
}

func TestDiscoverySRV(t *testing.T) {
	etcdctlPath(t)
	requireE2E(t)
	if out, _ := exec.Command(e2eBinary, "--version").Output(); strings.Contains(string(out), "etcd Version: 3.4.") {
		// 3.4.23 fails when _etcd-server-ssl has no records and uses
		// _etcd-server's only when that lookup fails: plain-http peers
		// cannot bootstrap by SRV there. 3.7 (NODED_E2E_BINARY=/path/to/etcd-3.7) can.
		t.Skip("etcd 3.4's SRV discovery cannot bootstrap plain-http peers; run against etcd 3.7")
	}
	dns, wrapper := privateResolver(t)
	c := looseCluster(t)
	dir := t.TempDir()
	domain := fmt.Sprintf("e2e%d.test", rand.IntN(1e6))
	var ms []*e2eMember
	for i := 0; i < 3; i++ {
		m := c.newLooseMember(t, dir, fmt.Sprintf("s%d", i), "--discovery-srv="+domain)
		m.wrap = wrapper
		host := fmt.Sprintf("s%d.%s", i, domain)
		dns.AddA(host, "127.0.0.1")
		dns.AddSRV("_etcd-server._tcp."+domain, host, portOf(t, m.peerURL))
		dns.AddSRV("_etcd-client._tcp."+domain, host, portOf(t, m.clientURL))
		ms = append(ms, m)
	}
	for _, m := range ms {
		m.start(t)
	}
	for _, m := range ms {
		m.waitReady(t)
	}
	cli := c.client(t, ms[0].clientURL)
	resp, err := cli.MemberList(ctxTimeout(t))
	if err != nil || len(resp.Members) != 3 {
		t.Fatalf("member list: %v %v, want 3 members", resp, err)
	}

	t.Run("EtcdctlFindsTheCluster", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), etcdctlTimeout)
		defer cancel()
		run := func(args ...string) (string, error) {
			full := append(append(wrapper[1:], etcdctlPath(t), "--discovery-srv="+domain, "--dial-timeout=10s", "--command-timeout=30s"), args...)
			cmd := exec.CommandContext(ctx, wrapper[0], full...)
			cmd.Env = append(memberproc.Env(), "ETCDCTL_API=3")
			cmd.SysProcAttr = memberproc.SysProcAttr()
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := run("put", "srv-key", "srv-value"); err != nil || out != "OK\n" {
			t.Fatalf("etcdctl --discovery-srv put: %v %q", err, out)
		}
		if out, err := run("get", "srv-key", "--print-value-only"); err != nil || out != "srv-value\n" {
			t.Fatalf("etcdctl --discovery-srv get: %v %q", err, out)
		}
	})

	t.Run("MemberNotInRecords", func(t *testing.T) {
		m := c.newLooseMember(t, dir, "stranger", "--discovery-srv="+domain)
		m.wrap = wrapper
		m.start(t)
		want := `cannot find local etcd member "stranger" in SRV records`
		if err := m.waitExit(t, startTimeout); err == nil || !strings.Contains(strings.ReplaceAll(m.log.tail(logKeepBytes), `\"`, `"`), want) {
			t.Errorf("a member SRV records do not list: exit %v, log:\n%s", err, m.log.tail(logTailPrintBytes))
		}
	})
}

func portOf(t *testing.T, u string) uint16 {
	t.Helper()
	i := strings.LastIndex(u, ":")
	var p uint16
	if _, err := fmt.Sscanf(u[i+1:], "%d", &p); err != nil {
		t.Fatalf("port of %s: %v", u, err)
	}
	return p
}
