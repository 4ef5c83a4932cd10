package main

// Debian's etcdctl 3.4 against a 3-member cluster. Scripts parse etcdctl's
// output, so the output is checked exactly as etcd makes etcdctl print it;
// values etcdctl prints from the server (revisions, IDs) are checked against
// what client/v3 reads from the same cluster.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/noded/noded/cmd/internal/memberproc"
)

// etcdctlTimeout bounds one etcdctl run.
const etcdctlTimeout = 60 * time.Second

type ctlResult struct {
	stdout, stderr string
	exitCode       int
}

// lastStderrLine is etcdctl's `Error: ...` line: the client library may log
// retry warnings above it.
func (r ctlResult) lastStderrLine() string {
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	return lines[len(lines)-1]
}

func etcdctlPath(t *testing.T) string {
	t.Helper()
	name := os.Getenv("NODED_E2E_ETCDCTL")
	if name == "" {
		name = "etcdctl"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("etcdctl not found (test.sh installs Debian's etcd-client): %v", err)
	}
	return path
}

func etcdctlCommand(ctx context.Context, t *testing.T, endpoints []string, args ...string) *exec.Cmd {
	t.Helper()
	full := append([]string{
		"--endpoints=" + strings.Join(endpoints, ","),
		// Longer than the defaults (2s, 5s) for a loaded machine; timeouts
		// change no output.
		"--dial-timeout=10s",
		"--command-timeout=30s",
	}, args...)
	cmd := exec.CommandContext(ctx, etcdctlPath(t), full...)
	cmd.Env = append(memberproc.Env(), "ETCDCTL_API=3")
	cmd.SysProcAttr = memberproc.SysProcAttr()
	return cmd
}

// etcdctl runs one etcdctl command to its end, with stdin as its input.
func etcdctl(t *testing.T, endpoints []string, stdin string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), etcdctlTimeout)
	defer cancel()
	cmd := etcdctlCommand(ctx, t, endpoints, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return runCtl(ctx, t, cmd, args)
}

