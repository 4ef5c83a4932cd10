package kvsm

import (
	"encoding/base64"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// authAs stamps a request with the identity it is made under.
func authAs(r *pb.InternalRaftRequest, user string, rev uint64) *pb.InternalRaftRequest {
	r.Header = &pb.RequestHeader{Username: user, AuthRevision: rev}
	return r
}

func mustApplyAuth(t testing.TB, s *Store, r *pb.InternalRaftRequest) ApplyResult {
	t.Helper()
	res := s.Apply(r)
	if res.Err != nil {
		t.Fatalf("apply %v: %v", r, res.Err)
	}
	if err := s.CheckInvariants(); err != nil {
		t.Fatalf("after %v: %v", r, err)
	}
	return res
}

var fakeHash = base64.StdEncoding.EncodeToString([]byte("not-a-real-bcrypt-hash"))

func grantPerm(role string, typ authpb.Permission_Type, key, end string) *pb.InternalRaftRequest {
	p := &authpb.Permission{PermType: typ, Key: []byte(key)}
	if end != "" {
		p.RangeEnd = []byte(end)
	}
	return &pb.InternalRaftRequest{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: p}}
}

// authStore builds etcd's documented setup: root with the root role, user
// u with role r holding readwrite on prefix /foo/, read on key /ro, write on
// from-key /w, read on range [a, c); then auth is enabled.
func authStore(t testing.TB) *Store {
	s := New(Config{})
	for _, r := range []*pb.InternalRaftRequest{
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: fakeHash}},
		{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "root"}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}},
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", HashedPassword: fakeHash}},
		{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}},
		grantPerm("r", authpb.Permission_READWRITE, "/foo/", "/foo0"),
		grantPerm("r", authpb.Permission_READ, "/ro", ""),
		grantPerm("r", authpb.Permission_WRITE, "/w", "\x00"),
		grantPerm("r", authpb.Permission_READ, "a", "b"),
		grantPerm("r", authpb.Permission_READ, "b", "c"),
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "u", Role: "r"}},
		{AuthEnable: &pb.AuthEnableRequest{}},
	} {
		mustApplyAuth(t, s, r)
	}
	return s
}

