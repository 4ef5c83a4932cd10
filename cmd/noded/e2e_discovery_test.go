package main

// Bootstrapping without --initial-cluster, as operators do it: v2
// discovery through an existing cluster's keys API ("custom discovery"),
// through Debian's etcd-discovery program (the discovery.etcd.io service)
// backed by a cluster, and the fallbacks of a member that finds its token
// full. Written against etcd 3.4 first (NODED_E2E_BINARY=/usr/bin/etcd).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/noded/noded/cmd/internal/memberproc"
)

// newLooseMember prepares a member with its own ports and data directory
// and no bootstrap flags; args are added to its command line.
func (c *e2eCluster) newLooseMember(t *testing.T, dir, name string, args ...string) *e2eMember {
	t.Helper()
	ports := freePorts(t, 2)
	m := &e2eMember{
		name:      name,
		binary:    e2eBinary,
		clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		log:       &logBuffer{},
	}
	m.dataDir = filepath.Join(dir, name+".etcd")
	m.args = append([]string{
		"--name=" + name, "--data-dir=" + m.dataDir,
		"--listen-client-urls=" + m.clientURL, "--advertise-client-urls=" + m.clientURL,
		"--listen-peer-urls=" + m.peerURL, "--initial-advertise-peer-urls=" + m.peerURL,
		"--heartbeat-interval=100", "--election-timeout=1000",
	}, args...)
	c.members = append(c.members, m)
	return m
}

// looseCluster is an empty harness cluster torn down with the test.
func looseCluster(t *testing.T) *e2eCluster {
	t.Helper()
	requireE2E(t)
	c := &e2eCluster{}
	t.Cleanup(func() { c.teardown(t) })
	return c
}

// waitExit waits for a member's process to exit by itself and returns its
// error (nil for exit 0).
func (m *e2eMember) waitExit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-m.exited:
		m.mu.Lock()
		defer m.mu.Unlock()
		m.killedByTest = true // an expected exit
		return m.waitErr
	case <-time.After(within):
		t.Fatalf("member %s still runs after %v; its log:\n%s", m.name, within, m.log.tail(logTailPrintBytes))
		return nil
	}
}

// formByDiscovery starts size members with --discovery durl and checks
// that they form one cluster of exactly them.
func formByDiscovery(t *testing.T, c *e2eCluster, dir, durl string, size int) []*e2eMember {
	t.Helper()
	var ms []*e2eMember
	for i := 0; i < size; i++ {
		ms = append(ms, c.newLooseMember(t, dir, fmt.Sprintf("d%d", i), "--discovery="+durl, "--enable-v2"))
	}
	// One at a time, each once the one before registered: the first then
	// has to wait for the others' registrations (not only read them).
	for i, m := range ms {
		m.start(t)
		if i < len(ms)-1 {
			waitUntil(t, m.name+" to register", func() bool { return registrations(t, durl) > i })
		}
	}
	for _, m := range ms {
		m.waitReady(t)
	}
	cli := c.client(t, ms[0].clientURL)
	resp, err := cli.MemberList(ctxTimeout(t))
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	var names []string
	for _, m := range resp.Members {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "d0,d1,d2"[:3*size-1] {
		t.Fatalf("members %v, want d0..d%d", names, size-1)
	}
	return ms
}

// registrations counts the members registered under a discovery URL (a
// GET of the token lists them; _config is hidden).
func registrations(t *testing.T, durl string) int {
	t.Helper()
	resp, err := http.Get(durl)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var ev v2Event
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil || ev.Node == nil {
		return 0
	}
	return len(ev.Node.Nodes)
}

func putV2(t *testing.T, u string, value string) {
	t.Helper()
	r := v2Do(t, "PUT", u, url.Values{"value": {value}})
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("PUT %s: %d %q", u, r.status, r.body)
	}
}

