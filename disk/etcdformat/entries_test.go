package etcdformat

import (
	"errors"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func normalEntry(data []byte) *raftpb.Entry {
	return &raftpb.Entry{Index: proto.Uint64(9), Term: proto.Uint64(3), Type: raftpb.EntryNormal.Enum(), Data: data}
}

// v2Bytes encodes a v2 request as etcd 3.4 proposes it.
func v2Bytes(id uint64, method, path, val string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, id)
	for i, s := range []string{method, path, val} {
		b = protowire.AppendTag(b, protowire.Number(2+i), protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = protowire.AppendTag(b, 5, protowire.VarintType) // Dir, which nothing here reads
	return protowire.AppendVarint(b, 0)
}

func marshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTranslateEntry(t *testing.T) {
	ctx := func(m Member) []byte { return []byte("ctx:" + m.Name) }
	publish := v2Bytes(42, "PUT", "/0/members/1f/attributes", `{"name":"infra1","clientURLs":["http://10.0.0.1:2379"]}`)
	var wrapped []byte
	wrapped = protowire.AppendTag(wrapped, 2, protowire.BytesType)
	wrapped = protowire.AppendBytes(wrapped, publish)
	put := marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 5}, Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("b")}})
	withUnknown := protowire.AppendTag(append([]byte(nil), put...), 4000, protowire.VarintType)
	withUnknown = protowire.AppendVarint(withUnknown, 1)
	nestedUnknown := marshal(t, &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 5}, Put: &pb.PutRequest{Key: []byte("a")}})
	{
		// Field 4 (put) again, holding a PutRequest with an unknown field 99.
		inner := protowire.AppendTag(nil, 99, protowire.VarintType)
		inner = protowire.AppendVarint(inner, 7)
		nestedUnknown = protowire.AppendTag(nestedUnknown, 4, protowire.BytesType)
		nestedUnknown = protowire.AppendBytes(nestedUnknown, inner)
	}
	addNode := func(context string) *raftpb.Entry {
		cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(0x1f), Context: []byte(context)}
		return &raftpb.Entry{Index: proto.Uint64(9), Term: proto.Uint64(3), Type: raftpb.EntryConfChange.Enum(), Data: marshal(t, cc)}
	}
	for _, tc := range []struct {
		name    string
		entry   *raftpb.Entry
		kind    EntryKind
		check   func(t *testing.T, out *raftpb.Entry)
		wantErr string
	}{
		{name: "empty", entry: normalEntry(nil), kind: EntryKept},
		{name: "a v3 put", entry: normalEntry(put), kind: EntryKept, check: func(t *testing.T, out *raftpb.Entry) {
			if string(out.GetData()) != string(put) {
				t.Fatal("data changed")
			}
		}},
		{name: "a v2 publication", entry: normalEntry(publish), kind: EntryMemberAttributes, check: func(t *testing.T, out *raftpb.Entry) {
			var r pb.InternalRaftRequest
			if err := proto.Unmarshal(out.GetData(), &r); err != nil {
				t.Fatal(err)
			}
			a := r.GetClusterMemberAttrSet()
			if r.GetHeader().GetID() != 42 || a.GetMember_ID() != 0x1f || a.GetMemberAttributes().GetName() != "infra1" ||
				len(a.GetMemberAttributes().GetClientUrls()) != 1 {
				t.Fatalf("became %v", &r)
			}
		}},
		{name: "a v2 publication inside a v3 request's v2 field", entry: normalEntry(wrapped), kind: EntryMemberAttributes},
		{name: "the v2 cluster version", entry: normalEntry(v2Bytes(43, "PUT", "/0/version", "3.4.0")), kind: EntryV2Dropped, check: func(t *testing.T, out *raftpb.Entry) {
			if len(out.GetData()) != 0 || out.GetIndex() != 9 || out.GetTerm() != 3 {
				t.Fatalf("became %v", out)
			}
		}},
		{name: "a v2 store write", entry: normalEntry(v2Bytes(44, "PUT", "/1/foo", "bar")), kind: EntryV2Dropped},
		{name: "a conf change", entry: addNode(`{"id":31,"peerURLs":["http://10.0.0.1:2380"],"name":"infra1","isPromote":false}`), kind: EntryConfChange,
			check: func(t *testing.T, out *raftpb.Entry) {
				var cc raftpb.ConfChange
				proto.Unmarshal(out.GetData(), &cc)
				if string(cc.GetContext()) != "ctx:infra1" || cc.GetNodeId() != 0x1f {
					t.Fatalf("became %v", &cc)
				}
			}},
		{name: "a member removal", entry: &raftpb.Entry{Index: proto.Uint64(9), Term: proto.Uint64(3), Type: raftpb.EntryConfChange.Enum(),
			Data: marshal(t, &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(0x1f)})}, kind: EntryKept},
		{name: "a conf change about another member", entry: addNode(`{"id":32,"peerURLs":["http://x"]}`), wantErr: "carries member"},
		{name: "a conf change context that is no member", entry: addNode(`nonsense`), wantErr: "context"},
		{name: "auth enable", entry: normalEntry(marshal(t, &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}})), kind: EntryKept},
		{name: "a user added with a hashed password", entry: normalEntry(marshal(t, &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", HashedPassword: "$2a$10$x"}})), kind: EntryKept},
		{name: "a user added with a password in the clear (etcd 3.4)", entry: normalEntry(marshal(t, &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", Password: "pw"}})), wantErr: "in the clear"},
		{name: "a password changed in the clear (etcd 3.4)", entry: normalEntry(marshal(t, &pb.InternalRaftRequest{AuthUserChangePassword: &pb.AuthUserChangePasswordRequest{Name: "u", Password: "pw"}})), wantErr: "in the clear"},
		{name: "a request field this noded does not know", entry: normalEntry(withUnknown), wantErr: "newer than 3.7"},
		{name: "a nested field this noded does not know", entry: normalEntry(nestedUnknown), wantErr: "newer than 3.7"},
		{name: "bytes that are nothing", entry: normalEntry([]byte{0xff, 0xff, 0xff}), wantErr: "neither"},
		{name: "a ConfChangeV2", entry: &raftpb.Entry{Index: proto.Uint64(9), Term: proto.Uint64(3), Type: raftpb.EntryConfChangeV2.Enum()}, wantErr: "does not write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, kind, err := TranslateEntry(tc.entry, ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v (%v), want an error saying %q", err, kind, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kind != tc.kind {
				t.Fatalf("kind %v, want %v", kind, tc.kind)
			}
			if tc.check != nil {
				tc.check(t, out)
			}
		})
	}
	_, _, err := TranslateEntry(normalEntry(marshal(t, &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", Password: "pw"}})), ctx)
	if !errors.Is(err, ErrPlaintextPassword) {
		t.Fatalf("a user added with its password: %v, want ErrPlaintextPassword", err)
	}
}
