package net

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	stdnet "net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/reflect/protoreflect"
)

const (
	// snapshotAckTimeout bounds the wait for the receiver's verdict after
	// the last chunk: it checks a CRC and hands the message to its queue.
	snapshotAckTimeout = 30 * time.Second
	// snapshotPreallocBytesMax bounds the buffer a receiver allocates from
	// the header's size before the data arrives; beyond it the buffer grows
	// with the data, so a header alone cannot make a receiver allocate
	// SnapshotBytesMax.
	snapshotPreallocBytesMax = 64 << 20
	// refusalReadTimeout bounds looking for a refusal after a failed write;
	// a refusal sent before the receiver closed is already buffered.
	refusalReadTimeout = time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sendSnapshot sends a MsgSnap on a connection of its own, so a snapshot of
// hundreds of MB does not hold up heartbeats on the message stream, and
// reports the outcome through Handler.ReportSnapshot. At most one snapshot
// per peer and snapshotSendsMax in all are in flight; a MsgSnap beyond
// that fails at once.
func (p *peer) sendSnapshot(m *raftpb.Message) {
	t := p.t
	if !p.snapshotSending.CompareAndSwap(false, true) {
		p.logf("MsgSnap at index %d failed: a snapshot to this peer is already in flight", m.GetSnapshot().GetMetadata().GetIndex())
		p.snapshotFailed()
		return
	}
	select {
	case t.snapshotSendSlots <- struct{}{}:
	default:
		p.snapshotSending.Store(false)
		p.logf("MsgSnap at index %d failed: %d snapshots already in flight", m.GetSnapshot().GetMetadata().GetIndex(), snapshotSendsMax)
		p.snapshotFailed()
		return
	}
	done := func() {
		<-t.snapshotSendSlots
		p.snapshotSending.Store(false)
	}
	started := t.spawn(func() {
		began := time.Now()
		err := p.streamSnapshot(m)
		// Free the slot before reporting: raft may answer a report with the
		// next MsgSnap at once.
		done()
		index := m.GetSnapshot().GetMetadata().GetIndex()
		if err != nil {
			if p.ctx.Err() == nil {
				p.logf("MsgSnap at index %d failed: %v", index, err)
				p.t.reports.reportUnreachable(p.id)
			}
			p.snapshotFailed()
			return
		}
		p.counters.snapshotsSent.Add(1)
		p.logf("MsgSnap at index %d (%d bytes) delivered in %v", index, len(m.GetSnapshot().GetData()), time.Since(began).Round(time.Millisecond))
		p.t.reports.reportSnapshot(p.id, false)
	})
	if !started {
		done()
	}
}

func (p *peer) snapshotFailed() {
	p.counters.snapshotsFailed.Add(1)
	p.t.reports.reportSnapshot(p.id, true)
}

// streamSnapshot dials a snapshot stream and writes header, chunks and CRC,
// then waits for the receiver's ack.
func (p *peer) streamSnapshot(m *raftpb.Message) error {
	cfg := &p.t.cfg
	data := m.GetSnapshot().GetData()
	header, err := SnapshotHeader{DataBytes: uint64(len(data)), Message: withoutSnapshotData(m)}.AppendPayload(nil)
	if err != nil {
		return fmt.Errorf("encode snapshot header: %w", err)
	}
	if len(header) > cfg.FrameBytesMax {
		return fmt.Errorf("snapshot header of %d bytes exceeds FrameBytesMax %d", len(header), cfg.FrameBytesMax)
	}
	conn, replies, _, err := p.dial(StreamSnapshot)
	if err != nil {
		return err
	}
	defer p.release(conn)
	if err := p.writeSnapshot(conn, header, data); err != nil {
		// A receiver that refuses early (size bound, busy) acks its reason
		// and closes while we write; its reason beats our broken pipe.
		if refusal := readRefusal(conn, replies); refusal != nil {
			return refusal
		}
		return err
	}
	conn.SetReadDeadline(time.Now().Add(snapshotAckTimeout))
	return readSnapshotAck(replies)
}

// readRefusal returns the refusal the receiver sent before closing, if one
// is already there to read.
func readRefusal(conn stdnet.Conn, replies *FrameReader) error {
	conn.SetReadDeadline(time.Now().Add(refusalReadTimeout))
	var refused *snapshotRefusedError
	if err := readSnapshotAck(replies); errors.As(err, &refused) {
		return err
	}
	return nil
}

// writeSnapshot writes header, chunks and end frames.
func (p *peer) writeSnapshot(conn stdnet.Conn, header, data []byte) error {
	cfg := &p.t.cfg
	bw := bufio.NewWriterSize(conn, writeBufferBytes)
	// Each frame gets its own deadline: a large snapshot may take long in
	// all, but a receiver that stops taking bytes is noticed.
	sentBytes := 0
	writeFrame := func(kind FrameKind, payload []byte) error {
		sentBytes += FrameHeaderBytes + len(payload)
		conn.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
		var frameHeader [FrameHeaderBytes]byte
		bw.Write(appendFrameHeader(frameHeader[:0], kind, len(payload)))
		bw.Write(payload)
		if kind == FrameSnapshotChunk {
			// Chunks are large; flush within this frame's deadline.
			return bw.Flush()
		}
		return nil
	}
	if err := writeFrame(FrameSnapshotHeader, header); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	var crc uint32
	for offset := 0; offset < len(data); offset += cfg.SnapshotChunkBytes {
		chunk := data[offset:min(offset+cfg.SnapshotChunkBytes, len(data))]
		if err := writeFrame(FrameSnapshotChunk, chunk); err != nil {
			return fmt.Errorf("write snapshot data at offset %d of %d: %w", offset, len(data), err)
		}
		crc = crc32.Update(crc, castagnoli, chunk)
	}
	writeFrame(FrameSnapshotEnd, SnapshotEnd{DataCRC32C: crc}.AppendPayload(nil))
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot end: %w", err)
	}
	p.counters.bytesSent.Add(uint64(sentBytes))
	return nil
}