func TestAuthPermissions(t *testing.T) {
	s := authStore(t)
	rev := s.AuthRevision()
	if rev != 12 {
		t.Fatalf("auth revision %d, want 12 (1 + eleven changes; enable does not count)", rev)
	}
	u := AuthInfo{Username: "u", Revision: rev}
	for _, tc := range []struct {
		name string
		ai   AuthInfo
		key  string
		end  string
		typ  authpb.Permission_Type
		want error
	}{
		{"read in prefix", u, "/foo/a", "", authpb.Permission_READ, nil},
		{"write in prefix", u, "/foo/a", "", authpb.Permission_WRITE, nil},
		{"prefix range", u, "/foo/", "/foo0", authpb.Permission_READ, nil},
		{"range past prefix", u, "/foo/", "/foo1", authpb.Permission_READ, rpctypes.ErrGRPCPermissionDenied},
		{"outside", u, "/bar", "", authpb.Permission_READ, rpctypes.ErrGRPCPermissionDenied},
		{"read-only key read", u, "/ro", "", authpb.Permission_READ, nil},
		{"read-only key write", u, "/ro", "", authpb.Permission_WRITE, rpctypes.ErrGRPCPermissionDenied},
		{"read-only key as range", u, "/ro", "/ro\x00", authpb.Permission_READ, nil},
		{"from-key write", u, "/wzzz", "", authpb.Permission_WRITE, nil},
		{"from-key write open range", u, "/w", "\x00", authpb.Permission_WRITE, nil},
		{"from-key no read", u, "/wzzz", "", authpb.Permission_READ, rpctypes.ErrGRPCPermissionDenied},
		{"touching ranges merge", u, "a", "c", authpb.Permission_READ, nil},
		{"past the merged end", u, "a", "c\x00", authpb.Permission_READ, rpctypes.ErrGRPCPermissionDenied},
		{"root anything", AuthInfo{Username: "root", Revision: rev}, "/x", "\x00", authpb.Permission_WRITE, nil},
		{"anonymous", AuthInfo{}, "/foo/a", "", authpb.Permission_READ, rpctypes.ErrGRPCUserEmpty},
		{"old revision", AuthInfo{Username: "u", Revision: rev - 1}, "/foo/a", "", authpb.Permission_READ, rpctypes.ErrGRPCAuthOldRevision},
		{"unknown user", AuthInfo{Username: "nobody", Revision: rev}, "/foo/a", "", authpb.Permission_READ, rpctypes.ErrGRPCPermissionDenied},
	} {
		if got := s.auth.checkOp(tc.ai, []byte(tc.key), []byte(tc.end), tc.typ); !errors.Is(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAuthAppliesPerPermission(t *testing.T) {
	s := authStore(t)
	rev := s.AuthRevision()
	if res := s.Apply(authAs(putReq("/foo/a", "1"), "u", rev)); res.Err != nil {
		t.Fatalf("permitted put: %v", res.Err)
	}
	before := s.Rev()
	refused := []struct {
		name string
		r    *pb.InternalRaftRequest
		want error
	}{
		{"put outside", authAs(putReq("/bar", "1"), "u", rev), rpctypes.ErrGRPCPermissionDenied},
		{"anonymous put", putReq("/foo/a", "1"), rpctypes.ErrGRPCUserEmpty},
		{"delete outside", authAs(delReq("/bar", ""), "u", rev), rpctypes.ErrGRPCPermissionDenied},
		{"txn with a compare outside", authAs(txnReq(&pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("/secret"), Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{}}},
			Success: []*pb.RequestOp{opPut("/foo/b", "1")},
		}), "u", rev), rpctypes.ErrGRPCPermissionDenied},
		{"txn with a nested op outside", authAs(txnReq(&pb.TxnRequest{
			Success: []*pb.RequestOp{opPut("/foo/b", "1"), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opDel("/bar", "")}})},
		}), "u", rev), rpctypes.ErrGRPCPermissionDenied},
		{"user management by a non-root", authAs(&pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "x"}}, "u", rev), rpctypes.ErrGRPCPermissionDenied},
		{"delete root while enabled", authAs(&pb.InternalRaftRequest{AuthUserDelete: &pb.AuthUserDeleteRequest{Name: "root"}}, "root", rev), rpctypes.ErrGRPCInvalidAuthMgmt},
	}
	for _, tc := range refused {
		res := s.Apply(tc.r)
		if !errors.Is(res.Err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, res.Err, tc.want)
		}
		if s.Rev() != before {
			t.Errorf("%s: a refused request changed the revision", tc.name)
		}
	}
	// The same txn is permitted when its compare is on a readable key, and
	// with the planted bug its unreadable compare is not checked.
	txn := func() *pb.InternalRaftRequest {
		return authAs(txnReq(&pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("/secret"), Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{}}},
			Success: []*pb.RequestOp{opPut("/foo/b", "1")},
		}), "u", rev)
	}
	s.cfg.PlantedAuthSkipTxnCompares = true
	if res := s.Apply(txn()); res.Err != nil {
		t.Fatalf("planted bug: txn refused: %v", res.Err)
	}
	// A permission change makes identities issued before it old.
	mustApplyAuth(t, s, authAs(grantPerm("r", authpb.Permission_READ, "/bar", ""), "root", rev))
	if res := s.Apply(authAs(putReq("/foo/a", "2"), "u", rev)); !errors.Is(res.Err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("put under an old revision: %v", res.Err)
	}
	if res := s.Apply(authAs(putReq("/foo/a", "2"), "u", s.AuthRevision())); res.Err != nil {
		t.Fatalf("put under the new revision: %v", res.Err)
	}
}

func TestAuthManagementErrors(t *testing.T) {
	s := New(Config{})
	for _, tc := range []struct {
		r    *pb.InternalRaftRequest
		want error
	}{
		{&pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}, rpctypes.ErrGRPCRootUserNotExist},
		{&pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: fakeHash}}, nil},
		{&pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: fakeHash}}, rpctypes.ErrGRPCUserAlreadyExist},
		{&pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{}}, rpctypes.ErrGRPCUserEmpty},
		{&pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}, rpctypes.ErrGRPCRootRoleNotExist},
		{&pb.InternalRaftRequest{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "nope"}}, rpctypes.ErrGRPCRoleNotFound},
		{&pb.InternalRaftRequest{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}}, nil},
		{&pb.InternalRaftRequest{AuthUserRevokeRole: &pb.AuthUserRevokeRoleRequest{Name: "root", Role: "x"}}, rpctypes.ErrGRPCRoleNotGranted},
		{&pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}}, nil},
		{&pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}}, rpctypes.ErrGRPCRoleAlreadyExist},
		{grantPerm("r", authpb.Permission_READ, "b", "a"), rpctypes.ErrGRPCInvalidAuthMgmt},
		{grantPerm("r", authpb.Permission_READ, "", ""), rpctypes.ErrGRPCInvalidAuthMgmt},
		{&pb.InternalRaftRequest{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r"}}, rpctypes.ErrGRPCPermissionNotGiven},
		{&pb.InternalRaftRequest{AuthRoleRevokePermission: &pb.AuthRoleRevokePermissionRequest{Role: "r", Key: []byte("a")}}, rpctypes.ErrGRPCPermissionNotGranted},
		{&pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: "root"}}, rpctypes.ErrGRPCAuthNotEnabled},
		{&pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}, nil},
		{&pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: "nobody"}}, rpctypes.ErrGRPCAuthFailed},
		{&pb.InternalRaftRequest{AuthRoleDelete: &pb.AuthRoleDeleteRequest{Role: "root"}, Header: &pb.RequestHeader{Username: "root"}}, rpctypes.ErrGRPCInvalidAuthMgmt},
		{&pb.InternalRaftRequest{AuthUserList: &pb.AuthUserListRequest{}}, rpctypes.ErrGRPCUserEmpty},
	} {
		if res := s.Apply(tc.r); !errors.Is(res.Err, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.r, res.Err, tc.want)
		}
		if err := s.CheckInvariants(); err != nil {
			t.Fatalf("after %v: %v", tc.r, err)
		}
	}
}

