package node

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestMembersAtCommit: a restarted member's table once its committed log is
// applied, before it is: conf changes up to the commit index count (adds,
// removals, URL updates, an invalid one as the no-op applying makes it),
// those after it do not, and nothing is applied meanwhile.
func TestMembersAtCommit(t *testing.T) {
	member := func(id uint64, url string) Member {
		return Member{ID: id, PeerURLs: []string{url}}
	}
	cc := func(index uint64, typ raftpb.ConfChangeType, m Member) *raftpb.Entry {
		data, err := proto.Marshal(&raftpb.ConfChange{Type: typ.Enum(), NodeId: proto.Uint64(m.ID), Context: confChangeContext(m)})
		if err != nil {
			t.Fatal(err)
		}
		return &raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(1), Type: raftpb.EntryConfChange.Enum(), Data: data}
	}
	entries := []*raftpb.Entry{
		cc(1, raftpb.ConfChangeAddNode, member(1, "http://a:1")),
		cc(2, raftpb.ConfChangeAddNode, member(2, "http://b:1")),
		cc(3, raftpb.ConfChangeAddNode, member(3, "http://c:1")),
		{Index: proto.Uint64(4), Term: proto.Uint64(1)}, // a leader's empty entry
		cc(5, raftpb.ConfChangeRemoveNode, member(2, "")),
		cc(6, raftpb.ConfChangeUpdateNode, member(3, "http://c:2")),
		cc(7, raftpb.ConfChangeAddNode, member(3, "http://c:3")), // already a voter: a no-op
		cc(8, raftpb.ConfChangeAddNode, member(4, "http://d:1")), // not committed
	}
	cfg := Config{ID: 1, TickMs: 100, ElectionTicks: 10, HeartbeatTicks: 1}
	n, err := Restart(cfg, Durable{HardState: &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(1), Commit: proto.Uint64(7)}, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	if applied := n.Status().Members; len(applied) != 0 {
		t.Fatalf("applied table before any apply: %v", applied)
	}
	members, removed := n.MembersAtCommit()
	got := fmt.Sprint(members)
	want := fmt.Sprint([]Member{member(1, "http://a:1"), member(3, "http://c:2")})
	if got != want || !slices.Equal(removed, []uint64{2}) {
		t.Fatalf("members at commit %s removed %v; want %s removed [2]", got, removed, want)
	}
	if applied := n.Status().Members; len(applied) != 0 {
		t.Fatalf("MembersAtCommit changed the applied table: %v", applied)
	}
}
