package net

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Every frame kind survives encoding, framing and decoding.
func TestFramesRoundTrip(t *testing.T) {
	hello := Hello{Version: ProtocolVersion, Stream: StreamSnapshot, ClusterID: 0xabc, From: 1, To: 2}
	refused := HelloReply{Version: ProtocolVersion, ClusterID: 0xabc, MemberID: 2, Reason: "cluster ID mismatch"}
	removed := HelloReply{Version: ProtocolVersion, Status: HelloRemoved, ClusterID: 0xabc, MemberID: 2, Reason: "member 1 was removed"}
	accepted := HelloReply{Version: ProtocolVersion, Status: HelloAccepted, ClusterID: 0xabc, MemberID: 2}
	message := appMessage(1, 2, 41, 300)
	messagePayload, err := AppendMessagePayload(nil, message)
	if err != nil {
		t.Fatal(err)
	}
	snapshotHeader := SnapshotHeader{DataBytes: 1 << 30, Message: withoutSnapshotData(snapshotMessage(1, 2, nil))}
	snapshotHeaderPayload, err := snapshotHeader.AppendPayload(nil)
	if err != nil {
		t.Fatal(err)
	}

	var stream []byte
	stream = AppendFrame(stream, FrameHello, hello.AppendPayload(nil))
	stream = AppendFrame(stream, FrameHelloReply, refused.AppendPayload(nil))
	stream = AppendFrame(stream, FrameHelloReply, accepted.AppendPayload(nil))
	stream = AppendFrame(stream, FrameHelloReply, removed.AppendPayload(nil))
	stream = AppendFrame(stream, FrameMessage, messagePayload)
	stream, err = appendMessageFrame(stream, message) // the writer's in-place path
	if err != nil {
		t.Fatal(err)
	}
	stream = AppendFrame(stream, FrameKeepalive, nil)
	stream = AppendFrame(stream, FrameSnapshotHeader, snapshotHeaderPayload)
	stream = AppendFrame(stream, FrameSnapshotChunk, []byte("chunk"))
	stream = AppendFrame(stream, FrameSnapshotEnd, SnapshotEnd{DataCRC32C: 0xdeadbeef}.AppendPayload(nil))
	stream = AppendFrame(stream, FrameSnapshotAck, SnapshotAck{Reason: "no room"}.AppendPayload(nil))

	fr := NewFrameReader(bytes.NewReader(stream), 1<<20)
	next := func(want FrameKind) []byte {
		t.Helper()
		kind, payload, err := fr.ReadFrame()
		if err != nil || kind != want {
			t.Fatalf("ReadFrame = %v, %v; want a %s frame", kind, err, want)
		}
		return payload
	}
	if got, err := DecodeHello(next(FrameHello)); err != nil || got != hello {
		t.Errorf("hello: %+v, %v", got, err)
	}
	if got, err := DecodeHelloReply(next(FrameHelloReply)); err != nil || got != refused {
		t.Errorf("refusing reply: %+v, %v", got, err)
	}
	if got, err := DecodeHelloReply(next(FrameHelloReply)); err != nil || got != accepted {
		t.Errorf("accepting reply: %+v, %v", got, err)
	}
	if got, err := DecodeHelloReply(next(FrameHelloReply)); err != nil || got != removed {
		t.Errorf("removing reply: %+v, %v", got, err)
	}
	for range 2 {
		if got, err := DecodeMessage(next(FrameMessage)); err != nil || !proto.Equal(got, message) {
			t.Errorf("message: %v, %v", got, err)
		}
	}
	if payload := next(FrameKeepalive); len(payload) != 0 {
		t.Errorf("keepalive payload %q", payload)
	}
	if got, err := DecodeSnapshotHeader(next(FrameSnapshotHeader)); err != nil || got.DataBytes != snapshotHeader.DataBytes || !proto.Equal(got.Message, snapshotHeader.Message) {
		t.Errorf("snapshot header: %+v, %v", got, err)
	}
	if payload := next(FrameSnapshotChunk); string(payload) != "chunk" {
		t.Errorf("chunk %q", payload)
	}
	if got, err := DecodeSnapshotEnd(next(FrameSnapshotEnd)); err != nil || got.DataCRC32C != 0xdeadbeef {
		t.Errorf("snapshot end: %+v, %v", got, err)
	}
	if got, err := DecodeSnapshotAck(next(FrameSnapshotAck)); err != nil || got.Accepted || got.Reason != "no room" {
		t.Errorf("snapshot ack: %+v, %v", got, err)
	}
	if _, _, err := fr.ReadFrame(); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

// Malformed input is an error wrapping ErrProtocol (or a truncation), never
// a panic.
func TestFrameReaderRefusesMalformedFrames(t *testing.T) {
	cases := []struct {
		name     string
		input    []byte
		protocol bool // the error is ErrProtocol rather than a truncation
	}{
		{"unknown kind", []byte{0, 0, 0, 0, 0}, true},
		{"kind past the last", []byte{0, 0, 0, 0, byte(FrameSnapshotAck) + 1}, true},
		{"length over maximum", []byte{0, 0x10, 0, 1, byte(FrameMessage)}, true},
		{"length at 4 GiB", []byte{0xff, 0xff, 0xff, 0xff, byte(FrameMessage)}, true},
		{"truncated header", []byte{0, 0, 0}, false},
		{"truncated payload", []byte{0, 0, 0, 9, byte(FrameMessage), 1, 2}, false},
	}
	for _, c := range cases {
		_, _, err := NewFrameReader(bytes.NewReader(c.input), 1<<20).ReadFrame()
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if got := errors.Is(err, ErrProtocol); got != c.protocol {
			t.Errorf("%s: %v; ErrProtocol %t, want %t", c.name, err, got, c.protocol)
		}
		if !c.protocol && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %v, want io.ErrUnexpectedEOF", c.name, err)
		}
	}
}

