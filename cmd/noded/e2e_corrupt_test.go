package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
)

// corruptCheckPeriod is --corrupt-check-time in the test: short, so that a
// few periods fit the generous wait below on a loaded machine.
const corruptCheckPeriod = time.Second

// TestCorruptMemberRaisesAlarm plants a divergent member (its log rewritten
// while it is down: one put's value differs, every checksum valid, so
// nothing but a comparison with the other members can tell) and checks both
// of etcd's checks: restarted with the initial check, the member refuses to
// start; restarted without it, the leader's periodic check raises CORRUPT
// naming it, the cluster refuses writes with etcd's error, and the alarm
// shows in `alarm list` and clears with `alarm disarm`.
func TestCorruptMemberRaisesAlarm(t *testing.T) {
	c, cli, victim, victimID := divergedCluster(t, 2, "k5", "--experimental-corrupt-check-time="+corruptCheckPeriod.String())

	// The initial check refuses to start it.
	initialArgs := victim.args
	victim.args = append(append([]string(nil), initialArgs...), "--experimental-initial-corrupt-check=true")
	victim.start(t)
	select {
	case <-victim.exited:
	case <-time.After(startTimeout):
		t.Fatal("a member whose data diverged started with --experimental-initial-corrupt-check")
	}
	victim.mu.Lock()
	victim.killedByTest = true // its exit is what this part expects
	victim.mu.Unlock()
	if !strings.Contains(victim.log.tail(logKeepBytes), "found data inconsistency with peers") {
		t.Fatal("the member refused to start without etcd's reason")
	}
	victim.args = initialArgs

	// Without it, the member starts and the leader's periodic check names it
	// (perhaps before the member serves a read: every request then fails).
	victim.start(t)
	alarms := waitCorruptAlarm(t, cli, victimID)
	for _, a := range alarms {
		if a.MemberID != victimID {
			t.Errorf("alarm %v names a member that did not diverge", a)
		}
	}
	_, err := cli.Put(ctxTimeout(t), "after", "x")
	if err == nil || !strings.Contains(err.Error(), "etcdserver: corrupt cluster") {
		t.Fatalf("put with CORRUPT raised: %v, want etcd's corrupt cluster error", err)
	}
	// Health says so, as etcd's does.
	if resp, err := http.Get(c.members[0].clientURL + "/health"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || string(body) != `{"health":"false","reason":"ALARM CORRUPT"}` {
			t.Errorf("/health with CORRUPT raised: %d %s", resp.StatusCode, body)
		}
	}
	if resp, err := http.Get(c.members[0].clientURL + "/readyz?verbose"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "[-]data_corruption failed") {
			t.Errorf("/readyz?verbose with CORRUPT raised: %d %s", resp.StatusCode, body)
		}
	}
	// etcdctl shows it as etcd's does.
	if r := etcdctl(t, c.endpoints()[:1], "", "alarm", "list"); !strings.Contains(r.stdout, fmt.Sprintf("memberID:%d alarm:CORRUPT", victimID)) {
		t.Errorf("etcdctl alarm list: %q %q", r.stdout, r.stderr)
	}
	disarmed, err := cli.AlarmDisarm(ctxTimeout(t), &clientv3.AlarmMember{MemberID: victimID, Alarm: pb.AlarmType_CORRUPT})
	if err != nil {
		t.Fatal(err)
	}
	if len(disarmed.Alarms) != 1 || disarmed.Alarms[0].MemberID != victimID {
		t.Errorf("alarm disarm answered %v", disarmed.Alarms)
	}
}