func TestDiscoveryV2Custom(t *testing.T) {
	backing := newCluster(t, 1, "--enable-v2")
	c := looseCluster(t)
	dir := t.TempDir()
	token := fmt.Sprintf("tok%d", time.Now().UnixNano())
	durl := backing.members[0].clientURL + "/v2/keys/discovery/" + token
	putV2(t, durl+"/_config/size", "3")
	ms := formByDiscovery(t, c, dir, durl, 3)

	t.Run("FullTokenExits", func(t *testing.T) {
		m := c.newLooseMember(t, dir, "extra-exit", "--discovery="+durl, "--discovery-fallback=exit")
		m.start(t)
		if err := m.waitExit(t, startTimeout); err == nil {
			t.Errorf("a member on a full token exited cleanly; want a failure")
		}
		if !strings.Contains(m.log.tail(logKeepBytes), "discovery: cluster is full") {
			t.Errorf("log of a member on a full token lacks %q:\n%s", "discovery: cluster is full", m.log.tail(logTailPrintBytes))
		}
	})

	t.Run("FullTokenProxies", func(t *testing.T) {
		m := c.newLooseMember(t, dir, "extra-proxy", "--discovery="+durl, "--discovery-fallback=proxy")
		m.start(t)
		// The proxy forwards the v2 API (etcd 3.4's proxy is HTTP only).
		deadline := time.Now().Add(startTimeout)
		for {
			req, _ := http.NewRequest("PUT", m.clientURL+"/v2/keys/via-proxy", strings.NewReader("value=p"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					break
				}
			}
			if time.Now().After(deadline) || !m.running() {
				t.Fatalf("PUT through the proxy: %v %v; proxy log:\n%s", resp, err, m.log.tail(logTailPrintBytes))
			}
			time.Sleep(200 * time.Millisecond)
		}
		wantCtl2(t, []string{ms[1].clientURL}, "p\n", "get", "/via-proxy")
	})

	t.Run("BadSizeKey", func(t *testing.T) {
		bad := backing.members[0].clientURL + "/v2/keys/discovery/bad" + token
		putV2(t, bad+"/_config/size", "three")
		m := c.newLooseMember(t, dir, "bad-size", "--discovery="+bad)
		m.start(t)
		if err := m.waitExit(t, startTimeout); err == nil || !strings.Contains(m.log.tail(logKeepBytes), "discovery: size key is bad") {
			t.Errorf("bad size key: exit %v, log:\n%s", err, m.log.tail(logTailPrintBytes))
		}
	})

	t.Run("MissingSizeKey", func(t *testing.T) {
		m := c.newLooseMember(t, dir, "no-size", "--discovery="+backing.members[0].clientURL+"/v2/keys/discovery/none"+token)
		m.start(t)
		// etcd defines "discovery: size key not found" but prints the keys
		// API's error instead; noded prints its own.
		if err := m.waitExit(t, startTimeout); err == nil || !regexp.MustCompile(`discovery: size key not found|100: Key not found`).MatchString(m.log.tail(logKeepBytes)) {
			t.Errorf("missing size key: exit %v, log:\n%s", err, m.log.tail(logTailPrintBytes))
		}
	})

	t.Run("ConflictingFlags", func(t *testing.T) {
		m := c.newLooseMember(t, dir, "conflict", "--discovery="+durl, "--initial-cluster=conflict=http://127.0.0.1:1")
		m.start(t)
		want := "multiple discovery or bootstrap flags are set. Choose one of"
		if err := m.waitExit(t, startTimeout); err == nil || !strings.Contains(m.log.tail(logKeepBytes), want) {
			t.Errorf("--discovery with --initial-cluster: exit %v, log:\n%s", err, m.log.tail(logTailPrintBytes))
		}
	})
}

// TestDiscoveryURLNotAnswering: noded gives up on a discovery URL that
// does not answer with a clear error (etcd 3.4 retries it for ever).
func TestDiscoveryURLNotAnswering(t *testing.T) {
	if strings.Contains(filepath.Base(e2eBinary), "etcd") {
		t.Skip("etcd 3.4 retries an unanswering discovery URL for ever")
	}
	c := looseCluster(t)
	port := freePorts(t, 1)[0]
	m := c.newLooseMember(t, t.TempDir(), "lonely", fmt.Sprintf("--discovery=http://127.0.0.1:%d/v2/keys/discovery/x", port))
	m.start(t)
	if err := m.waitExit(t, 3*startTimeout); err == nil || !strings.Contains(m.log.tail(logKeepBytes), "discovery: too many retries") {
		t.Errorf("unanswering discovery URL: exit %v, log:\n%s", err, m.log.tail(logTailPrintBytes))
	}
	if _, err := os.Stat(filepath.Join(m.dataDir, "member")); err == nil {
		t.Errorf("a member whose discovery failed left %s/member behind", m.dataDir)
	}
}

// discoveryServicePath is Debian's etcd-discovery program.
const discoveryServicePath = "/usr/bin/discovery.etcd.io"

