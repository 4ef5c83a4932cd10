package net

// The wire format of the peer transport, protocol version 1.
//
// A connection is dialled by the member that sends and carries traffic in
// one direction (plus the acceptor's answers). It opens with the four bytes
// of connectionMagic, then carries frames:
//
//	+------------------------+------------+---------------------------+
//	| payload length: uint32 | kind: byte | payload (length bytes)    |
//	| big-endian             |            |                           |
//	+------------------------+------------+---------------------------+
//
// The first frame is a Hello from the dialer that binds the connection to
// {protocol version, stream kind, cluster ID, from ID, to ID}; the acceptor
// answers with one HelloReply: accepted, refused with a reason (another
// cluster, another member, not a peer), or removed (the dialer was removed
// from the cluster and must stop), and closes the connection unless it
// accepted.
//
// A message stream (StreamMessages) then carries FrameMessage frames (one
// proto-encoded raftpb.Message each, never a MsgSnap) and, every
// IdleTimeout/4, a FrameKeepalive (empty). The acceptor echoes each
// keepalive and sends nothing else, so each side learns within IdleTimeout
// that the other went silent (a dead host or a partition sends no FIN).
//
// A snapshot stream (StreamSnapshot) carries exactly one MsgSnap:
// FrameSnapshotHeader (the data size and the message without its data),
// FrameSnapshotChunk frames whose payloads concatenate to the data,
// FrameSnapshotEnd (the CRC-32C of the data); the acceptor answers with
// FrameSnapshotAck once the message was handed over (or refused), and both
// sides close.
//
// Every integer is big-endian. The payload length is checked against the
// reader's maximum before anything is read or allocated for it, and the
// payload buffer grows only as bytes actually arrive, so a length prefix on
// its own cannot make a reader allocate.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// ProtocolVersion is the version of the wire format this package speaks.
const ProtocolVersion uint16 = 1

// connectionMagic opens every peer connection, so that a client that dialled
// the peer port by mistake (an HTTP client, etcdctl) is told apart from a
// malformed peer at the first four bytes.
const connectionMagic = "NDPR"

// FrameHeaderBytes is the size of a frame header: the payload length and
// the kind.
const FrameHeaderBytes = 5

const (
	// frameReadStepBytes is how far ahead of the bytes received so far a
	// FrameReader allocates room for a payload.
	frameReadStepBytes = 64 << 10
	// frameBufferRetainBytesMax is the largest payload buffer a FrameReader
	// keeps for the next frame; a larger one (a rare huge MsgApp) is left
	// to the garbage collector instead of pinning memory per connection.
	frameBufferRetainBytesMax = 2 << 20
	// frameReaderBufferBytes sizes the buffered reader under a FrameReader.
	frameReaderBufferBytes = 64 << 10
	// controlFrameBytesMax bounds frames that carry no raft data (hello,
	// hello reply, snapshot end and ack).
	controlFrameBytesMax = 1 << 10
	// reasonBytesMax bounds the human-readable reason in a refusal.
	reasonBytesMax = 512
)

// FrameKind says what a frame's payload holds.
type FrameKind uint8

const (
	FrameHello          FrameKind = 1 // dialer: binds the connection (Hello)
	FrameHelloReply     FrameKind = 2 // acceptor: accepts or refuses (HelloReply)
	FrameMessage        FrameKind = 3 // a proto-encoded raftpb.Message, not MsgSnap
	FrameKeepalive      FrameKind = 4 // empty; proves the stream alive both ways (echoed)
	FrameSnapshotHeader FrameKind = 5 // SnapshotHeader: data size and the MsgSnap without data
	FrameSnapshotChunk  FrameKind = 6 // the next bytes of the snapshot data (non-empty)
	FrameSnapshotEnd    FrameKind = 7 // SnapshotEnd: CRC-32C of the whole data
	FrameSnapshotAck    FrameKind = 8 // acceptor: SnapshotAck, the outcome
)

func (k FrameKind) String() string {
	switch k {
	case FrameHello:
		return "hello"
	case FrameHelloReply:
		return "hello-reply"
	case FrameMessage:
		return "message"
	case FrameKeepalive:
		return "keepalive"
	case FrameSnapshotHeader:
		return "snapshot-header"
	case FrameSnapshotChunk:
		return "snapshot-chunk"
	case FrameSnapshotEnd:
		return "snapshot-end"
	case FrameSnapshotAck:
		return "snapshot-ack"
	}
	return fmt.Sprintf("frame-kind(%d)", uint8(k))
}

