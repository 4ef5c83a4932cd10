package net

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The per-message hot path of a stream: a MsgApp of one put's entry framed
// into the writer's reused buffer, and decoded on the other side.
//
//	go test ./net -run '^$' -bench 'Frame|DecodeMessage' -benchmem

func benchMsgApp() *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MessageType_MsgApp.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(3),
		LogTerm: proto.Uint64(3), Index: proto.Uint64(1041), Commit: proto.Uint64(1040),
		Entries: []*raftpb.Entry{{Term: proto.Uint64(3), Index: proto.Uint64(1042), Type: raftpb.EntryType_EntryNormal.Enum(), Data: make([]byte, 300)}},
	}
}

func BenchmarkAppendMessageFrame(b *testing.B) {
	m := benchMsgApp()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = appendMessageFrame(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMessage(b *testing.B) {
	frame, err := appendMessageFrame(nil, benchMsgApp())
	if err != nil {
		b.Fatal(err)
	}
	payload := frame[FrameHeaderBytes:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMessage(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// Framing a message into the writer's buffer allocates nothing once the
// buffer has grown: a stream writes one frame per message it sends.
func TestAppendMessageFrameAllocatesNothing(t *testing.T) {
	m := benchMsgApp()
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf, _ = appendMessageFrame(buf[:0], m) }); n != 0 {
		t.Fatalf("appendMessageFrame: %v allocations per message, want 0", n)
	}
}