// runCtl runs an etcdctl command built with ctx to its end and collects
// its outputs and exit code.
func runCtl(ctx context.Context, t *testing.T, cmd *exec.Cmd, args []string) ctlResult {
	t.Helper()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := ctlResult{stdout: stdout.String(), stderr: stderr.String()}
	if exitErr, ok := err.(*exec.ExitError); ok {
		res.exitCode = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("etcdctl %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("etcdctl %v did not finish in %v; stderr: %s", args, etcdctlTimeout, res.stderr)
	}
	return res
}

// wantCtl runs etcdctl and checks that it succeeds printing exactly want.
func wantCtl(t *testing.T, endpoints []string, want string, args ...string) {
	t.Helper()
	res := etcdctl(t, endpoints, "", args...)
	if res.exitCode != 0 || res.stdout != want {
		t.Errorf("etcdctl %s: exit %d stdout %q stderr %q, want exit 0 stdout %q", strings.Join(args, " "), res.exitCode, res.stdout, res.stderr, want)
	}
}

// wantCtlError runs etcdctl and checks that it fails with exitCode and last
// stderr line errLine, printing nothing on stdout.
func wantCtlError(t *testing.T, endpoints []string, stdin string, exitCode int, errLine string, args ...string) {
	t.Helper()
	res := etcdctl(t, endpoints, stdin, args...)
	if res.exitCode != exitCode || res.lastStderrLine() != errLine || res.stdout != "" {
		t.Errorf("etcdctl %s: exit %d stdout %q last stderr line %q, want exit %d, no stdout, %q", strings.Join(args, " "), res.exitCode, res.stdout, res.lastStderrLine(), exitCode, errLine)
	}
}

func TestEtcdctl(t *testing.T) {
	etcdctlPath(t)
	c := newCluster(t, 3)
	all := c.endpoints()
	one := []string{c.members[1].clientURL}
	cli := c.client(t)

	t.Run("PutGet", func(t *testing.T) {
		wantCtl(t, one, "OK\n", "put", "ctl/a", "1")
		wantCtl(t, all, "OK\n", "put", "ctl/b", "two words")
		wantCtl(t, all, "ctl/a\n1\n", "get", "ctl/a")
		wantCtl(t, all, "ctl/a\n1\nctl/b\ntwo words\n", "get", "--prefix", "ctl/")
		wantCtl(t, all, "1\ntwo words\n", "get", "--prefix", "--print-value-only", "ctl/")
		wantCtl(t, all, "ctl/a\n\nctl/b\n\n", "get", "--prefix", "--keys-only", "ctl/")
		wantCtl(t, all, "ctl/b\ntwo words\nctl/a\n1\n", "get", "--prefix", "--order=DESCEND", "ctl/")
		wantCtl(t, all, "ctl/a\n1\n", "get", "--prefix", "--limit=1", "ctl/")
		wantCtl(t, all, "", "get", "ctl/missing")

		// Overwrite, then read the old value at its revision.
		first := mustGet(t, cli, "ctl/a").Kvs[0]
		wantCtl(t, one, "OK\n", "put", "ctl/a", "one")
		wantCtl(t, all, "ctl/a\none\n", "get", "ctl/a")
		wantCtl(t, all, "ctl/a\n1\n", "get", "ctl/a", fmt.Sprintf("--rev=%d", first.ModRevision))
	})

	t.Run("GetJSON", func(t *testing.T) {
		wantCtl(t, all, "OK\n", "put", "ctl/json", "value")
		kv := mustGet(t, cli, "ctl/json")
		res := etcdctl(t, all, "", "get", "ctl/json", "-w", "json")
		if res.exitCode != 0 {
			t.Fatalf("get -w json: exit %d stderr %s", res.exitCode, res.stderr)
		}
		got := decodeJSON(t, res.stdout)
		wantJSONKeys(t, "get -w json", got, "count", "header", "kvs")
		header := wantJSONHeader(t, "get -w json", got["header"], c, cli, true)
		if rev := jsonInt(t, header["revision"]); rev < kv.Kvs[0].ModRevision {
			t.Errorf("get -w json: header revision %d before the key's mod_revision %d", rev, kv.Kvs[0].ModRevision)
		}
		if count := jsonInt(t, got["count"]); count != 1 {
			t.Errorf("get -w json: count %d, want 1", count)
		}
		kvs, _ := got["kvs"].([]any)
		if len(kvs) != 1 {
			t.Fatalf("get -w json: kvs %v, want one", got["kvs"])
		}
		jkv, _ := kvs[0].(map[string]any)
		// A key without a lease has no "lease" field: zero values are left out.
		wantJSONKeys(t, "get -w json kv", jkv, "create_revision", "key", "mod_revision", "value", "version")
		want := kv.Kvs[0]
		if jkv["key"] != base64.StdEncoding.EncodeToString(want.Key) || jkv["value"] != base64.StdEncoding.EncodeToString(want.Value) ||
			jsonInt(t, jkv["create_revision"]) != want.CreateRevision || jsonInt(t, jkv["mod_revision"]) != want.ModRevision ||
			jsonInt(t, jkv["version"]) != want.Version {
			t.Errorf("get -w json kv: %v, want %v", jkv, want)
		}
	})

	t.Run("Del", func(t *testing.T) {
		for _, k := range []string{"del/a", "del/b", "del/c"} {
			wantCtl(t, all, "OK\n", "put", k, "v")
		}
		wantCtl(t, all, "1\n", "del", "del/a")
		wantCtl(t, all, "0\n", "del", "del/a")
		wantCtl(t, all, "2\n", "del", "--prefix", "del/")
		wantCtl(t, all, "", "get", "--prefix", "del/")
		wantCtl(t, all, "OK\n", "put", "del/p", "old")
		wantCtl(t, all, "1\ndel/p\nold\n", "del", "--prev-kv", "del/p")
	})

	t.Run("Watch", func(t *testing.T) {
		// From the next revision on, so no event can slip in before the
		// watch is set up.
		next := mustGet(t, cli, "watch-probe").Header.Revision + 1
		ctx, cancel := context.WithTimeout(context.Background(), etcdctlTimeout)
		defer cancel()
		cmd := etcdctlCommand(ctx, t, []string{c.members[2].clientURL}, "watch", "--prefix", "--prev-kv", fmt.Sprintf("--rev=%d", next), "ctl/w/")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("etcdctl watch: %v", err)
		}
		defer func() {
			_ = memberproc.KillGroup(cmd)
			_ = cmd.Wait()
		}()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		wantCtl(t, one, "OK\n", "put", "ctl/w/k", "a")
		wantCtl(t, one, "OK\n", "put", "ctl/other", "x")
		wantCtl(t, one, "OK\n", "put", "ctl/w/k", "b")
		wantCtl(t, one, "1\n", "del", "ctl/w/k")
		// With --prev-kv etcdctl prints the previous key and value before
		// the event's; a deletion's own value is empty.
		want := []string{
			"PUT", "ctl/w/k", "a",
			"PUT", "ctl/w/k", "a", "ctl/w/k", "b",
			"DELETE", "ctl/w/k", "b", "ctl/w/k", "",
		}
		var got []string
		timeout := time.After(waitTimeout)
		for len(got) < len(want) {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("etcdctl watch ended after %q; stderr: %s", got, stderr.String())
				}
				got = append(got, line)
			case <-timeout:
				t.Fatalf("etcdctl watch printed %q in %v, want %q", got, waitTimeout, want)
			}
		}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Errorf("etcdctl watch printed %q, want %q", got, want)
		}
	})

	t.Run("Lease", func(t *testing.T) {
		res := etcdctl(t, all, "", "lease", "grant", "60")
		m := regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\(60s\)\n$`).FindStringSubmatch(res.stdout)
		if res.exitCode != 0 || m == nil {
			t.Fatalf("lease grant 60: exit %d stdout %q stderr %q", res.exitCode, res.stdout, res.stderr)
		}
		id := m[1]
		wantCtl(t, all, "OK\n", "put", "--lease="+id, "ctl/leased", "v")
		leaseID, _ := strconv.ParseInt(id, 16, 64)
		if kv := mustGet(t, cli, "ctl/leased"); len(kv.Kvs) != 1 || kv.Kvs[0].Lease != leaseID {
			t.Errorf("key put with --lease=%s: %v", id, kv.Kvs)
		}

		remaining := regexp.MustCompile(`^lease ` + id + ` granted with TTL\(60s\), remaining\((\d+)s\)(, attached keys\(\[ctl/leased\]\))?\n$`)
		for _, args := range [][]string{{"lease", "timetolive", id}, {"lease", "timetolive", "--keys", id}} {
			res := etcdctl(t, all, "", args...)
			m := remaining.FindStringSubmatch(res.stdout)
			if res.exitCode != 0 || m == nil {
				t.Errorf("etcdctl %v: exit %d stdout %q stderr %q", args, res.exitCode, res.stdout, res.stderr)
				continue
			}
			if left, _ := strconv.Atoi(m[1]); left > 60 {
				t.Errorf("etcdctl %v: remaining %ds of a 60s lease", args, left)
			}
			if withKeys := len(args) == 4; withKeys != (m[2] != "") {
				t.Errorf("etcdctl %v: attached keys printed %v, want %v", args, m[2] != "", withKeys)
			}
		}
		wantCtl(t, all, "found 1 leases\n"+id+"\n", "lease", "list")
		wantCtl(t, all, "lease "+id+" keepalived with TTL(60)\n", "lease", "keep-alive", "--once", id)
		wantCtl(t, all, "lease "+id+" revoked\n", "lease", "revoke", id)
		wantCtl(t, all, "", "get", "ctl/leased")
		wantCtl(t, all, "lease "+id+" already expired\n", "lease", "timetolive", id)
		wantCtl(t, all, "found 0 leases\n", "lease", "list")
		wantCtlError(t, all, "", 1, "Error: failed to revoke lease (etcdserver: requested lease not found)", "lease", "revoke", id)
	})

	t.Run("Txn", func(t *testing.T) {
		wantCtl(t, all, "OK\n", "put", "ctl/x", "1")
		// Interactive mode prints its prompts, then the outcome and each
		// response after a blank line.
		prompts := "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
		script := "value(\"ctl/x\") = \"1\"\n\nput ctl/x 2\nget ctl/x\n\nget ctl/x\n\n"
		for _, tc := range []struct{ name, want string }{
			{"success", prompts + "SUCCESS\n\nOK\n\nctl/x\n2\n"},
			{"failure", prompts + "FAILURE\n\nctl/x\n2\n"},
		} {
			res := etcdctl(t, all, script, "txn", "-i")
			if res.exitCode != 0 || res.stdout != tc.want {
				t.Errorf("txn -i (%s branch): exit %d stdout %q stderr %q, want %q", tc.name, res.exitCode, res.stdout, res.stderr, tc.want)
			}
		}
		// Without -i the same script prints no prompts.
		res := etcdctl(t, all, "mod(\"ctl/x\") > \"0\"\nver(\"ctl/x\") = \"2\"\n\ndel ctl/x\n\n\n", "txn")
		if want := "SUCCESS\n\n1\n"; res.exitCode != 0 || res.stdout != want {
			t.Errorf("txn: exit %d stdout %q stderr %q, want %q", res.exitCode, res.stdout, res.stderr, want)
		}
		wantCtlError(t, all, "\nput ctl/d 1\nput ctl/d 2\n\n\n", 1, "Error: etcdserver: duplicate key given in txn request", "txn")
	})

	t.Run("MemberList", func(t *testing.T) {
		resp, err := cli.MemberList(ctxTimeout(t))
		if err != nil {
			t.Fatalf("member list: %v", err)
		}
		idOf := map[string]uint64{}
		var ids []uint64
		for _, m := range resp.Members {
			idOf[m.Name] = m.ID
			ids = append(ids, m.ID)
		}
		// etcd lists members in ascending ID order.
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		row := map[uint64]string{}
		for _, m := range c.members {
			row[idOf[m.name]] = fmt.Sprintf("%x, started, %s, %s, %s, false", idOf[m.name], m.name, m.peerURL, m.clientURL)
		}
		var want strings.Builder
		for _, id := range ids {
			want.WriteString(row[id] + "\n")
		}
		wantCtl(t, all, want.String(), "member", "list")

		res := etcdctl(t, all, "", "member", "list", "-w", "json")
		if res.exitCode != 0 {
			t.Fatalf("member list -w json: exit %d stderr %s", res.exitCode, res.stderr)
		}
		got := decodeJSON(t, res.stdout)
		wantJSONKeys(t, "member list -w json", got, "header", "members")
		// Cluster calls carry no store revision.
		wantJSONHeader(t, "member list -w json", got["header"], c, cli, false)
		members, _ := got["members"].([]any)
		if len(members) != len(c.members) {
			t.Fatalf("member list -w json: %d members, want %d", len(members), len(c.members))
		}
		for i, jm := range members {
			m, _ := jm.(map[string]any)
			wantJSONKeys(t, "member list -w json member", m, "ID", "clientURLs", "name", "peerURLs")
			if uint64(jsonInt(t, m["ID"])) != ids[i] {
				t.Errorf("member list -w json: member %d has ID %v, want %d", i, m["ID"], ids[i])
			}
		}
	})

	t.Run("EndpointHealth", func(t *testing.T) {
		healthy := regexp.MustCompile(`^(\S+) is healthy: successfully committed proposal: took = (\S+)$`)
		for _, args := range [][]string{{"endpoint", "health"}, {"endpoint", "health", "--cluster"}} {
			eps := all
			if len(args) == 3 {
				// --cluster asks the member list for the endpoints.
				eps = one
			}
			res := etcdctl(t, eps, "", args...)
			// etcdctl 3.4 prints the health lines on stderr.
			if res.stdout != "" {
				t.Errorf("etcdctl %v: stdout %q, want none", args, res.stdout)
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n") {
				m := healthy.FindStringSubmatch(line)
				if m == nil {
					t.Errorf("etcdctl %v: line %q is not a healthy line", args, line)
					continue
				}
				if _, err := time.ParseDuration(m[2]); err != nil {
					t.Errorf("etcdctl %v: took %q: %v", args, m[2], err)
				}
				got = append(got, m[1])
			}
			if res.exitCode != 0 || fmt.Sprint(sortedStrings(got)) != fmt.Sprint(sortedStrings(all)) {
				t.Errorf("etcdctl %v: exit %d, healthy endpoints %v, want %v", args, res.exitCode, got, all)
			}
		}
	})

	t.Run("EndpointStatus", func(t *testing.T) {
		resp, err := cli.MemberList(ctxTimeout(t))
		if err != nil {
			t.Fatalf("member list: %v", err)
		}
		memberIDs := map[uint64]bool{}
		for _, m := range resp.Members {
			memberIDs[m.ID] = true
		}

		res := etcdctl(t, all, "", "endpoint", "status", "-w", "json")
		if res.exitCode != 0 {
			t.Fatalf("endpoint status -w json: exit %d stderr %s", res.exitCode, res.stderr)
		}
		var statuses []map[string]any
		dec := json.NewDecoder(strings.NewReader(res.stdout))
		dec.UseNumber()
		if err := dec.Decode(&statuses); err != nil {
			t.Fatalf("endpoint status -w json: %v in %q", err, res.stdout)
		}
		var endpoints []string
		leaders := map[int64]bool{}
		seen := map[uint64]bool{}
		for _, s := range statuses {
			wantJSONKeys(t, "endpoint status -w json", s, "Endpoint", "Status")
			endpoints = append(endpoints, fmt.Sprint(s["Endpoint"]))
			st, _ := s["Status"].(map[string]any)
			// dbSizeInUse and raftAppliedIndex are 3.4's additions; errors
			// and isLearner are left out while empty and false.
			wantJSONKeys(t, "endpoint status -w json Status", st, "dbSize", "dbSizeInUse", "header", "leader", "raftAppliedIndex", "raftIndex", "raftTerm", "version")
			header := wantJSONHeader(t, "endpoint status -w json", st["header"], c, cli, true)
			seen[uint64(jsonInt(t, header["member_id"]))] = true
			leaders[jsonInt(t, st["leader"])] = true
			for _, field := range []string{"dbSize", "dbSizeInUse", "raftAppliedIndex", "raftIndex", "raftTerm"} {
				if jsonInt(t, st[field]) <= 0 {
					t.Errorf("endpoint status -w json of %s: %s = %v, want > 0", s["Endpoint"], field, st[field])
				}
			}
			if v, _ := st["version"].(string); !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
				t.Errorf("endpoint status -w json of %s: version %q", s["Endpoint"], v)
			}
		}
		if fmt.Sprint(sortedStrings(endpoints)) != fmt.Sprint(sortedStrings(all)) || len(seen) != len(c.members) {
			t.Errorf("endpoint status -w json: endpoints %v members %v, want %v", endpoints, seen, all)
		}
		for leader := range leaders {
			if len(leaders) != 1 || !memberIDs[uint64(leader)] {
				t.Errorf("endpoint status -w json: leaders %v, want one member", leaders)
			}
		}

		res = etcdctl(t, all, "", "endpoint", "status", "-w", "table")
		lines := strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n")
		header := regexp.MustCompile(`^\| +ENDPOINT +\| +ID +\| VERSION \| DB SIZE \| IS LEADER \| IS LEARNER \| RAFT TERM \| RAFT INDEX \| RAFT APPLIED INDEX \| ERRORS \|$`)
		row := regexp.MustCompile(`^\| (http://\S+) \| +([0-9a-f]+) \| +\d+\.\d+\.\d+ \| +\d+(\.\d+)? [kMG]?B \| +(true|false) \| +false \| +\d+ \| +\d+ \| +\d+ \| +\|$`)
		if res.exitCode != 0 || len(lines) != 3+len(c.members)+1 || !header.MatchString(lines[1]) {
			t.Fatalf("endpoint status -w table: exit %d stdout:\n%s\nstderr %s", res.exitCode, res.stdout, res.stderr)
		}
		isLeader := 0
		for _, line := range lines[3 : 3+len(c.members)] {
			m := row.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("endpoint status -w table: row %q", line)
				continue
			}
			id, _ := strconv.ParseUint(m[2], 16, 64)
			if !memberIDs[id] {
				t.Errorf("endpoint status -w table: row %q names no member", line)
			}
			if m[4] == "true" {
				isLeader++
			}
		}
		if isLeader != 1 {
			t.Errorf("endpoint status -w table: %d rows say IS LEADER true, want 1:\n%s", isLeader, res.stdout)
		}
	})

	t.Run("EndpointHashKV", func(t *testing.T) {
		rev := mustGet(t, cli, "hashkv-probe").Header.Revision
		for _, m := range c.members {
			waitApplied(t, c.client(t, m.clientURL), m.name, rev)
		}
		res := etcdctl(t, all, "", "endpoint", "hashkv", fmt.Sprintf("--rev=%d", rev))
		line := regexp.MustCompile(`^(http://\S+), (\d+)$`)
		hashes := map[string][]string{}
		for _, l := range strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("endpoint hashkv: line %q", l)
				continue
			}
			hashes[m[2]] = append(hashes[m[2]], m[1])
		}
		if res.exitCode != 0 || len(hashes) != 1 {
			t.Errorf("endpoint hashkv --rev=%d: exit %d, hashes %v, want one hash for all; stderr %q", rev, res.exitCode, hashes, res.stderr)
		}
	})

	// Last: it compacts the history.
	t.Run("Errors", func(t *testing.T) {
		rev := mustGet(t, cli, "errors-probe").Header.Revision
		wantCtlError(t, all, "", 1, "Error: "+futureRevErrText, "get", "ctl/a", fmt.Sprintf("--rev=%d", rev+1000))
		wantCtlError(t, all, "", 1, "Error: etcdserver: requested lease not found", "put", "--lease=1234abcd", "ctl/nolease", "v")
		// etcdctl exits 2 here: it counts a failed keepalive as a bad connection.
		wantCtlError(t, all, "", 2, "Error: etcdserver: requested lease not found", "lease", "keep-alive", "--once", "1234abcd")

		wantCtl(t, all, "OK\n", "put", "ctl/c", "1")
		wantCtl(t, all, "OK\n", "put", "ctl/c", "2")
		compactAt := mustGet(t, cli, "ctl/c").Kvs[0].ModRevision
		wantCtl(t, all, fmt.Sprintf("compacted revision %d\n", compactAt), "compaction", fmt.Sprint(compactAt))
		wantCtlError(t, all, "", 1, "Error: "+compactedErrText, "compaction", fmt.Sprint(compactAt))
		wantCtlError(t, all, "", 1, "Error: "+compactedErrText, "get", "ctl/c", fmt.Sprintf("--rev=%d", compactAt-1))
		wantCtl(t, all, "ctl/c\n2\n", "get", "ctl/c", fmt.Sprintf("--rev=%d", compactAt))
	})
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	// IDs are 64-bit: float64 would round them.
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode JSON %q: %v", s, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("JSON %q: more after the object", s)
	}
	return v
}