func (k FrameKind) known() bool { return k >= FrameHello && k <= FrameSnapshotAck }

// StreamKind says what a connection carries after its hello.
type StreamKind uint8

const (
	StreamMessages StreamKind = 1 // raft messages other than MsgSnap, in order
	StreamSnapshot StreamKind = 2 // one MsgSnap, in chunks
)

func (s StreamKind) String() string {
	switch s {
	case StreamMessages:
		return "message"
	case StreamSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("stream-kind(%d)", uint8(s))
}

// ErrProtocol is wrapped by every error that means the other side broke the
// wire format (as opposed to the connection failing): an unknown frame kind,
// a length over the maximum, a payload that does not decode, a frame out of
// order.
var ErrProtocol = errors.New("net: peer protocol violation")

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// FrameReader reads frames from a byte stream that came from outside.
type FrameReader struct {
	r             *bufio.Reader
	frameBytesMax int
	header        [FrameHeaderBytes]byte
	payload       []byte // reused between frames; see frameBufferRetainBytesMax
}

// NewFrameReader returns a reader that refuses frames whose payload exceeds
// frameBytesMax bytes.
func NewFrameReader(r io.Reader, frameBytesMax int) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, frameReaderBufferBytes), frameBytesMax: frameBytesMax}
}

// ReadFrame returns the next frame. The payload is only valid until the next
// call. At a frame boundary the end of the stream is io.EOF; inside a frame
// it is io.ErrUnexpectedEOF. An unknown kind or an oversized length is an
// error before any payload byte is read.
func (fr *FrameReader) ReadFrame() (FrameKind, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.header[:]); err != nil {
		return 0, nil, err
	}
	payloadBytes := binary.BigEndian.Uint32(fr.header[0:4])
	kind := FrameKind(fr.header[4])
	if !kind.known() {
		return 0, nil, protocolErrorf("unknown frame kind %d (length prefix %d)", uint8(kind), payloadBytes)
	}
	if uint64(payloadBytes) > uint64(fr.frameBytesMax) {
		return 0, nil, protocolErrorf("%s frame of %d bytes exceeds the maximum of %d bytes", kind, payloadBytes, fr.frameBytesMax)
	}
	payload, err := fr.readPayload(int(payloadBytes))
	if err != nil {
		return 0, nil, fmt.Errorf("reading %s frame of %d bytes: %w", kind, payloadBytes, err)
	}
	return kind, payload, nil
}

// readPayload reads n bytes (n already checked against the maximum). The
// buffer grows geometrically but never more than frameReadStepBytes or twice
// the bytes received beyond what has arrived.
func (fr *FrameReader) readPayload(n int) ([]byte, error) {
	buf := fr.payload[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, max(2*cap(buf), frameReadStepBytes)))
			copy(grown, buf)
			buf = grown
		}
		got, err := io.ReadFull(fr.r, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+got]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	if cap(buf) <= frameBufferRetainBytesMax {
		fr.payload = buf[:0]
	} else {
		fr.payload = nil
	}
	return buf, nil
}

// AppendFrame appends a frame of the given kind and payload to b.
func AppendFrame(b []byte, kind FrameKind, payload []byte) []byte {
	b = appendFrameHeader(b, kind, len(payload))
	return append(b, payload...)
}

func appendFrameHeader(b []byte, kind FrameKind, payloadBytes int) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(payloadBytes))
	return append(b, byte(kind))
}

// appendMessageFrame appends a FrameMessage holding m, marshalled in place
// (no intermediate copy on the hot path).
func appendMessageFrame(b []byte, m *raftpb.Message) ([]byte, error) {
	start := len(b)
	b = appendFrameHeader(b, FrameMessage, 0)
	b, err := AppendMessagePayload(b, m)
	if err != nil {
		return b[:start], fmt.Errorf("marshal %s: %w", m.GetType(), err)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-FrameHeaderBytes))
	return b, nil
}

// Hello is the dialer's first frame: who is calling whom, in which cluster,
// for what kind of stream.
type Hello struct {
	Version   uint16
	Stream    StreamKind
	ClusterID uint64
	From      uint64 // the dialing member
	To        uint64 // the member the dialer believes it reached
}

// helloPayloadBytes: version(2) stream(1) cluster(8) from(8) to(8).
const helloPayloadBytes = 2 + 1 + 8 + 8 + 8

// AppendPayload appends h's encoding to b.
func (h Hello) AppendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = append(b, byte(h.Stream))
	b = binary.BigEndian.AppendUint64(b, h.ClusterID)
	b = binary.BigEndian.AppendUint64(b, h.From)
	return binary.BigEndian.AppendUint64(b, h.To)
}

