package fuzz

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/noded/noded/net"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// netFrameBytesMax is the production default for FrameBytesMax: a reader
// that allocated from a length prefix before the bytes arrived would blow
// the allocation limit below at once.
const netFrameBytesMax = 16 << 20

// FuzzNetFrameDecode feeds arbitrary bytes to the peer frame reader, as an
// inbound connection delivers them after its preamble, and decodes each
// frame by its kind. It must never panic; every error must be a protocol
// violation or a truncation; no payload may exceed the maximum; a payload
// a decoder accepts must re-encode to bytes that decode to the same value
// (the fixed layouts to the very same bytes); and allocation stays within
// a multiple of the input's size, so no length field is trusted before
// the bytes behind it have arrived.
func FuzzNetFrameDecode(f *testing.F) {
	for _, seed := range netFrameSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := heapAllocatedBytes()
		frames := net.NewFrameReader(bytes.NewReader(data), netFrameBytesMax)
		for {
			kind, payload, err := frames.ReadFrame()
			if err != nil {
				if !errors.Is(err, net.ErrProtocol) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("error of no known kind: %v", err)
				}
				break
			}
			if len(payload) > netFrameBytesMax {
				t.Fatalf("%s payload of %d bytes passed a maximum of %d", kind, len(payload), netFrameBytesMax)
			}
			checkNetFrame(t, kind, payload)
		}
		if allocated, limit := heapAllocatedBytes()-before, uint64(256*len(data)+(1<<20)); allocated > limit {
			t.Fatalf("decoding %d input bytes allocated %d bytes (limit %d)", len(data), allocated, limit)
		}
	})
}

// checkNetFrame decodes one frame's payload by kind and checks the
// round trip of whatever decodes.
func checkNetFrame(t *testing.T, kind net.FrameKind, payload []byte) {
	t.Helper()
	sameBytes := func(what string, again []byte) {
		t.Helper()
		if !bytes.Equal(again, payload) {
			t.Fatalf("accepted %s does not re-encode to its bytes:\n%x\n%x", what, payload, again)
		}
	}
	var err error
	switch kind {
	case net.FrameHello:
		var h net.Hello
		if h, err = net.DecodeHello(payload); err == nil {
			sameBytes("hello", h.AppendPayload(nil))
		}
	case net.FrameHelloReply:
		var r net.HelloReply
		if r, err = net.DecodeHelloReply(payload); err == nil {
			sameBytes("hello reply", r.AppendPayload(nil))
		}
	case net.FrameMessage:
		var m *raftpb.Message
		if m, err = net.DecodeMessage(payload); err == nil {
			again, encodeErr := net.AppendMessagePayload(nil, m)
			if encodeErr != nil {
				t.Fatalf("accepted message does not encode: %v", encodeErr)
			}
			if m2, decodeErr := net.DecodeMessage(again); decodeErr != nil || !proto.Equal(m, m2) {
				t.Fatalf("message changed in a round trip (%v):\n%v\n%v", decodeErr, m, m2)
			}
		}
	case net.FrameSnapshotHeader:
		var h net.SnapshotHeader
		if h, err = net.DecodeSnapshotHeader(payload); err == nil {
			again, encodeErr := h.AppendPayload(nil)
			if encodeErr != nil {
				t.Fatalf("accepted snapshot header does not encode: %v", encodeErr)
			}
			h2, decodeErr := net.DecodeSnapshotHeader(again)
			if decodeErr != nil || h2.DataBytes != h.DataBytes || !proto.Equal(h.Message, h2.Message) {
				t.Fatalf("snapshot header changed in a round trip (%v): %d %v, %d %v", decodeErr, h.DataBytes, h.Message, h2.DataBytes, h2.Message)
			}
		}
	case net.FrameSnapshotEnd:
		var e net.SnapshotEnd
		if e, err = net.DecodeSnapshotEnd(payload); err == nil {
			sameBytes("snapshot end", e.AppendPayload(nil))
		}
	case net.FrameSnapshotAck:
		var a net.SnapshotAck
		if a, err = net.DecodeSnapshotAck(payload); err == nil {
			sameBytes("snapshot ack", a.AppendPayload(nil))
		}
	case net.FrameKeepalive, net.FrameSnapshotChunk:
		// Opaque to decoders; the streams check their sizes.
	default:
		t.Fatalf("ReadFrame returned unknown kind %s", kind)
	}
	if err != nil && !errors.Is(err, net.ErrProtocol) {
		t.Fatalf("%s decoder failed with an error that is not ErrProtocol: %v", kind, err)
	}
}