// A length prefix alone does not make the reader allocate: a frame that
// claims 16 MiB and delivers 10 bytes costs little memory.
func TestFrameReaderAllocatesOnlyWhatArrives(t *testing.T) {
	input := append([]byte{0, 0xff, 0xff, 0xff, byte(FrameMessage)}, make([]byte, 10)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := NewFrameReader(bytes.NewReader(input), 16<<20).ReadFrame()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want a truncation", err)
	}
	const allowedBytes = 512 << 10 // the reader's buffers and one read step
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > allowedBytes {
		t.Fatalf("a 16 MiB length prefix with 10 bytes behind it allocated %d bytes (allowed %d)", allocated, allowedBytes)
	}
}

func TestDecodersRefuseMalformedPayloads(t *testing.T) {
	validHello := Hello{Version: ProtocolVersion, Stream: StreamMessages, ClusterID: 1, From: 2, To: 3}.AppendPayload(nil)
	messageWithData, err := SnapshotHeader{DataBytes: 4, Message: snapshotMessage(1, 2, []byte("data"))}.AppendPayload(nil)
	if err != nil {
		t.Fatal(err)
	}
	notSnap, err := SnapshotHeader{DataBytes: 4, Message: appMessage(1, 2, 1, 1)}.AppendPayload(nil)
	if err != nil {
		t.Fatal(err)
	}
	snapWithoutSnapshot, err := SnapshotHeader{Message: &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum()}}.AppendPayload(nil)
	if err != nil {
		t.Fatal(err)
	}
	reply := func(accepted byte, reason string) []byte {
		b := HelloReply{Version: ProtocolVersion, ClusterID: 1, MemberID: 2}.AppendPayload(nil)
		b[2] = accepted
		return append(b, reason...)
	}
	cases := []struct {
		name   string
		decode func() error
		want   string
	}{
		{"empty hello", func() error { _, err := DecodeHello(nil); return err }, "too short"},
		{"long hello", func() error { _, err := DecodeHello(append(validHello, 0)); return err }, "want 27"},
		{"hello of version 0", func() error { _, err := DecodeHello(make([]byte, 27)); return err }, "protocol version 0"},
		{"short reply", func() error { _, err := DecodeHelloReply(validHello[:5]); return err }, "at least"},
		{"reply status 3", func() error { _, err := DecodeHelloReply(reply(3, "")); return err }, "unknown status 3"},
		{"refusal without reason", func() error { _, err := DecodeHelloReply(reply(0, "")); return err }, "refused with reason"},
		{"removal without reason", func() error { _, err := DecodeHelloReply(reply(2, "")); return err }, "removed with reason"},
		{"acceptance with reason", func() error { _, err := DecodeHelloReply(reply(1, "why")); return err }, "accepted with reason"},
		{"reason not UTF-8", func() error { _, err := DecodeHelloReply(reply(0, "\xff")); return err }, "UTF-8"},
		{"reason too long", func() error { _, err := DecodeHelloReply(reply(0, strings.Repeat("x", 600))); return err }, "exceeds"},
		{"message garbage", func() error { _, err := DecodeMessage([]byte{0xff, 0xff}); return err }, "decode raft message"},
		{"snapshot header short", func() error { _, err := DecodeSnapshotHeader([]byte{1}); return err }, "too short"},
		{"snapshot header inline data", func() error { _, err := DecodeSnapshotHeader(messageWithData); return err }, "inline data"},
		{"snapshot header of MsgApp", func() error { _, err := DecodeSnapshotHeader(notSnap); return err }, "want MsgSnap"},
		{"snapshot header without snapshot", func() error { _, err := DecodeSnapshotHeader(snapWithoutSnapshot); return err }, "without a snapshot"},
		{"snapshot end long", func() error { _, err := DecodeSnapshotEnd(make([]byte, 5)); return err }, "want 4"},
		{"empty ack", func() error { _, err := DecodeSnapshotAck(nil); return err }, "empty"},
		{"ack accepted with reason", func() error { _, err := DecodeSnapshotAck([]byte("\x01why")); return err }, "with reason"},
	}
	for _, c := range cases {
		err := c.decode()
		if err == nil || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want ErrProtocol saying %q", c.name, err, c.want)
		}
	}
}

// A reason longer than the wire allows is cut on a rune boundary, so the
// encoder never produces what the decoder refuses.
func TestLongReasonIsTruncatedToValidUTF8(t *testing.T) {
	reason := strings.Repeat("é", reasonBytesMax) // two bytes a rune
	payload := SnapshotAck{Reason: "x" + reason}.AppendPayload(nil)
	ack, err := DecodeSnapshotAck(payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(ack.Reason) > reasonBytesMax || !strings.HasPrefix("x"+reason, ack.Reason) {
		t.Fatalf("reason of %d bytes not a prefix within %d", len(ack.Reason), reasonBytesMax)
	}
}
