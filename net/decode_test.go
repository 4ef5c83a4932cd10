package net

import (
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// decodeMessage decodes exactly what proto.Unmarshal does: every kind of
// message a stream carries, and random changes of them (other field orders,
// repeats, unknown fields and values, truncations) either alike or both
// refused.
func TestDecodeMessageIsProtoUnmarshal(t *testing.T) {
	ent := func(index uint64, data string) *raftpb.Entry {
		return &raftpb.Entry{Term: proto.Uint64(3), Index: proto.Uint64(index), Type: raftpb.EntryType_EntryNormal.Enum(), Data: []byte(data)}
	}
	msgs := []*raftpb.Message{
		benchMsgApp(),
		{Type: raftpb.MessageType_MsgApp.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(3), Index: proto.Uint64(9),
			LogTerm: proto.Uint64(3), Commit: proto.Uint64(9), Entries: []*raftpb.Entry{ent(10, "a"), ent(11, ""), {}, ent(12, "ccc")}},
		{Type: raftpb.MessageType_MsgAppResp.Enum(), To: proto.Uint64(1), From: proto.Uint64(2), Term: proto.Uint64(3), Index: proto.Uint64(12),
			Reject: proto.Bool(true), RejectHint: proto.Uint64(7), LogTerm: proto.Uint64(2)},
		{Type: raftpb.MessageType_MsgHeartbeat.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(3), Commit: proto.Uint64(12), Context: []byte("ctx")},
		{Type: raftpb.MessageType_MsgVote.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(4), Vote: proto.Uint64(1), Context: []byte{}},
		{Type: raftpb.MessageType_MsgProp.Enum(), To: proto.Uint64(1), From: proto.Uint64(3), Entries: []*raftpb.Entry{{Data: []byte("put")}, {Data: []byte("put2")}}},
		{Type: raftpb.MessageType_MsgReadIndexResp.Enum(), Entries: []*raftpb.Entry{{Data: []byte{1, 2}}}, Index: proto.Uint64(5)},
		{Type: raftpb.MessageType_MsgSnap.Enum(), Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(5)}}},
		{Type: raftpb.MessageType_MsgStorageAppend.Enum(), Responses: []*raftpb.Message{{Type: raftpb.MessageType_MsgAppResp.Enum()}}},
		{},
	}
	var corpus [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, b)
	}
	check := func(b []byte) {
		t.Helper()
		want := &raftpb.Message{}
		wantErr := proto.Unmarshal(b, want)
		got, err := decodeMessage(b)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%x: error %v, proto.Unmarshal's %v", b, err, wantErr)
		}
		if err == nil && !proto.Equal(got, want) {
			t.Fatalf("%x:\ndecoded         %v\nproto.Unmarshal %v", b, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(11, 13))
	for _, b := range corpus {
		check(b)
		for range 3000 {
			m := append([]byte(nil), b...)
			for range 1 + rng.IntN(2) {
				switch rng.IntN(4) {
				case 0:
					if len(m) > 0 {
						m[rng.IntN(len(m))] = byte(rng.IntN(256))
					}
				case 1:
					m = m[:rng.IntN(len(m)+1)]
				case 2:
					m = append(m, corpus[rng.IntN(len(corpus))]...)
				case 3:
					if len(m) > 0 {
						i := rng.IntN(len(m))
						m = append(m[:i:i], append([]byte{byte(rng.IntN(256))}, m[i:]...)...)
					}
				}
			}
			check(m)
		}
	}
	// The decoded message owns its memory: the payload may be reused.
	b := append([]byte(nil), corpus[1]...)
	got, err := decodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !proto.Equal(got, msgs[1]) {
		t.Fatalf("changing the payload changed the message: %v", got)
	}
}

// A MsgApp of one entry decodes in four allocations: the message with its
// scalars, the entry, the entry pointers and the data.
func TestDecodeMessageAllocations(t *testing.T) {
	frame, err := appendMessageFrame(nil, benchMsgApp())
	if err != nil {
		t.Fatal(err)
	}
	payload := frame[FrameHeaderBytes:]
	if n := testing.AllocsPerRun(100, func() { _, _ = DecodeMessage(payload) }); n != 4 {
		t.Fatalf("DecodeMessage of a one-entry MsgApp: %v allocations, want 4", n)
	}
}