// snapshotRefusedError is the receiver's refusal of a snapshot, with its
// reason.
type snapshotRefusedError struct{ reason string }

func (e *snapshotRefusedError) Error() string { return "refused by the receiver: " + e.reason }

// readSnapshotAck reads the receiver's verdict: nil if it took the
// snapshot, a *snapshotRefusedError if it refused.
func readSnapshotAck(replies *FrameReader) error {
	kind, payload, err := replies.ReadFrame()
	if err != nil {
		return fmt.Errorf("read snapshot ack: %w", err)
	}
	if kind != FrameSnapshotAck {
		return protocolErrorf("answered a snapshot with a %s frame", kind)
	}
	ack, err := DecodeSnapshotAck(payload)
	if err != nil {
		return err
	}
	if !ack.Accepted {
		return &snapshotRefusedError{reason: ack.Reason}
	}
	return nil
}

// withoutSnapshotData returns a shallow copy of the MsgSnap m whose snapshot
// keeps its metadata and drops its data, which travels in chunks. It copies
// every populated field through reflection so that fields raftpb may gain
// are carried too; m itself is not changed (the caller still owns it).
func withoutSnapshotData(m *raftpb.Message) *raftpb.Message {
	header := &raftpb.Message{}
	target := header.ProtoReflect()
	m.ProtoReflect().Range(func(field protoreflect.FieldDescriptor, value protoreflect.Value) bool {
		if field.Name() != "snapshot" {
			target.Set(field, value)
		}
		return true
	})
	target.SetUnknown(m.ProtoReflect().GetUnknown())
	header.Snapshot = &raftpb.Snapshot{Metadata: m.GetSnapshot().GetMetadata()}
	return header
}

