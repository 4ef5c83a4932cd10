package net

import (
	"bytes"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func snapshotMessage(from, to uint64, data []byte) *raftpb.Message {
	return &raftpb.Message{
		Type:    raftpb.MessageType_MsgSnap.Enum(),
		From:    proto.Uint64(from),
		To:      proto.Uint64(to),
		Term:    proto.Uint64(7),
		Context: []byte("ctx"),
		Snapshot: &raftpb.Snapshot{
			Data: data,
			Metadata: &raftpb.SnapshotMetadata{
				Index:     proto.Uint64(12345),
				Term:      proto.Uint64(6),
				ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}},
			},
		},
	}
}

// seededBytes returns n reproducible pseudo-random bytes (incompressible,
// so a chunking bug cannot hide behind repeated content).
func seededBytes(n int, seed uint64) []byte {
	data := make([]byte, n)
	source := rand.NewChaCha8([32]byte{byte(seed)})
	source.Read(data)
	return data
}

// A 64 MiB snapshot arrives whole, as one message equal to the one sent,
// while the message stream keeps working, and the sender hears success.
func TestLargeSnapshotArrivesIntact(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	connectAll(t, a, b)

	sent := snapshotMessage(1, 2, seededBytes(64<<20, 1))
	a.transport.Send([]*raftpb.Message{sent, appMessage(1, 2, 1, 8)})
	waitFor(t, "snapshot delivered", func() bool {
		for _, m := range b.handler.received(1) {
			if m.GetType() == raftpb.MessageType_MsgSnap {
				return true
			}
		}
		return false
	})
	waitFor(t, "snapshot reported", func() bool { return len(a.handler.snapshotReports()) == 1 })
	if got := a.handler.snapshotReports()[0]; got != (snapshotReport{id: 2, failed: false}) {
		t.Fatalf("snapshot report %+v, want success for member 2", got)
	}
	var got *raftpb.Message
	for _, m := range b.handler.received(1) {
		if m.GetType() == raftpb.MessageType_MsgSnap {
			got = m
		}
	}
	if !bytes.Equal(got.GetSnapshot().GetData(), sent.GetSnapshot().GetData()) {
		t.Fatalf("snapshot data differs: %d bytes received, %d sent", len(got.GetSnapshot().GetData()), len(sent.GetSnapshot().GetData()))
	}
	if !proto.Equal(got, sent) {
		t.Fatalf("snapshot message differs from the one sent:\n got  %v\n want %v", withoutSnapshotData(got), withoutSnapshotData(sent))
	}
	if len(sent.GetSnapshot().GetData()) != 64<<20 {
		t.Fatal("sending changed the caller's message")
	}
	as, bs := a.transport.Stats().Peers[0], b.transport.Stats().Peers[0]
	if as.SnapshotsSent != 1 || as.SnapshotsFailed != 0 || bs.SnapshotsReceived != 1 {
		t.Errorf("snapshot counters: sender %+v, receiver %+v", as, bs)
	}
	if as.BytesSent < 64<<20 || bs.BytesReceived < 64<<20 {
		t.Errorf("byte counters miss the snapshot: sent %d, received %d", as.BytesSent, bs.BytesReceived)
	}
	// The ordinary message sent with the snapshot went its own way.
	waitFor(t, "message beside the snapshot", func() bool {
		for _, m := range b.handler.received(1) {
			if m.GetType() == raftpb.MessageType_MsgApp {
				return true
			}
		}
		return false
	})
}

// A snapshot over the receiver's bound is refused before its data is read;
// the sender reports failure and logs the receiver's reason.
func TestSnapshotOverBoundIsRefused(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	cfg := testConfig(2)
	cfg.SnapshotBytesMax = 1 << 20
	b := startMember(t, cfg, "127.0.0.1:0")
	connectAll(t, a, b)

	a.transport.Send([]*raftpb.Message{snapshotMessage(1, 2, seededBytes(2<<20, 2))})
	waitFor(t, "snapshot reported", func() bool { return len(a.handler.snapshotReports()) == 1 })
	if got := a.handler.snapshotReports()[0]; got != (snapshotReport{id: 2, failed: true}) {
		t.Fatalf("snapshot report %+v, want failure for member 2", got)
	}
	if !a.logs.contains("exceeds SnapshotBytesMax") {
		t.Errorf("the sender did not log the receiver's reason; log:\n%s", a.logs)
	}
	if n := len(b.handler.received(1)); n != 0 {
		t.Errorf("receiver delivered %d messages", n)
	}
	if got := a.transport.Stats().Peers[0].SnapshotsFailed; got != 1 {
		t.Errorf("SnapshotsFailed = %d, want 1", got)
	}
}