// DecodeHello decodes a FrameHello payload. A version other than
// ProtocolVersion is an error (the rest of the layout may differ).
func DecodeHello(payload []byte) (Hello, error) {
	if len(payload) < 2 {
		return Hello{}, protocolErrorf("hello of %d bytes is too short to hold a version", len(payload))
	}
	var h Hello
	h.Version = binary.BigEndian.Uint16(payload)
	if h.Version != ProtocolVersion {
		return h, protocolErrorf("hello speaks protocol version %d, this member speaks %d", h.Version, ProtocolVersion)
	}
	if len(payload) != helloPayloadBytes {
		return Hello{}, protocolErrorf("hello of %d bytes, want %d", len(payload), helloPayloadBytes)
	}
	h.Stream = StreamKind(payload[2])
	h.ClusterID = binary.BigEndian.Uint64(payload[3:])
	h.From = binary.BigEndian.Uint64(payload[11:])
	h.To = binary.BigEndian.Uint64(payload[19:])
	return h, nil
}

// HelloStatus is the acceptor's verdict on a hello.
type HelloStatus uint8

const (
	HelloRefused  HelloStatus = 0 // refused; the reason says why
	HelloAccepted HelloStatus = 1
	// HelloRemoved refuses a member that was removed from the cluster: it
	// must stop, not redial (etcd: "the member has been permanently
	// removed from the cluster").
	HelloRemoved HelloStatus = 2
)

func (s HelloStatus) String() string {
	switch s {
	case HelloRefused:
		return "refused"
	case HelloAccepted:
		return "accepted"
	case HelloRemoved:
		return "removed"
	}
	return fmt.Sprintf("hello-status(%d)", uint8(s))
}

// HelloReply is the acceptor's answer to a Hello. The acceptor names itself
// so that the dialer can check it reached the member it meant to.
type HelloReply struct {
	Version   uint16
	Status    HelloStatus
	ClusterID uint64
	MemberID  uint64
	Reason    string // why the stream was refused; empty when accepted
}

// helloReplyFixedBytes: version(2) status(1) cluster(8) member(8); the
// reason follows.
const helloReplyFixedBytes = 2 + 1 + 8 + 8

// AppendPayload appends r's encoding to b; a reason longer than the wire
// allows is cut.
func (r HelloReply) AppendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, r.Version)
	b = append(b, byte(r.Status))
	b = binary.BigEndian.AppendUint64(b, r.ClusterID)
	b = binary.BigEndian.AppendUint64(b, r.MemberID)
	return append(b, truncateReason(r.Reason)...)
}

// DecodeHelloReply decodes a FrameHelloReply payload.
func DecodeHelloReply(payload []byte) (HelloReply, error) {
	if len(payload) < helloReplyFixedBytes {
		return HelloReply{}, protocolErrorf("hello reply of %d bytes, want at least %d", len(payload), helloReplyFixedBytes)
	}
	var r HelloReply
	r.Version = binary.BigEndian.Uint16(payload)
	if r.Version != ProtocolVersion {
		return HelloReply{}, protocolErrorf("hello reply speaks protocol version %d, this member speaks %d", r.Version, ProtocolVersion)
	}
	r.Status = HelloStatus(payload[2])
	if r.Status > HelloRemoved {
		return HelloReply{}, protocolErrorf("hello reply with unknown status %d", payload[2])
	}
	r.ClusterID = binary.BigEndian.Uint64(payload[3:])
	r.MemberID = binary.BigEndian.Uint64(payload[11:])
	reason, err := decodeReason(payload[helloReplyFixedBytes:])
	if err != nil {
		return HelloReply{}, fmt.Errorf("hello reply: %w", err)
	}
	if (r.Status == HelloAccepted) != (reason == "") {
		return HelloReply{}, protocolErrorf("hello reply %s with reason %q; a reason comes with a refusal and only then", r.Status, reason)
	}
	r.Reason = reason
	return r, nil
}

// AppendMessagePayload appends m's proto encoding to b.
func AppendMessagePayload(b []byte, m *raftpb.Message) ([]byte, error) {
	return proto.MarshalOptions{}.MarshalAppend(b, m)
}

// DecodeMessage decodes a FrameMessage payload. The message owns its memory
// (nothing aliases the payload).
func DecodeMessage(payload []byte) (*raftpb.Message, error) {
	m, err := decodeMessage(payload)
	if err != nil {
		return nil, protocolErrorf("decode raft message of %d bytes: %v", len(payload), err)
	}
	return m, nil
}

