package fuzz

import (
	"context"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/server/auth"
)

// Tokens arrive from clients (gRPC metadata, the gateway's Authorization
// header) and the auth requests from clients and the log: none of them may
// panic a member, whatever their bytes.

// fuzzJWTSpec is an HMAC-signed JWT configuration (the secret is a test
// value, not a key of any deployment).
func fuzzJWTSpec(t testing.TB) auth.TokenSpec {
	spec, err := auth.ParseTokenSpec("jwt,priv-key=secret,sign-method=HS256,ttl=1h", func(string) ([]byte, error) {
		return []byte("fuzz-secret"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

var fuzzNow = time.Unix(1_700_000_000, 0)

// FuzzAuthTokenParse: any string given as a token is a simple token or not
// (and a parsed one prints back as itself), a JWT that verifies or not,
// and resolves or fails without waiting on a login that will never come.
func FuzzAuthTokenParse(f *testing.F) {
	spec := fuzzJWTSpec(f)
	good, err := auth.NewTokens(spec, 0, func() time.Time { return fuzzNow }).Issue("alice", 3, "")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{"", "abcdefghijklmnop.12", "ABCDEFGHIJKLMNOP.1", "abc.1", good, good[:len(good)-1], good + "x", "Bearer " + good, "a.b.c"} {
		f.Add(seed)
	}
	simple := auth.NewTokens(auth.TokenSpec{Type: auth.TokenSimple}, time.Minute, func() time.Time { return fuzzNow })
	jwts := auth.NewTokens(spec, 0, func() time.Time { return fuzzNow })
	f.Fuzz(func(t *testing.T, token string) {
		if prefix, index, ok := auth.ParseSimpleToken(token); ok {
			if prefix+"."+strconv.FormatUint(index, 10) != token {
				t.Fatalf("simple token %q parsed as %q.%d", token, prefix, index)
			}
		}
		// Only one token was ever signed with the secret: whatever verifies
		// carries its claims (forging others needs the secret).
		if ai, ok := auth.ParseJWT(spec, token, fuzzNow); ok && ai != (kvsm.AuthInfo{Username: "alice", Revision: 3}) {
			t.Fatalf("%q verified with claims %v that were never signed", token, ai)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // never wait: the fuzzer resolves against an index already applied
		applied := func() uint64 { return ^uint64(0) }
		rev := func() uint64 { return 1 }
		if _, ok := simple.Resolve(ctx, token, rev, applied); ok {
			t.Fatalf("simple token %q resolved though none was assigned", token)
		}
		jwts.Resolve(ctx, token, rev, applied)
	})
}

// FuzzAuthTokenSpec: any --auth-token string parses or is refused with
// etcd's error; none panics.
func FuzzAuthTokenSpec(f *testing.F) {
	for _, seed := range []string{"simple", "jwt", "jwt,sign-method=HS256,priv-key=k", "jwt,sign-method=RS256,pub-key=p,priv-key=k,ttl=5m", "jwt,ttl=-1s", ",,=", "simple,a=b=c"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := auth.ParseTokenSpec(s, func(name string) ([]byte, error) { return []byte(name), nil })
		if err == nil && spec.Type != auth.TokenSimple && spec.Type != auth.TokenJWT {
			t.Fatalf("%q accepted as token type %q", s, spec.Type)
		}
	})
}

// authStoreForFuzz is a store with root, a user and a role, auth on.
func authStoreForFuzz() *kvsm.Store {
	s := kvsm.New(kvsm.Config{})
	hash := base64.StdEncoding.EncodeToString([]byte("hash"))
	for _, r := range authFuzzSetup(hash) {
		s.Apply(r)
	}
	return s
}

func authFuzzSetup(hash string) []*pb.InternalRaftRequest {
	return []*pb.InternalRaftRequest{
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: hash}},
		{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "root"}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}},
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", HashedPassword: hash}},
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "np", Options: &authpb.UserAddOptions{NoPassword: true}}},
		{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}},
		{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("a"), RangeEnd: []byte("b")}}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "u", Role: "r"}},
		{AuthEnable: &pb.AuthEnableRequest{}},
	}
}

// FuzzAuthRequestDecode: bytes decoded as an auth request (from the log,
// protobuf) or as the gateway's JSON for each Auth RPC, then applied to a
// store with auth on, as root and as a plain user: nothing panics, the
// store keeps its invariants and its snapshot round-trips.
func FuzzAuthRequestDecode(f *testing.F) {
	for _, r := range authFuzzSetup("aGFzaA==") {
		b, _ := proto.Marshal(r)
		f.Add(b, false)
	}
	f.Add([]byte(`{"name":"r","perm":{"permType":"READ","key":"YQ==","range_end":"AA=="}}`), true)
	f.Add([]byte(`{"user":"u","role":"root"}`), true)
	f.Add([]byte(`{"name":"x","password":"p","options":{"no_password":true}}`), true)
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		var reqs []*pb.InternalRaftRequest
		if asJSON {
			for _, wrap := range authJSONRequests() {
				msg, into := wrap()
				if protojson.Unmarshal(data, msg) == nil {
					reqs = append(reqs, into)
				}
			}
		} else {
			r := &pb.InternalRaftRequest{}
			if proto.Unmarshal(data, r) != nil {
				return
			}
			reqs = append(reqs, r)
		}
		s := authStoreForFuzz()
		for _, r := range reqs {
			for _, user := range []string{"root", "u", ""} {
				r.Header = &pb.RequestHeader{Username: user, AuthRevision: s.AuthRevision()}
				before := s.StateHash()
				res := s.Apply(r)
				if res.Err != nil && s.StateHash() != before {
					t.Fatalf("%v as %q failed with %v yet changed the store", r, user, res.Err)
				}
				if err := s.CheckInvariants(); err != nil {
					t.Fatalf("after %v as %q: %v", r, user, err)
				}
			}
		}
		again, err := kvsm.Restore(kvsm.Config{}, s.Snapshot())
		if err != nil {
			t.Fatalf("snapshot of the store does not restore: %v", err)
		}
		if again.StateHash() != s.StateHash() {
			t.Fatal("restored store hashes differently")
		}
	})
}

// authJSONRequests builds, for each Auth RPC the gateway serves, a fresh
// request message to decode JSON into and the log entry that carries it.
func authJSONRequests() []func() (proto.Message, *pb.InternalRaftRequest) {
	return []func() (proto.Message, *pb.InternalRaftRequest){
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthUserAddRequest{}
			return m, &pb.InternalRaftRequest{AuthUserAdd: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthUserGrantRoleRequest{}
			return m, &pb.InternalRaftRequest{AuthUserGrantRole: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthUserRevokeRoleRequest{}
			return m, &pb.InternalRaftRequest{AuthUserRevokeRole: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthRoleGrantPermissionRequest{}
			return m, &pb.InternalRaftRequest{AuthRoleGrantPermission: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthRoleRevokePermissionRequest{}
			return m, &pb.InternalRaftRequest{AuthRoleRevokePermission: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthRoleDeleteRequest{}
			return m, &pb.InternalRaftRequest{AuthRoleDelete: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthUserDeleteRequest{}
			return m, &pb.InternalRaftRequest{AuthUserDelete: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthUserChangePasswordRequest{}
			return m, &pb.InternalRaftRequest{AuthUserChangePassword: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthUserGetRequest{}
			return m, &pb.InternalRaftRequest{AuthUserGet: m}
		},
		func() (proto.Message, *pb.InternalRaftRequest) {
			m := &pb.AuthRoleGetRequest{}
			return m, &pb.InternalRaftRequest{AuthRoleGet: m}
		},
	}
}
