package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Snapshot files live in snapDir named <index>-<term>.snap (16 hex digits
// each, so name order is index order). A file is
//
//	offset  size  field
//	0       8     magic "NODEDSNP"
//	8       4     format version (1)
//	12      4     payloadCRC: CRC-32C of the payload
//	16      8     payloadSizeBytes
//	24      8     index
//	32      8     term
//	40      4     headerCRC: CRC-32C of bytes 0..40
//	44      n     payload: the raftpb.Snapshot, protobuf-encoded
//
// A snapshot is written to <name>.tmp, synced, renamed into place, and the
// directory synced; only then is a snapshot record written to the WAL, and
// that record is the commit point: it carries the file's payloadCRC and
// size, so Open uses a snapshot file only if the WAL vouches for exactly
// those bytes.

const (
	snapSuffix          = ".snap"
	snapMagic           = "NODEDSNP"
	snapFormatVersion   = 1
	snapHeaderSizeBytes = 44
	// snapshotMarkerBodySizeBytes: flags u8, 3 zero bytes, payloadCRC u32,
	// fileSizeBytes u64.
	snapshotMarkerBodySizeBytes = 16
	markerFlagReset             = 1
	// snapshotFilesMax bounds how many snapshot files Open considers.
	snapshotFilesMax = 1 << 16
)

func snapName(index, term uint64) string { return hexPairName(index, term, snapSuffix) }

var marshalOptions = proto.MarshalOptions{Deterministic: true}

// encodeSnapshotFile returns the bytes of a snapshot file in pieces (the
// header, then the payload) and the payload's CRC. The snapshot's data is
// one of the pieces as it is, not copied: it can be tens of megabytes, and
// a member must have room for every copy.
func encodeSnapshotFile(snap *raftpb.Snapshot) (pieces [][]byte, payloadCRC uint32, err error) {
	payload, err := snapshotPayloadPieces(snap)
	if err != nil {
		return nil, 0, fmt.Errorf("disk: encode snapshot: %w", err)
	}
	var payloadSizeBytes int
	for _, p := range payload {
		payloadCRC = crc32.Update(payloadCRC, castagnoli, p)
		payloadSizeBytes += len(p)
	}
	h := make([]byte, snapHeaderSizeBytes)
	copy(h[0:8], snapMagic)
	binary.LittleEndian.PutUint32(h[8:12], snapFormatVersion)
	binary.LittleEndian.PutUint32(h[12:16], payloadCRC)
	binary.LittleEndian.PutUint64(h[16:24], uint64(payloadSizeBytes))
	binary.LittleEndian.PutUint64(h[24:32], snap.GetMetadata().GetIndex())
	binary.LittleEndian.PutUint64(h[32:40], snap.GetMetadata().GetTerm())
	binary.LittleEndian.PutUint32(h[40:44], crc32.Checksum(h[:40], castagnoli))
	return append([][]byte{h}, payload...), payloadCRC, nil
}

// snapshotPayloadPieces is the deterministic protobuf encoding of snap in
// pieces whose concatenation is marshalOptions.Marshal(snap): field 1
// (data) framed around the data itself, then field 2 (metadata).
func snapshotPayloadPieces(snap *raftpb.Snapshot) ([][]byte, error) {
	data := snap.GetData()
	if len(data) == 0 || len(snap.ProtoReflect().GetUnknown()) > 0 {
		b, err := marshalOptions.Marshal(snap)
		return [][]byte{b}, err
	}
	head := protowire.AppendTag(nil, 1, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(data)))
	tail := []byte{}
	if snap.Metadata != nil {
		meta, err := marshalOptions.Marshal(snap.Metadata)
		if err != nil {
			return nil, err
		}
		tail = protowire.AppendTag(tail, 2, protowire.BytesType)
		tail = protowire.AppendVarint(tail, uint64(len(meta)))
		tail = append(tail, meta...)
	}
	return [][]byte{head, data, tail}, nil
}

// unmarshalSnapshotPayload is proto.Unmarshal of a snapshot file's payload
// whose data aliases payload rather than being copied out of it: the data
// is most of the file (hundreds of megabytes for a large store), the caller
// read the file into a buffer of its own, and decoding the state copies
// what it keeps. A payload in any other shape than the one
// snapshotPayloadPieces writes (a field repeated, an unknown field) is
// left to proto.Unmarshal.
func unmarshalSnapshotPayload(payload []byte) (*raftpb.Snapshot, error) {
	snap := &raftpb.Snapshot{}
	var data, meta []byte
	seenData, seenMeta := false, false
	rest := payload
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || typ != protowire.BytesType || (num == 1 && seenData) || (num == 2 && seenMeta) || (num != 1 && num != 2) {
			return snap, proto.Unmarshal(payload, snap)
		}
		rest = rest[n:]
		v, n := protowire.ConsumeBytes(rest)
		if n < 0 {
			return snap, proto.Unmarshal(payload, snap)
		}
		rest = rest[n:]
		if num == 1 {
			data, seenData = v, true
		} else {
			meta, seenMeta = v, true
		}
	}
	if seenMeta {
		snap.Metadata = &raftpb.SnapshotMetadata{}
		if err := proto.Unmarshal(meta, snap.Metadata); err != nil {
			return nil, err
		}
	}
	if seenData {
		snap.Data = data[:len(data):len(data)]
		if snap.Data == nil {
			snap.Data = []byte{}
		}
	}
	return snap, nil
}

