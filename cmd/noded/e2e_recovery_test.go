package main

// Recovery that says what it did (issue 17, items 4 and 5): a member
// stopped with kill -9, its data directory damaged the way disks and
// crashes damage it, then started again. Each repair it makes is logged as
// a warning naming the file, the offset and the bytes; damage it must not
// repair is refused with the offset of the first damaged byte; nothing
// acknowledged is lost.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// recoveryKeys is how many keys each recovery test writes (and reads back).
const recoveryKeys = 300

// putKeys writes keys rec/0 .. rec/n-1, each acknowledged before the next.
func putKeys(t *testing.T, c *e2eCluster, n int) {
	t.Helper()
	cli := c.client(t)
	for i := 0; i < n; i++ {
		if _, err := cli.Put(ctxTimeout(t), fmt.Sprintf("rec/%04d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
}

// wantKeys checks that every acknowledged key reads back.
func wantKeys(t *testing.T, c *e2eCluster, n int) {
	t.Helper()
	resp := mustGet(t, c.client(t), "rec/", clientv3.WithPrefix())
	if len(resp.Kvs) != n {
		t.Fatalf("%d keys after the restart, %d were acknowledged", len(resp.Kvs), n)
	}
	for i, kv := range resp.Kvs {
		if string(kv.Key) != fmt.Sprintf("rec/%04d", i) || string(kv.Value) != fmt.Sprintf("v%d", i) {
			t.Fatalf("key %d reads %s=%s", i, kv.Key, kv.Value)
		}
	}
}

// newestSegment returns the path of the member's newest WAL segment and
// where its data ends (one past its last non-zero byte).
func newestSegment(t *testing.T, m *e2eMember) (string, int64) {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(m.dataDir, "member", "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no WAL segments in %s: %v", m.dataDir, err)
	}
	sort.Strings(segs)
	data, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	return segs[len(segs)-1], int64(len(bytes.TrimRight(data, "\x00")))
}

// waitSnapshotsSaved waits until the member has saved and committed at
// least n local snapshots (its count of snapshot saves, which it records
// once a snapshot's WAL record is synced).
func waitSnapshotsSaved(t *testing.T, m *e2eMember, n int) {
	t.Helper()
	const series = "etcd_debugging_snap_save_total_duration_seconds_count "
	waitFor(t, fmt.Sprintf("%d snapshots saved", n), func() (bool, string) {
		resp, err := http.Get(m.clientURL + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, series); ok {
				saved, err := strconv.Atoi(strings.TrimSpace(v))
				return err == nil && saved >= n, "saved: " + v
			}
		}
		return false, "no " + series
	})
}

// writeAt writes b into the file at off, in place.
func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// wantLogLine waits for a line of the member's log matching re and returns
// it.
func wantLogLine(t *testing.T, m *e2eMember, re *regexp.Regexp) string {
	t.Helper()
	var line string
	waitFor(t, "log line "+re.String(), func() (bool, string) {
		for _, l := range strings.Split(m.log.tail(logKeepBytes), "\n") {
			if re.MatchString(l) {
				line = l
				return true, ""
			}
		}
		return false, "not logged yet"
	})
	return line
}

// waitExit waits for the member's process to exit by itself and returns
// its log.
func waitExit(t *testing.T, m *e2eMember) string {
	t.Helper()
	m.mu.Lock()
	exited := m.exited
	m.killedByTest = true // an exit is what the test waits for
	m.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(startTimeout):
		t.Fatalf("member %s did not exit", m.name)
	}
	return m.log.tail(logKeepBytes)
}