// The auth state is in the snapshot and the state hash; a store that never
// used auth encodes as before.
func TestAuthSnapshotRoundTrip(t *testing.T) {
	fresh := New(Config{})
	plain := New(Config{})
	mustApplyAuth(t, plain, putReq("a", "1"))
	s := authStore(t)
	mustApplyAuth(t, s, authAs(putReq("a", "1"), "root", s.AuthRevision()))
	if s.StateHash() == plain.StateHash() {
		t.Fatal("auth state does not reach the state hash")
	}
	restored, err := Restore(Config{}, s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if restored.StateHash() != s.StateHash() {
		t.Fatal("restored store hashes differently")
	}
	if !restored.AuthEnabled() || restored.AuthRevision() != s.AuthRevision() {
		t.Fatalf("restored auth: enabled=%v revision=%d", restored.AuthEnabled(), restored.AuthRevision())
	}
	ai := AuthInfo{Username: "u", Revision: restored.AuthRevision()}
	if err := restored.CheckRange(ai, []byte("/foo/x"), nil); err != nil {
		t.Fatalf("restored permissions: %v", err)
	}
	if err := restored.CheckRange(ai, []byte("/bar"), nil); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
		t.Fatalf("restored permissions: %v", err)
	}
	if len(fresh.Snapshot()) != len(New(Config{}).Snapshot()) {
		t.Fatal("a new store's snapshot changed size")
	}
	if err := plain.Replace(s.Snapshot()); err != nil || !plain.AuthEnabled() {
		t.Fatalf("replace: %v, enabled=%v", err, plain.AuthEnabled())
	}
}

// A lease is revoked (or attached to) only by root or by whoever may write
// every key it holds.
func TestAuthLeaseRevokeNeedsWriteOnItsKeys(t *testing.T) {
	s := authStore(t)
	rev := s.AuthRevision()
	mustApplyAuth(t, s, authAs(grantReq(7, 60), "root", rev))
	mustApplyAuth(t, s, authAs(putLeaseReq("/bar", "v", 7), "root", rev))
	if res := s.Apply(authAs(revokeReq(7), "u", rev)); !errors.Is(res.Err, rpctypes.ErrGRPCPermissionDenied) {
		t.Fatalf("revoke of a lease holding a key u may not write: %v", res.Err)
	}
	if res := s.Apply(authAs(putLeaseReq("/foo/y", "v", 7), "u", rev)); !errors.Is(res.Err, rpctypes.ErrGRPCPermissionDenied) {
		t.Fatalf("attaching to that lease: %v", res.Err)
	}
	mustApplyAuth(t, s, authAs(revokeReq(7), "root", rev))
	mustApplyAuth(t, s, authAs(grantReq(8, 60), "u", rev))
	mustApplyAuth(t, s, authAs(putLeaseReq("/foo/y", "v", 8), "u", rev))
	mustApplyAuth(t, s, authAs(revokeReq(8), "u", rev))
}

// BenchmarkApplyPutAuth: a put applied with auth off, and on as a user
// whose permission covers the key (the check on every write's path).
func BenchmarkApplyPutAuth(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			s := New(Config{})
			var ai AuthInfo
			if on {
				s = authStore(b)
				ai = AuthInfo{Username: "u", Revision: s.AuthRevision()}
			}
			reqs := make([]*pb.InternalRaftRequest, 1024)
			for i := range reqs {
				reqs[i] = authAs(putReq(fmt.Sprintf("/foo/k%04d", i), "value"), ai.Username, ai.Revision)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if res := s.Apply(reqs[i%len(reqs)]); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}
