package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// Users, roles and permissions move with the data: an etcd cluster with
// auth on, snapshot, restored into noded, asks for the same credentials
// and grants the same keys; and back from noded into etcd.
func TestE2EAuthMovesWithSnapshots(t *testing.T) {
	requireNodedE2E(t)
	for _, rel := range etcdReleases {
		t.Run(rel.name, func(t *testing.T) {
			r := rel.release(t)
			src := planCluster(t, r.etcd, 1)
			src.startAll(t)
			ep := []string{src.members[0].clientURL}
			for _, args := range [][]string{
				{"user", "add", "root", "--new-user-password=rootpw"},
				{"role", "add", "root"},
				{"user", "grant-role", "root", "root"},
				{"user", "add", "alice", "--new-user-password=alicepw"},
				{"role", "add", "app"},
				{"role", "grant-permission", "--prefix=true", "app", "readwrite", "/app/"},
				{"user", "grant-role", "alice", "app"},
				{"auth", "enable"},
			} {
				if res := etcdctl(t, ep, "", args...); res.exitCode != 0 {
					t.Fatalf("etcdctl %v: exit %d %s%s", args, res.exitCode, res.stdout, res.stderr)
				}
			}
			wantCtl(t, ep, "OK\n", "--user=alice:alicepw", "put", "/app/x", "from-etcd")
			snapshot := filepath.Join(t.TempDir(), "auth.db")
			if res := etcdctl(t, ep, "", "--user=root:rootpw", "snapshot", "save", snapshot); res.exitCode != 0 {
				t.Fatalf("snapshot save: exit %d %s%s", res.exitCode, res.stdout, res.stderr)
			}
			src.members[0].stop(t)

			dst := planCluster(t, "", 1)
			restoreNoded(t, dst, snapshot)
			dst.startAll(t)
			checkAuthHolds(t, []string{dst.members[0].clientURL}, "noded restored from etcd "+r.name)

			// And back: noded's snapshot restores into etcd with the same auth.
			back := filepath.Join(t.TempDir(), "back.db")
			if res := etcdctl(t, []string{dst.members[0].clientURL}, "", "--user=root:rootpw", "snapshot", "save", back); res.exitCode != 0 {
				t.Fatalf("snapshot save from noded: exit %d %s%s", res.exitCode, res.stdout, res.stderr)
			}
			dst.members[0].stop(t)
			again := planCluster(t, r.etcd, 1)
			restoreEtcd(t, r, again, back)
			again.startAll(t)
			checkAuthHolds(t, []string{again.members[0].clientURL}, "etcd "+r.name+" restored from noded")
		})
	}
}

// checkAuthHolds checks, with etcdctl, the users and permissions
// TestE2EAuthMovesWithSnapshots set up.
func checkAuthHolds(t *testing.T, ep []string, what string) {
	t.Helper()
	wantCtl(t, ep, "/app/x\nfrom-etcd\n", "--user=alice:alicepw", "get", "/app/x")
	if res := etcdctl(t, ep, "", "--user=alice:wrong", "get", "/app/x"); res.exitCode == 0 || !strings.Contains(res.stderr, "authentication failed") {
		t.Errorf("%s: a wrong password: exit %d stderr %q, want authentication failed", what, res.exitCode, res.stderr)
	}
	if res := etcdctl(t, ep, "", "--user=alice:alicepw", "get", "/other"); res.exitCode == 0 || !strings.Contains(res.stderr, "permission denied") {
		t.Errorf("%s: alice reading /other: exit %d stderr %q, want permission denied", what, res.exitCode, res.stderr)
	}
	if res := etcdctl(t, ep, "", "get", "/app/x"); res.exitCode == 0 || !strings.Contains(res.stderr, "user name is empty") {
		t.Errorf("%s: no user: exit %d stderr %q, want user name is empty", what, res.exitCode, res.stderr)
	}
	wantCtl(t, ep, "alice\nroot\n", "--user=root:rootpw", "user", "list")
	wantCtl(t, ep, "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n", "--user=root:rootpw", "role", "get", "app")
}