// A snapshot the receiving member does not take (its queue is full) fails
// on the sender's side too.
func TestSnapshotRefusedByHandlerFails(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	connectAll(t, a, b)
	b.handler.mu.Lock()
	b.handler.processErr = errors.New("inbound queue full")
	b.handler.mu.Unlock()

	a.transport.Send([]*raftpb.Message{snapshotMessage(1, 2, seededBytes(3<<20, 3))})
	waitFor(t, "snapshot reported", func() bool { return len(a.handler.snapshotReports()) == 1 })
	if got := a.handler.snapshotReports()[0]; !got.failed {
		t.Fatalf("snapshot report %+v, want failure", got)
	}
	if !a.logs.contains("inbound queue full") {
		t.Errorf("the sender did not log why; log:\n%s", a.logs)
	}
	if b.transport.Stats().ProcessErrors != 1 {
		t.Errorf("ProcessErrors = %d, want 1", b.transport.Stats().ProcessErrors)
	}
}

// A second MsgSnap to a peer while one is in flight fails at once (raft
// keeps one in flight per follower; this guards the bound).
func TestSecondSnapshotToSamePeerFails(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	wedged := startWedgedPeer(t, 2)
	a.transport.AddPeer(2, []string{wedged.url})
	a.transport.Send([]*raftpb.Message{snapshotMessage(1, 2, seededBytes(1<<10, 4)), snapshotMessage(1, 2, seededBytes(1<<10, 5))})
	waitFor(t, "second snapshot reported", func() bool { return len(a.handler.snapshotReports()) == 1 })
	if got := a.handler.snapshotReports()[0]; got != (snapshotReport{id: 2, failed: true}) {
		t.Fatalf("report %+v, want failure for member 2", got)
	}
	if !a.logs.contains("already in flight") {
		t.Errorf("no log line for the refused second snapshot; log:\n%s", a.logs)
	}
}