// wantJSONKeys checks that obj has exactly the given fields.
func wantJSONKeys(t *testing.T, what string, obj map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range obj {
		got = append(got, k)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Errorf("%s: fields %v, want %v", what, got, keys)
	}
}

// wantJSONHeader checks a response header as etcdctl prints it: the cluster's
// ID, one of its members, a raft term and (for KV and maintenance calls) a
// store revision.
func wantJSONHeader(t *testing.T, what string, v any, c *e2eCluster, cli *clientv3.Client, withRevision bool) map[string]any {
	t.Helper()
	header, _ := v.(map[string]any)
	if withRevision {
		wantJSONKeys(t, what+" header", header, "cluster_id", "member_id", "raft_term", "revision")
	} else {
		wantJSONKeys(t, what+" header", header, "cluster_id", "member_id", "raft_term")
	}
	resp, err := cli.MemberList(ctxTimeout(t))
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	if got := uint64(jsonInt(t, header["cluster_id"])); got != resp.Header.ClusterId {
		t.Errorf("%s: cluster_id %d, want %d", what, got, resp.Header.ClusterId)
	}
	member := uint64(jsonInt(t, header["member_id"]))
	found := false
	for _, m := range resp.Members {
		found = found || m.ID == member
	}
	if !found || jsonInt(t, header["raft_term"]) <= 0 {
		t.Errorf("%s: header %v names no member or no term", what, header)
	}
	return header
}

// jsonInt reads a JSON number as the 64-bit integer etcdctl printed; member
// and cluster IDs print as unsigned and may exceed int64.
func jsonInt(t *testing.T, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Errorf("JSON value %v (%T) is not a number", v, v)
		return 0
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i
	}
	u, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		t.Errorf("JSON number %s is not a 64-bit integer", n)
	}
	return int64(u)
}