// TestRecoveryReports damages a stopped member's data directory in each way
// Open repairs, restarts it and checks the warning and the data.
func TestRecoveryReports(t *testing.T) {
	requireNoded(t, "the data directory's files are noded's")
	for _, tc := range []struct {
		name string
		// damage changes the data directory and returns a pattern the
		// warning must match.
		damage func(t *testing.T, m *e2eMember) string
	}{
		{"torn WAL tail", func(t *testing.T, m *e2eMember) string {
			seg, end := newestSegment(t, m)
			writeAt(t, seg, bytes.Repeat([]byte{0x11}, 10), end) // a record header cut short
			return fmt.Sprintf(`"level":"warn".*recovery: %s: cut a torn tail of 10 bytes at offset %d`, regexp.QuoteMeta(seg), end)
		}},
		{"stray byte in the unused tail", func(t *testing.T, m *e2eMember) string {
			seg, end := newestSegment(t, m)
			writeAt(t, seg, []byte{0x5a}, end+5000)
			return fmt.Sprintf(`"level":"warn".*recovery: %s: cut 1 stray bytes at offsets %d to %d in the unused space after the last record \(which ends at offset %d\)`,
				regexp.QuoteMeta(seg), end+5000, end+5000, end)
		}},
		{"damaged newest snapshot", func(t *testing.T, m *e2eMember) string {
			snaps, _ := filepath.Glob(filepath.Join(m.dataDir, "member", "snap", "*.snap"))
			if len(snaps) < 2 {
				t.Fatalf("snapshots %v: want two or more", snaps)
			}
			sort.Strings(snaps)
			newest := snaps[len(snaps)-1]
			st, err := os.Stat(newest)
			if err != nil {
				t.Fatal(err)
			}
			writeAt(t, newest, []byte{0xff, 0xff}, st.Size()/2)
			t.Cleanup(func() {
				if _, err := os.Stat(newest + ".broken"); err != nil {
					t.Errorf("the damaged snapshot was not kept as %s.broken: %v", newest, err)
				}
				if _, err := os.Stat(newest); err == nil {
					t.Errorf("the damaged snapshot %s is still where it would be read again", newest)
				}
			})
			return fmt.Sprintf(`"level":"warn".*recovery: %s: damaged snapshot set aside as %s.broken \(not deleted, never read again\): payload checksum`,
				regexp.QuoteMeta(newest), regexp.QuoteMeta(filepath.Base(newest)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1, "--snapshot-count=100")
			putKeys(t, c, recoveryKeys)
			m := c.members[0]
			// Snapshots are written and committed behind the writes that
			// trigger them: the damage must meet committed ones.
			waitSnapshotsSaved(t, m, recoveryKeys/100)
			m.kill(t)
			want := regexp.MustCompile(tc.damage(t, m))
			m.restart(t)
			t.Log(wantLogLine(t, m, want))
			wantKeys(t, c, recoveryKeys)
			// The repair lasts: a second restart does not meet it again.
			m.kill(t)
			m.restart(t)
			if n := len(want.FindAllString(m.log.tail(logKeepBytes), -1)); n != 1 {
				t.Fatalf("after a second restart the log holds the warning %d times, want once", n)
			}
			wantKeys(t, c, recoveryKeys)
		})
	}
}

// TestRecoveryRefusals damages a stopped member's WAL in ways that could
// hide acknowledged records: the member refuses to start, naming the file
// and the offset of the first damaged byte (or the range a checksum
// covers), and changes nothing.
func TestRecoveryRefusals(t *testing.T) {
	requireNoded(t, "the data directory's files are noded's")
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, m *e2eMember) string
	}{
		{"stray end marker in the unused tail", func(t *testing.T, m *e2eMember) string {
			seg, end := newestSegment(t, m)
			writeAt(t, seg, []byte{0xe5}, end+5000)
			return fmt.Sprintf(`corrupt data in %s at offset %d: 1 non-zero bytes at offsets %d to %d, after zeros from offset %d where the last whole record ends: they end in a record end marker`,
				regexp.QuoteMeta(seg), end+5000, end+5000, end+5000, end)
		}},
		{"bit flip in the middle of the log", func(t *testing.T, m *e2eMember) string {
			seg, end := newestSegment(t, m)
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			at := end / 2
			writeAt(t, seg, []byte{data[at] ^ 0x04}, at)
			return fmt.Sprintf(`corrupt record in %s at offset \d+: .*the damage is within the record's (header|body), offsets \d+ to \d+`, regexp.QuoteMeta(seg))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			putKeys(t, c, recoveryKeys)
			m := c.members[0]
			m.kill(t)
			want := regexp.MustCompile(tc.damage(t, m))
			seg, _ := newestSegment(t, m)
			before, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			m.start(t)
			log := waitExit(t, m)
			if !want.MatchString(log) || !strings.Contains(log, "cannot start member") {
				t.Fatalf("the member's log does not refuse with %s:\n%s", want, log)
			}
			t.Log(want.FindString(log))
			after, err := os.ReadFile(seg)
			if err != nil || !bytes.Equal(before, after) {
				t.Fatalf("the refused start changed %s (%v)", seg, err)
			}
		})
	}
}