func TestDiscoveryV2Service(t *testing.T) {
	if _, err := os.Stat(discoveryServicePath); err != nil {
		t.Skipf("%s not installed (Debian package etcd-discovery; test.sh installs it): %v", discoveryServicePath, err)
	}
	backing := newCluster(t, 1, "--enable-v2")
	port := freePorts(t, 1)[0]
	svc := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := exec.Command(discoveryServicePath, "--etcd="+backing.members[0].clientURL, "--host="+svc, fmt.Sprintf("--addr=127.0.0.1:%d", port))
	cmd.Env = memberproc.Env()
	svcLog := &logBuffer{}
	cmd.Stdout, cmd.Stderr = svcLog, svcLog
	cmd.SysProcAttr = memberproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", discoveryServicePath, err)
	}
	t.Cleanup(func() {
		memberproc.KillGroup(cmd)
		cmd.Wait()
		if t.Failed() {
			t.Logf("==== discovery service log ====\n%s", svcLog.tail(logTailPrintBytes))
		}
	})
	// A new token, as operators get one: GET /new?size=3.
	var durl string
	waitUntil(t, "the discovery service to hand out a token", func() bool {
		resp, err := http.Get(svc + "/new?size=3")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		durl = strings.TrimSpace(string(b))
		return resp.StatusCode == http.StatusOK && strings.HasPrefix(durl, svc+"/")
	})
	c := looseCluster(t)
	formByDiscovery(t, c, t.TempDir(), durl, 3)
	// The token's registrations are in the backing cluster's v2 tree.
	token := strings.TrimPrefix(durl, svc+"/")
	r := v2Do(t, "GET", backing.members[0].clientURL+"/v2/keys/_etcd/registry/"+token, nil)
	if ev := wantEvent(t, r, http.StatusOK, "get"); len(ev.Node.Nodes) != 3 {
		t.Errorf("registrations under the token: %s, want 3", r.body)
	}
}

// TestSingleDashFlags: the guides' command lines spell long flags with one
// dash (etcd's flag package takes both); a member started so serves.
func TestSingleDashFlags(t *testing.T) {
	c := looseCluster(t)
	m := c.newLooseMember(t, t.TempDir(), "solo")
	for i, a := range m.args {
		m.args[i] = strings.TrimPrefix(a, "-")
	}
	m.args = append(m.args, "-initial-cluster", "solo="+m.peerURL, "-initial-cluster-state", "new")
	m.start(t)
	m.waitReady(t)
}

// TestDiscoveryV3: --discovery-token with --discovery-endpoints (etcd
// 3.6's protocol) on a cluster holding the token's size key.
func TestDiscoveryV3(t *testing.T) {
	requireE2E(t)
	if out, _ := exec.Command(e2eBinary, "--version").Output(); strings.Contains(string(out), "etcd Version: 3.4.") {
		t.Skip("etcd 3.4 has no v3 discovery; run against etcd 3.6 or later")
	}
	backing := newCluster(t, 1)
	token := fmt.Sprintf("v3tok%d", time.Now().UnixNano())
	cli := backing.client(t)
	if _, err := cli.Put(ctxTimeout(t), "/_etcd/registry/"+token+"/_config/size", "3"); err != nil {
		t.Fatal(err)
	}
	c := looseCluster(t)
	dir := t.TempDir()
	flags := []string{"--discovery-token=" + token, "--discovery-endpoints=" + backing.members[0].clientURL}
	var ms []*e2eMember
	for i := 0; i < 3; i++ {
		ms = append(ms, c.newLooseMember(t, dir, fmt.Sprintf("v%d", i), flags...))
	}
	for i, m := range ms {
		m.start(t)
		if i < len(ms)-1 {
			// The first waits for the others' registrations, not only reads them.
			waitUntil(t, m.name+" to register", func() bool {
				resp, err := cli.Get(ctxTimeout(t), "/_etcd/registry/"+token+"/members/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				return err == nil && resp.Count > int64(i)
			})
		}
	}
	for _, m := range ms {
		m.waitReady(t)
	}
	resp, err := c.client(t, ms[0].clientURL).MemberList(ctxTimeout(t))
	if err != nil || len(resp.Members) != 3 {
		t.Fatalf("member list: %v %v, want 3 members", resp, err)
	}
	extra := c.newLooseMember(t, dir, "v-extra", flags...)
	extra.start(t)
	if err := extra.waitExit(t, startTimeout); err == nil || !strings.Contains(extra.log.tail(logKeepBytes), "discovery: cluster is full") {
		t.Errorf("a fourth member on a full v3 token: exit %v, log:\n%s", err, extra.log.tail(logTailPrintBytes))
	}
	noSize := c.newLooseMember(t, dir, "v-nosize", "--discovery-token=none"+token, "--discovery-endpoints="+backing.members[0].clientURL)
	noSize.start(t)
	if err := noSize.waitExit(t, startTimeout); err == nil || !strings.Contains(noSize.log.tail(logKeepBytes), "discovery: size key not found") {
		t.Errorf("a token without a size key: exit %v, log:\n%s", err, noSize.log.tail(logTailPrintBytes))
	}
}
