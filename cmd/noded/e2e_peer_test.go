package main

// The peer port as a restarted member and a hostile client see it (issue
// 17, item 6): a member restarted from its data directory knows its peers
// before it serves them, and violations of the peer protocol are warnings.

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRestartedMemberAdmitsItsPeers restarts a follower (kill -9) three
// times: it applies its log only after it starts, and must never refuse a
// peer the log names as "not a peer" meanwhile, nor be refused so.
func TestRestartedMemberAdmitsItsPeers(t *testing.T) {
	requireNoded(t, "the refusal text is noded's")
	c := newCluster(t, 3)
	cli := c.client(t)
	for i := 0; i < 50; i++ {
		if _, err := cli.Put(ctxTimeout(t), fmt.Sprintf("peer/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 3; round++ {
		leader := c.leader(t, cli)
		f := c.members[(leader+1+round%2)%3]
		f.kill(t)
		marks := make([]int, len(c.members))
		for i, m := range c.members {
			marks[i] = m.log.size()
		}
		f.restart(t)
		// A write through the restarted member: its streams to both peers
		// work (the write goes to the leader; the read waits for it here).
		fcli := c.client(t, f.clientURL)
		key := fmt.Sprintf("peer/after-restart-%d", round)
		if _, err := fcli.Put(ctxTimeout(t), key, "v"); err != nil {
			t.Fatal(err)
		}
		if resp := mustGet(t, fcli, key); len(resp.Kvs) != 1 {
			t.Fatalf("round %d: %s not read back through %s", round, key, f.name)
		}
		// Let redials settle, then look at everything logged since the kill.
		time.Sleep(2 * time.Second)
		for i, m := range c.members {
			if log := m.log.since(marks[i]); strings.Contains(log, "is not a peer of member") {
				t.Fatalf("round %d: after %s restarted, %s logged a refusal of a member as not a peer:\n%s", round, f.name, m.name, grepLines(log, "is not a peer"))
			}
		}
	}
}

// TestPeerProtocolViolationsAreWarnings: bytes on the peer port that open
// as the peer protocol and then break it, and a hello from a member the
// cluster does not have, are logged at warn; the member serves on.
func TestPeerProtocolViolationsAreWarnings(t *testing.T) {
	requireNoded(t, "the peer protocol is noded's")
	c := newCluster(t, 1)
	m := c.members[0]
	u, err := url.Parse(m.peerURL)
	if err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) {
		conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(requestTimeout))
		conn.Write(b)
		buf := make([]byte, 512)
		for { // until the member closes it
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}
	// The peer protocol's preamble, then a hello frame (kind 1) of 3 bytes.
	send([]byte{'N', 'D', 'P', 'R', 0, 0, 0, 3, 1, 0, 1, 1})
	wantLogLine(t, m, regexp.MustCompile(`"level":"warn".*peer protocol violation: hello of 3 bytes`))
	// The member still serves.
	if _, err := c.client(t).Put(ctxTimeout(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
}

// grepLines returns the lines of s holding substring.
func grepLines(s, substring string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substring) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