// decodeSnapshotFile checks and decodes a snapshot file's bytes against the
// index and term its name and WAL marker give.
func decodeSnapshotFile(b []byte, index, term uint64, m snapshotMarker) (*raftpb.Snapshot, error) {
	if len(b) < snapHeaderSizeBytes {
		return nil, fmt.Errorf("%d bytes, shorter than the %d-byte header", len(b), snapHeaderSizeBytes)
	}
	if !bytes.Equal(b[0:8], []byte(snapMagic)) {
		return nil, fmt.Errorf("bad magic %q", b[0:8])
	}
	if got, want := crc32.Checksum(b[:40], castagnoli), binary.LittleEndian.Uint32(b[40:44]); got != want {
		return nil, fmt.Errorf("header checksum %08x, stored %08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(b[8:12]); v != snapFormatVersion {
		return nil, fmt.Errorf("format version %d, this build reads %d", v, snapFormatVersion)
	}
	payloadSizeBytes := binary.LittleEndian.Uint64(b[16:24])
	if payloadSizeBytes != uint64(len(b)-snapHeaderSizeBytes) {
		return nil, fmt.Errorf("header says %d payload bytes, file holds %d", payloadSizeBytes, len(b)-snapHeaderSizeBytes)
	}
	if hi, ht := binary.LittleEndian.Uint64(b[24:32]), binary.LittleEndian.Uint64(b[32:40]); hi != index || ht != term {
		return nil, fmt.Errorf("header says index %d term %d, name says index %d term %d", hi, ht, index, term)
	}
	payload := b[snapHeaderSizeBytes:]
	payloadCRC := crc32.Checksum(payload, castagnoli)
	if stored := binary.LittleEndian.Uint32(b[12:16]); payloadCRC != stored {
		return nil, fmt.Errorf("payload checksum %08x, stored %08x", payloadCRC, stored)
	}
	if payloadCRC != m.payloadCRC || int64(len(b)) != m.fileSizeBytes {
		return nil, fmt.Errorf("file (checksum %08x, %d bytes) is not the one the WAL recorded (checksum %08x, %d bytes)",
			payloadCRC, len(b), m.payloadCRC, m.fileSizeBytes)
	}
	snap, err := unmarshalSnapshotPayload(payload)
	if err != nil {
		return nil, fmt.Errorf("decode payload: %w", err)
	}
	if snap.GetMetadata().GetIndex() != index || snap.GetMetadata().GetTerm() != term {
		return nil, fmt.Errorf("payload says index %d term %d, want index %d term %d",
			snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm(), index, term)
	}
	return snap, nil
}

// snapshotMarker is what a snapshot record in the WAL says.
type snapshotMarker struct {
	index, term   uint64
	reset         bool   // the raft log restarts at index (a snapshot received from the leader)
	payloadCRC    uint32 // of the snapshot file's payload
	fileSizeBytes int64
	// seq is the newest retained segment holding this marker (the record
	// itself or a copy in a later segment's head).
	seq uint64
	// usable is false once the snapshot file is known missing or damaged;
	// such a marker is never the anchor of a WAL release.
	usable bool
}

func (m snapshotMarker) encode(reset bool) []byte {
	b := make([]byte, snapshotMarkerBodySizeBytes)
	if reset {
		b[0] = markerFlagReset
	}
	binary.LittleEndian.PutUint32(b[4:8], m.payloadCRC)
	binary.LittleEndian.PutUint64(b[8:16], uint64(m.fileSizeBytes))
	return b
}

func decodeSnapshotMarker(rec Record) (snapshotMarker, error) {
	b := rec.Body
	if len(b) != snapshotMarkerBodySizeBytes {
		return snapshotMarker{}, fmt.Errorf("snapshot record body is %d bytes, want %d", len(b), snapshotMarkerBodySizeBytes)
	}
	if b[0]&^markerFlagReset != 0 || b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return snapshotMarker{}, errors.New("snapshot record has unknown flags")
	}
	size := binary.LittleEndian.Uint64(b[8:16])
	if size > uint64(fileSizeBytesMax) {
		return snapshotMarker{}, fmt.Errorf("snapshot record says a file of %d bytes", size)
	}
	return snapshotMarker{
		index:         rec.Index,
		term:          rec.Term,
		reset:         b[0]&markerFlagReset != 0,
		payloadCRC:    binary.LittleEndian.Uint32(b[4:8]),
		fileSizeBytes: int64(size),
		usable:        true,
	}, nil
}

// snapFile is a snapshot file found in snapDir.
type snapFile struct {
	index, term uint64
	name        string // snapDir/<index>-<term>.snap
}

// listSnapFiles returns the snapshot files of snapDir, oldest first, and
// the leftover temporary files there.
func listSnapFiles(fsys FS, snapDir string) (files []snapFile, tmps []string, err error) {
	return listHexPairFiles(fsys, snapDir, snapSuffix, snapshotFilesMax, func(index, term uint64, name string) snapFile {
		return snapFile{index: index, term: term, name: name}
	})
}

// markerIndexOf returns the position of the marker for (index, term), or -1.
func markerIndexOf(markers []snapshotMarker, index, term uint64) int {
	for i, m := range markers {
		if m.index == index && m.term == term {
			return i
		}
	}
	return -1
}

// newestMarkerIndex returns the highest snapshot index the WAL records
// (usable or not: entries at or below it are committed either way).
func newestMarkerIndex(markers []snapshotMarker) uint64 {
	n := uint64(0)
	for _, m := range markers {
		n = max(n, m.index)
	}
	return n
}

// newestUsableMarker returns the position of the usable marker with the
// highest index other than position except, or -1.
func newestUsableMarker(markers []snapshotMarker, except int) int {
	best := -1
	for i, m := range markers {
		if i != except && m.usable && (best < 0 || m.index > markers[best].index) {
			best = i
		}
	}
	return best
}
