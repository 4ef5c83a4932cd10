package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The log lines operators' scripts and runbooks wait on, with etcd's
// wording and JSON fields: the same test passes against etcd
// (NODED_E2E_BINARY=etcd, which needs --logger=zap before 3.5).
func TestLogLinesScriptsWaitOn(t *testing.T) {
	c := newCluster(t, 1, "--logger=zap", "--log-outputs=stderr")
	m := c.members[0]
	cli := c.client(t)
	added, err := cli.MemberAddAsLearner(ctxTimeout(t), []string{"http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.MemberRemove(ctxTimeout(t), added.Member.ID); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, m, "removed member", nil)
	m.mu.Lock()
	proc, exited := m.cmd.Process, m.exited
	m.killedByTest = true
	m.mu.Unlock()
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(startTimeout):
		t.Fatalf("member did not exit after SIGTERM")
	}
	for _, want := range []struct {
		msg    string
		fields []string
	}{
		{"ready to serve client requests", nil},
		{"serving client traffic insecurely; this is strongly discouraged!", []string{"traffic", "address"}},
		{"published local member to cluster through raft", []string{"local-member-id", "cluster-id"}},
		{"elected leader", nil},
		{"added member", []string{"cluster-id", "local-member-id", "added-peer-id", "added-peer-peer-urls", "added-peer-is-learner"}},
		{"removed member", []string{"removed-remote-peer-id"}},
		{"received signal; shutting down", []string{"signal"}},
	} {
		waitLogged(t, m, want.msg, want.fields)
	}
}

// waitLogged waits until the member's log has a JSON line whose msg
// contains msg and that carries fields, with ts, level and caller as etcd
// writes every line.
func waitLogged(t *testing.T, m *e2eMember, msg string, fields []string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		for _, line := range strings.Split(m.log.tail(logKeepBytes), "\n") {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) != nil {
				continue
			}
			if s, _ := entry["msg"].(string); !strings.Contains(s, msg) {
				continue
			}
			ok := true
			for _, f := range append([]string{"ts", "level", "caller"}, fields...) {
				if _, has := entry[f]; !has {
					ok = false
				}
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q with fields %v", msg, fields)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