// Data corrupted on the way (a CRC that does not match) is refused, not
// delivered.
func TestSnapshotWithBadChecksumIsRefused(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	a.transport.AddPeer(2, []string{"http://127.0.0.1:1"})
	conn := rawPeerConn(t, a)
	replies, err := exchangeHello(conn, Hello{Version: ProtocolVersion, Stream: StreamSnapshot, ClusterID: testClusterID, From: 2, To: 1}, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	data := seededBytes(100<<10, 6)
	header, err := SnapshotHeader{DataBytes: uint64(len(data)), Message: withoutSnapshotData(snapshotMessage(2, 1, nil))}.AppendPayload(nil)
	if err != nil {
		t.Fatal(err)
	}
	wire := AppendFrame(nil, FrameSnapshotHeader, header)
	wire = AppendFrame(wire, FrameSnapshotChunk, data[:60<<10])
	wire = AppendFrame(wire, FrameSnapshotChunk, data[60<<10:])
	wire = AppendFrame(wire, FrameSnapshotEnd, SnapshotEnd{DataCRC32C: crc32.Checksum(data, castagnoli) ^ 1}.AppendPayload(nil))
	if _, err := conn.Write(wire); err != nil {
		t.Fatal(err)
	}
	kind, payload, err := replies.ReadFrame()
	if err != nil || kind != FrameSnapshotAck {
		t.Fatalf("read ack: %v %v", kind, err)
	}
	ack, err := DecodeSnapshotAck(payload)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Accepted || !strings.Contains(ack.Reason, "CRC-32C") {
		t.Fatalf("ack %+v, want a refusal naming the CRC", ack)
	}
	expectClosedByPeer(t, conn, "corrupt snapshot")
	if n := len(a.handler.received(2)); n != 0 {
		t.Fatalf("a corrupt snapshot was delivered")
	}
}

// withoutSnapshotData keeps every field but the data and leaves the
// original alone.
func TestWithoutSnapshotDataKeepsEverythingElse(t *testing.T) {
	m := snapshotMessage(1, 2, []byte("data"))
	m.Entries = []*raftpb.Entry{{Index: proto.Uint64(1)}}
	m.Reject, m.RejectHint, m.Vote, m.Commit = proto.Bool(true), proto.Uint64(4), proto.Uint64(5), proto.Uint64(6)
	header := withoutSnapshotData(m)
	if len(header.GetSnapshot().GetData()) != 0 {
		t.Fatal("data kept")
	}
	if string(m.GetSnapshot().GetData()) != "data" {
		t.Fatal("the original lost its data")
	}
	header.Snapshot.Data = []byte("data")
	if !proto.Equal(header, m) {
		t.Fatalf("fields lost:\n got  %v\n want %v", header, m)
	}
}

// With a spool directory, snapshot chunks go to a file as they arrive (a
// stream cut off halfway leaves memory alone and its file is removed);
// a complete snapshot is delivered intact and its file removed too; a
// file a crash left behind is removed at start.
func TestSnapshotSpooledToDisk(t *testing.T) {
	dir := t.TempDir()
	leftover := filepath.Join(dir, "incoming-123.part")
	if err := os.WriteFile(leftover, []byte("cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(1)
	cfg.SnapshotSpoolDir = dir
	cfg.SnapshotChunkBytes = 1 << 20
	a := startMember(t, cfg, "127.0.0.1:0")
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("a leftover spool file survived the start: %v", err)
	}
	a.transport.AddPeer(2, []string{"http://127.0.0.1:1"})
	spooled := func() int64 {
		names, _ := filepath.Glob(filepath.Join(dir, spoolPattern))
		var total int64
		for _, n := range names {
			if fi, err := os.Stat(n); err == nil {
				total += fi.Size()
			}
		}
		return total
	}

	// A forged stream announces 64 MiB, sends 8 and stops.
	conn := rawPeerConn(t, a)
	if _, err := exchangeHello(conn, Hello{Version: ProtocolVersion, Stream: StreamSnapshot, ClusterID: testClusterID, From: 2, To: 1}, waitTimeout); err != nil {
		t.Fatal(err)
	}
	header, err := SnapshotHeader{DataBytes: 64 << 20, Message: withoutSnapshotData(snapshotMessage(2, 1, nil))}.AppendPayload(nil)
	if err != nil {
		t.Fatal(err)
	}
	wire := AppendFrame(nil, FrameSnapshotHeader, header)
	chunk := seededBytes(1<<20, 9)
	for range 8 {
		wire = AppendFrame(wire, FrameSnapshotChunk, chunk)
	}
	// What the receiver allocates while 8 MiB of a 64 MiB stream arrive:
	// a chunk buffer and small change, not the snapshot.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := conn.Write(wire); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "8 MiB spooled to disk", func() bool { return spooled() == 8<<20 })
	runtime.ReadMemStats(&after)
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 4<<20 {
		t.Errorf("receiving 8 MiB of a spooled snapshot allocated %d MiB", allocated>>20)
	}
	conn.Close()
	waitFor(t, "the partial spool file removed", func() bool {
		names, _ := filepath.Glob(filepath.Join(dir, spoolPattern))
		return len(names) == 0
	})
	if n := len(a.handler.received(2)); n != 0 {
		t.Fatalf("a partial snapshot was delivered")
	}

	// A real snapshot through the spool arrives intact.
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	a.transport.UpdatePeer(2, []string{b.url})
	b.transport.AddPeer(1, []string{a.url})
	waitActive(t, b, 1)
	sent := snapshotMessage(2, 1, seededBytes(5<<20+123, 10))
	b.transport.Send([]*raftpb.Message{sent})
	waitFor(t, "snapshot reported", func() bool { return len(b.handler.snapshotReports()) == 1 })
	var got *raftpb.Message
	for _, m := range a.handler.received(2) {
		if m.GetType() == raftpb.MessageType_MsgSnap {
			got = m
		}
	}
	if got == nil || !proto.Equal(got, sent) {
		t.Fatalf("the spooled snapshot differs from the one sent (report %+v)", b.handler.snapshotReports())
	}
	if n := spooled(); n != 0 {
		t.Errorf("%d bytes left in the spool after delivery", n)
	}
}