// plantDivergentValue rewrites a stopped member's log so that the put of
// key stores value instead: a valid log (every record's checksum holds)
// that disagrees with the other members' at the same index and term.
func plantDivergentValue(t *testing.T, dataDir, key, value string) {
	t.Helper()
	fsys := disk.NewOSFS("/")
	rel := func(p string) string { return strings.TrimPrefix(filepath.ToSlash(p), "/") }
	walDir := filepath.Join(dataDir, "member", "wal")
	snapDir := filepath.Join(dataDir, "member", "snap")
	st, rec, err := disk.Open(fsys, rel(walDir), rel(snapDir), disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if rec.Snapshot != nil {
		t.Fatal("the member took a snapshot; the planted put would be in it")
	}
	planted := false
	for _, e := range rec.Entries {
		r := &pb.InternalRaftRequest{}
		if len(e.GetData()) == 0 || proto.Unmarshal(e.GetData(), r) != nil || string(r.GetPut().GetKey()) != key {
			continue
		}
		r.Put.Value = []byte(value)
		data, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		e.Data = data
		planted = true
	}
	if !planted {
		t.Fatalf("no put of %q in the member's log", key)
	}
	newWAL, newSnap := filepath.Join(dataDir, "planted-wal"), filepath.Join(dataDir, "planted-snap")
	out, err := disk.Create(fsys, rel(newWAL), rel(newSnap), rec.Metadata, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(out.Append(rec.HardState, rec.Entries), out.Sync(), out.Close()); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.RemoveAll(walDir), os.RemoveAll(snapDir)); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.Rename(newWAL, walDir), os.Rename(newSnap, snapDir)); err != nil {
		t.Fatal(err)
	}
}

// TestCompactHashCheckNamesDivergentMember: with the compaction hash check
// alone (no periodic check), a compaction over the planted divergence makes
// the leader compare hashes at the compact revision and name the member.
func TestCompactHashCheckNamesDivergentMember(t *testing.T) {
	_, cli, victim, victimID := divergedCluster(t, 0, "k3", "--experimental-compact-hash-check-enabled=true", "--compact-hash-check-time=500ms")
	victim.restart(t)
	// Nothing compares hashes until a compaction.
	time.Sleep(2 * time.Second)
	if resp, err := cli.AlarmList(ctxTimeout(t)); err != nil || len(resp.Alarms) != 0 {
		t.Fatalf("alarms before any compaction: %v %v", resp, err)
	}
	put, err := cli.Put(ctxTimeout(t), "last", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctxTimeout(t), put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	waitCorruptAlarm(t, cli, victimID)
}

// divergedCluster starts three members with flags, writes k0..k9, and
// plants a divergent value of key in the stopped member at victim; it
// returns the cluster, a client, the member (down) and its ID.
func divergedCluster(t *testing.T, victim int, key string, flags ...string) (*e2eCluster, *clientv3.Client, *e2eMember, uint64) {
	t.Helper()
	if os.Getenv("NODED_E2E_BINARY") != "" {
		t.Skip("plants divergence in noded's own log format")
	}
	c := newCluster(t, 3, flags...)
	cli := c.client(t)
	for i := range 10 {
		if _, err := cli.Put(ctxTimeout(t), fmt.Sprintf("k%d", i), "good"); err != nil {
			t.Fatal(err)
		}
	}
	wantSameHashKV(t, c, cli)
	m := c.members[victim]
	st, err := cli.Status(ctxTimeout(t), m.clientURL)
	if err != nil {
		t.Fatal(err)
	}
	m.kill(t)
	plantDivergentValue(t, m.dataDir, key, "evil")
	return c, cli, m, st.Header.MemberId
}

// waitCorruptAlarm waits until the cluster's alarms name member id CORRUPT,
// and returns them.
func waitCorruptAlarm(t *testing.T, cli *clientv3.Client, id uint64) []*pb.AlarmMember {
	t.Helper()
	var alarms []*pb.AlarmMember
	waitFor(t, fmt.Sprintf("the CORRUPT alarm naming member %x", id), func() (bool, string) {
		resp, err := cli.AlarmList(ctxTimeout(t))
		if err != nil {
			return false, err.Error()
		}
		alarms = resp.Alarms
		for _, a := range alarms {
			if a.Alarm == pb.AlarmType_CORRUPT && a.MemberID == id {
				return true, ""
			}
		}
		return false, fmt.Sprint(alarms)
	})
	return alarms
}