// SnapshotHeader opens a snapshot stream: the MsgSnap whose snapshot data
// follows in chunks, and the size of that data.
type SnapshotHeader struct {
	DataBytes uint64
	Message   *raftpb.Message // a MsgSnap whose Snapshot.Data is empty
}

// AppendPayload appends h's encoding (size, then the proto message) to b.
func (h SnapshotHeader) AppendPayload(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, h.DataBytes)
	return proto.MarshalOptions{}.MarshalAppend(b, h.Message)
}

// DecodeSnapshotHeader decodes a FrameSnapshotHeader payload and checks that
// it describes a MsgSnap without inline data.
func DecodeSnapshotHeader(payload []byte) (SnapshotHeader, error) {
	if len(payload) < 8 {
		return SnapshotHeader{}, protocolErrorf("snapshot header of %d bytes is too short to hold a size", len(payload))
	}
	m, err := DecodeMessage(payload[8:])
	if err != nil {
		return SnapshotHeader{}, fmt.Errorf("snapshot header: %w", err)
	}
	if m.GetType() != raftpb.MessageType_MsgSnap {
		return SnapshotHeader{}, protocolErrorf("snapshot header carries %s, want MsgSnap", m.GetType())
	}
	if m.GetSnapshot() == nil {
		return SnapshotHeader{}, protocolErrorf("snapshot header carries a MsgSnap without a snapshot")
	}
	if len(m.GetSnapshot().GetData()) != 0 {
		return SnapshotHeader{}, protocolErrorf("snapshot header carries %d bytes of inline data; data travels in chunks", len(m.GetSnapshot().GetData()))
	}
	return SnapshotHeader{DataBytes: binary.BigEndian.Uint64(payload), Message: m}, nil
}

// SnapshotEnd closes the data of a snapshot stream.
type SnapshotEnd struct {
	DataCRC32C uint32 // CRC-32C (Castagnoli) of the whole snapshot data
}

// AppendPayload appends e's encoding to b.
func (e SnapshotEnd) AppendPayload(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, e.DataCRC32C)
}

// DecodeSnapshotEnd decodes a FrameSnapshotEnd payload.
func DecodeSnapshotEnd(payload []byte) (SnapshotEnd, error) {
	if len(payload) != 4 {
		return SnapshotEnd{}, protocolErrorf("snapshot end of %d bytes, want 4", len(payload))
	}
	return SnapshotEnd{DataCRC32C: binary.BigEndian.Uint32(payload)}, nil
}

// SnapshotAck is the receiver's verdict on a snapshot stream.
type SnapshotAck struct {
	Accepted bool   // the message was reassembled, verified and handed over
	Reason   string // why not; empty when accepted
}

// AppendPayload appends a's encoding to b; a reason longer than the wire
// allows is cut.
func (a SnapshotAck) AppendPayload(b []byte) []byte {
	b = append(b, boolByte(a.Accepted))
	return append(b, truncateReason(a.Reason)...)
}

// DecodeSnapshotAck decodes a FrameSnapshotAck payload.
func DecodeSnapshotAck(payload []byte) (SnapshotAck, error) {
	if len(payload) < 1 {
		return SnapshotAck{}, protocolErrorf("empty snapshot ack")
	}
	accepted, err := decodeBool(payload[0], "snapshot ack")
	if err != nil {
		return SnapshotAck{}, err
	}
	reason, err := decodeReason(payload[1:])
	if err != nil {
		return SnapshotAck{}, fmt.Errorf("snapshot ack: %w", err)
	}
	if accepted != (reason == "") {
		return SnapshotAck{}, protocolErrorf("snapshot ack: accepted=%t with reason %q", accepted, reason)
	}
	return SnapshotAck{Accepted: accepted, Reason: reason}, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func decodeBool(b byte, what string) (bool, error) {
	switch b {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, protocolErrorf("%s: flag byte %d, want 0 or 1", what, b)
}

// truncateReason cuts a reason to reasonBytesMax without splitting a rune.
func truncateReason(reason string) string {
	if len(reason) <= reasonBytesMax {
		return reason
	}
	cut := reasonBytesMax
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

func decodeReason(b []byte) (string, error) {
	if len(b) > reasonBytesMax {
		return "", protocolErrorf("reason of %d bytes exceeds %d", len(b), reasonBytesMax)
	}
	if !utf8.Valid(b) {
		return "", protocolErrorf("reason is not valid UTF-8")
	}
	return string(b), nil
}