// receiveSnapshot reassembles one MsgSnap, checks its size bound and CRC,
// hands it to the handler and acks the outcome. A refusal is acked with its
// reason so that the sender logs it.
func (t *TCPTransport) receiveSnapshot(conn stdnet.Conn, frames *FrameReader, p *peer) error {
	refuse := func(err error) error {
		t.writeSnapshotAck(conn, SnapshotAck{Reason: err.Error()}) // best effort: the stream ends next
		return fmt.Errorf("snapshot refused: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(t.cfg.IdleTimeout))
	kind, payload, err := frames.ReadFrame()
	if err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if kind != FrameSnapshotHeader {
		return refuse(protocolErrorf("snapshot stream opened with a %s frame", kind))
	}
	header, err := DecodeSnapshotHeader(payload)
	if err != nil {
		return refuse(err)
	}
	m := header.Message
	switch {
	case m.GetTo() != t.cfg.LocalID:
		return refuse(protocolErrorf("MsgSnap addressed to member %x on a stream to member %x", m.GetTo(), t.cfg.LocalID))
	case m.GetFrom() != p.id:
		return refuse(protocolErrorf("MsgSnap from member %x on a stream from member %x", m.GetFrom(), p.id))
	case header.DataBytes > uint64(t.cfg.SnapshotBytesMax):
		return refuse(fmt.Errorf("snapshot of %d bytes exceeds SnapshotBytesMax %d", header.DataBytes, t.cfg.SnapshotBytesMax))
	}
	select {
	case t.snapshotReceiveSlots <- struct{}{}:
		defer func() { <-t.snapshotReceiveSlots }()
	default:
		return refuse(fmt.Errorf("%d snapshots are already being received", snapshotReceivesMax))
	}
	p.counters.bytesReceived.Add(uint64(FrameHeaderBytes + len(payload)))
	data, err := t.readSnapshotData(conn, frames, header.DataBytes, &p.counters.bytesReceived)
	if err != nil {
		return refuse(err)
	}
	m.Snapshot.Data = data
	p.counters.snapshotsReceived.Add(1)
	if err := t.handler.Process(m); err != nil {
		t.counters.processErrors.Add(1)
		return refuse(fmt.Errorf("the receiving member did not take the snapshot: %w", err))
	}
	if err := t.writeSnapshotAck(conn, SnapshotAck{Accepted: true}); err != nil {
		return fmt.Errorf("write snapshot ack: %w", err)
	}
	return nil
}

// writeSnapshotAck writes the outcome of a snapshot stream within WriteTimeout.
func (t *TCPTransport) writeSnapshotAck(conn stdnet.Conn, ack SnapshotAck) error {
	conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
	_, err := conn.Write(AppendFrame(nil, FrameSnapshotAck, ack.AppendPayload(nil)))
	return err
}

// readSnapshotData reads chunks until dataBytes have arrived, then the end
// frame, and checks the CRC-32C. Chunks go to a spool file when
// SnapshotSpoolDir is set, so memory holds one chunk at a time; the data
// is read back only once it is complete and its CRC matches. Without a
// spool directory the buffer grows by doubling as data arrives (never past
// dataBytes), so memory follows what was received.
func (t *TCPTransport) readSnapshotData(conn stdnet.Conn, frames *FrameReader, dataBytes uint64, bytesReceived *atomic.Uint64) ([]byte, error) {
	var sink snapshotSink
	if t.cfg.SnapshotSpoolDir != "" {
		f, err := os.CreateTemp(t.cfg.SnapshotSpoolDir, spoolPattern)
		if err != nil {
			return nil, fmt.Errorf("spool snapshot data: %w", err)
		}
		sink = &fileSink{f: f}
	} else {
		sink = &memorySink{data: make([]byte, 0, min(dataBytes, snapshotPreallocBytesMax))}
	}
	defer sink.discard()
	var crc uint32
	var received uint64
	for received < dataBytes {
		conn.SetReadDeadline(time.Now().Add(t.cfg.IdleTimeout))
		kind, chunk, err := frames.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("read snapshot data after %d of %d bytes: %w", received, dataBytes, err)
		}
		if kind != FrameSnapshotChunk {
			return nil, protocolErrorf("%s frame after %d of %d snapshot bytes, want a chunk", kind, received, dataBytes)
		}
		if len(chunk) == 0 {
			return nil, protocolErrorf("empty snapshot chunk")
		}
		if received+uint64(len(chunk)) > dataBytes {
			return nil, protocolErrorf("snapshot chunks run past the %d bytes announced", dataBytes)
		}
		if err := sink.write(chunk, dataBytes); err != nil {
			return nil, fmt.Errorf("spool snapshot data at %d of %d bytes: %w", received, dataBytes, err)
		}
		received += uint64(len(chunk))
		crc = crc32.Update(crc, castagnoli, chunk)
		bytesReceived.Add(uint64(FrameHeaderBytes + len(chunk)))
	}
	conn.SetReadDeadline(time.Now().Add(t.cfg.IdleTimeout))
	kind, payload, err := frames.ReadFrame()
	if err != nil {
		return nil, fmt.Errorf("read snapshot end: %w", err)
	}
	if kind != FrameSnapshotEnd {
		return nil, protocolErrorf("%s frame after the snapshot data, want snapshot-end", kind)
	}
	bytesReceived.Add(uint64(FrameHeaderBytes + len(payload)))
	end, err := DecodeSnapshotEnd(payload)
	if err != nil {
		return nil, err
	}
	if end.DataCRC32C != crc {
		return nil, fmt.Errorf("snapshot data of %d bytes has CRC-32C %08x, the sender's is %08x", received, crc, end.DataCRC32C)
	}
	return sink.bytes(int(dataBytes))
}

// spoolPattern names the spool files of snapshots being received.
const spoolPattern = "incoming-*.part"

// removeSpoolLeftovers removes spool files a crash left in dir.
func removeSpoolLeftovers(dir string, logf func(string, ...any)) {
	if dir == "" {
		return
	}
	names, _ := filepath.Glob(filepath.Join(dir, spoolPattern))
	for _, name := range names {
		if err := os.Remove(name); err != nil {
			logf("remove the partial snapshot %s: %v", name, err)
			continue
		}
		logf("removed %s, a snapshot whose receipt was cut short", name)
	}
}

// snapshotSink holds a snapshot's data while it arrives.
type snapshotSink interface {
	// write appends a chunk; total is the size announced.
	write(chunk []byte, total uint64) error
	// bytes returns the n bytes written.
	bytes(n int) ([]byte, error)
	// discard releases what the sink holds.
	discard()
}

// memorySink grows a buffer by doubling as data arrives.
type memorySink struct{ data []byte }

func (s *memorySink) write(chunk []byte, total uint64) error {
	if len(s.data)+len(chunk) > cap(s.data) {
		grown := make([]byte, len(s.data), min(total, uint64(2*cap(s.data))+uint64(len(chunk))))
		copy(grown, s.data)
		s.data = grown
	}
	s.data = append(s.data, chunk...)
	return nil
}

func (s *memorySink) bytes(int) ([]byte, error) { return s.data, nil }
func (s *memorySink) discard()                  {}

// fileSink writes chunks to a spool file, read back once complete.
type fileSink struct {
	f       *os.File
	written int64
}

func (s *fileSink) write(chunk []byte, _ uint64) error {
	n, err := s.f.Write(chunk)
	s.written += int64(n)
	return err
}

func (s *fileSink) bytes(n int) ([]byte, error) {
	if s.written != int64(n) {
		return nil, fmt.Errorf("spool file %s holds %d bytes, want %d", s.f.Name(), s.written, n)
	}
	data := make([]byte, n)
	if _, err := s.f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("read back spool file %s: %w", s.f.Name(), err)
	}
	return data, nil
}

func (s *fileSink) discard() {
	s.f.Close()
	os.Remove(s.f.Name())
}