// netFrameSeeds are streams of well-formed frames as the transport writes
// them: a message stream and a snapshot stream from the dialer's side, the
// acceptor's answers, and a few near misses.
func netFrameSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	encodeMessage := func(m *raftpb.Message) []byte {
		payload, err := net.AppendMessagePayload(nil, m)
		if err != nil {
			tb.Fatal(err)
		}
		return payload
	}
	app := &raftpb.Message{
		Type: raftpb.MessageType_MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
		Term: proto.Uint64(5), LogTerm: proto.Uint64(5), Index: proto.Uint64(100), Commit: proto.Uint64(99),
		Entries: []*raftpb.Entry{
			{Term: proto.Uint64(5), Index: proto.Uint64(101), Type: raftpb.EntryType_EntryNormal.Enum(), Data: []byte("put k v")},
			{Term: proto.Uint64(5), Index: proto.Uint64(102), Type: raftpb.EntryType_EntryConfChangeV2.Enum(), Data: []byte{0x08, 0x01}},
		},
	}
	heartbeat := &raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(5), Context: []byte("read-index-ctx")}
	reject := &raftpb.Message{Type: raftpb.MessageType_MsgAppResp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(5), Index: proto.Uint64(100), Reject: proto.Bool(true), RejectHint: proto.Uint64(90), LogTerm: proto.Uint64(4)}
	snap := &raftpb.Message{
		Type: raftpb.MessageType_MsgSnap.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(5),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(1000), Term: proto.Uint64(4),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}},
		}},
	}
	snapHeader, err := net.SnapshotHeader{DataBytes: 10, Message: snap}.AppendPayload(nil)
	if err != nil {
		tb.Fatal(err)
	}

	messageStream := net.AppendFrame(nil, net.FrameHello, net.Hello{Version: net.ProtocolVersion, Stream: net.StreamMessages, ClusterID: 0xc1, From: 1, To: 2}.AppendPayload(nil))
	messageStream = net.AppendFrame(messageStream, net.FrameMessage, encodeMessage(app))
	messageStream = net.AppendFrame(messageStream, net.FrameKeepalive, nil)
	messageStream = net.AppendFrame(messageStream, net.FrameMessage, encodeMessage(heartbeat))
	messageStream = net.AppendFrame(messageStream, net.FrameMessage, encodeMessage(reject))

	snapshotStream := net.AppendFrame(nil, net.FrameHello, net.Hello{Version: net.ProtocolVersion, Stream: net.StreamSnapshot, ClusterID: 0xc1, From: 1, To: 2}.AppendPayload(nil))
	snapshotStream = net.AppendFrame(snapshotStream, net.FrameSnapshotHeader, snapHeader)
	snapshotStream = net.AppendFrame(snapshotStream, net.FrameSnapshotChunk, []byte("0123"))
	snapshotStream = net.AppendFrame(snapshotStream, net.FrameSnapshotChunk, []byte("456789"))
	snapshotStream = net.AppendFrame(snapshotStream, net.FrameSnapshotEnd, net.SnapshotEnd{DataCRC32C: 0x280c069e}.AppendPayload(nil))

	answers := net.AppendFrame(nil, net.FrameHelloReply, net.HelloReply{Version: net.ProtocolVersion, Status: net.HelloAccepted, ClusterID: 0xc1, MemberID: 2}.AppendPayload(nil))
	answers = net.AppendFrame(answers, net.FrameSnapshotAck, net.SnapshotAck{Accepted: true}.AppendPayload(nil))
	refusals := net.AppendFrame(nil, net.FrameHelloReply, net.HelloReply{Version: net.ProtocolVersion, ClusterID: 0xc1, MemberID: 2, Reason: "cluster ID mismatch"}.AppendPayload(nil))
	refusals = net.AppendFrame(refusals, net.FrameHelloReply, net.HelloReply{Version: net.ProtocolVersion, Status: net.HelloRemoved, ClusterID: 0xc1, MemberID: 2, Reason: "member 1 was removed from the cluster"}.AppendPayload(nil))
	refusals = net.AppendFrame(refusals, net.FrameSnapshotAck, net.SnapshotAck{Reason: "snapshot data CRC-32C mismatch"}.AppendPayload(nil))

	return [][]byte{
		messageStream,
		snapshotStream,
		answers,
		refusals,
		{},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, byte(net.FrameMessage)},                                   // length beyond any maximum
		{0x00, 0xff, 0xff, 0xff, byte(net.FrameMessage), 1, 2, 3},                          // a large length, few bytes behind it
		net.AppendFrame(nil, net.FrameMessage, []byte{0x3a, 0x00, 0x3a, 0x00, 0x72, 0x00}), // empty entries and a nested response
	}
}
