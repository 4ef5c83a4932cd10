package node

import (
	"encoding/binary"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// A member's snapshot (raftpb.Snapshot.Data) is everything applying the log
// built that is not in raft's own metadata: the kvsm state and the member
// table. Layout:
//
//	magic "NODEDSN1"
//	uvarint len, kvsm snapshot bytes
//	uvarint member count, then per member: uvarint len, pb.Member bytes
//	uvarint removed count, then per ID: uvarint ID
//	uvarint applied-request count, then per ID: uvarint ID (oldest first)
//
// Integrity is the job of whoever moved the bytes (disk checksums snapshot
// files; net checksums snapshot transfers); decoding still refuses anything
// malformed with an error, never a panic.
const snapshotMagic = "NODEDSN1"

// snapshotMembersMax bounds the member table a snapshot may carry, so a
// corrupt count cannot make decoding allocate without limit.
const snapshotMembersMax = 1 << 16

type snapshotParts struct {
	kv         []byte
	membership membership
	requests   []uint64
}

// kvSnapshotter is what encodeSnapshot needs of the store (*kvsm.Store).
type kvSnapshotter interface {
	SnapshotSizeBytes() int
	AppendSnapshot(b []byte) []byte
}

var (
	_ kvSnapshotter = (*kvsm.Store)(nil)
	_ kvSnapshotter = (*kvsm.Frozen)(nil)
)

// LocalSnapshot is a local snapshot for the host to store: raft's metadata,
// and the applied state frozen when the node took it, encoded by Encode.
// The host may call Encode on any goroutine while the node goes on
// applying (nothing it reads changes: kvsm.Frozen, and copies of the member
// table and the applied requests), so that encoding a large store (hundreds
// of milliseconds for a gigabyte) does not stall the member's loop. The
// encoding is the same bytes, wherever and whenever it runs.
type LocalSnapshot struct {
	Metadata *raftpb.SnapshotMetadata
	kv       *kvsm.Frozen
	members  membership
	requests []uint64
}

func (n *Node) takeLocalSnapshot(meta *raftpb.SnapshotMetadata) *LocalSnapshot {
	return &LocalSnapshot{
		Metadata: meta,
		kv:       n.store.Freeze(),
		members:  n.members.clone(),
		requests: n.applied.ordered(),
	}
}

// Encode returns the snapshot with its data.
func (l *LocalSnapshot) Encode() *raftpb.Snapshot {
	return &raftpb.Snapshot{Data: encodeSnapshot(l.kv, &l.members, l.requests), Metadata: l.Metadata}
}

// String names the snapshot by index and term, for traces.
func (l *LocalSnapshot) String() string {
	return fmt.Sprintf("local-snapshot %d/%d", l.Metadata.GetIndex(), l.Metadata.GetTerm())
}

// encodeSnapshot encodes the store, the member table and the applied
// requests into one buffer allocated once at its final size: the store's
// part is counted first, then written in place.
func encodeSnapshot(store kvSnapshotter, ms *membership, requests []uint64) []byte {
	kvSizeBytes := store.SnapshotSizeBytes()
	b := make([]byte, 0, len(snapshotMagic)+binary.MaxVarintLen64+kvSizeBytes+64*len(ms.members)+
		binary.MaxVarintLen64*(len(ms.removed)+len(requests)+3))
	b = append(b, snapshotMagic...)
	b = binary.AppendUvarint(b, uint64(kvSizeBytes))
	kvStart := len(b)
	b = store.AppendSnapshot(b)
	if len(b)-kvStart != kvSizeBytes {
		panic(fmt.Sprintf("node: kv snapshot holds %d bytes, %d counted", len(b)-kvStart, kvSizeBytes))
	}
	b = binary.AppendUvarint(b, uint64(len(ms.members)))
	for _, m := range ms.members {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.proto())
		if err != nil {
			panic(fmt.Sprintf("node: marshal member %x: %v", m.ID, err))
		}
		b = binary.AppendUvarint(b, uint64(len(data)))
		b = append(b, data...)
	}
	b = binary.AppendUvarint(b, uint64(len(ms.removed)))
	for _, id := range ms.removed {
		b = binary.AppendUvarint(b, id)
	}
	b = binary.AppendUvarint(b, uint64(len(requests)))
	for _, id := range requests {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

var errSnapshotMalformed = errors.New("node: malformed snapshot")

func decodeSnapshot(data []byte) (snapshotParts, error) {
	var parts snapshotParts
	if len(data) < len(snapshotMagic) || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return parts, fmt.Errorf("%w: bad magic", errSnapshotMalformed)
	}
	rest := data[len(snapshotMagic):]
	next := func(what string) (uint64, error) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, fmt.Errorf("%w: %s", errSnapshotMalformed, what)
		}
		rest = rest[n:]
		return v, nil
	}
	bytesOf := func(what string) ([]byte, error) {
		n, err := next(what + " length")
		if err != nil {
			return nil, err
		}
		if n > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: %s of %d bytes with %d left", errSnapshotMalformed, what, n, len(rest))
		}
		b := rest[:n]
		rest = rest[n:]
		return b, nil
	}
	kv, err := bytesOf("kv state")
	if err != nil {
		return parts, err
	}
	parts.kv = kv
	count, err := next("member count")
	if err != nil {
		return parts, err
	}
	if count > snapshotMembersMax || count > uint64(len(rest)) {
		return parts, fmt.Errorf("%w: %d members", errSnapshotMalformed, count)
	}
	for i := uint64(0); i < count; i++ {
		mb, err := bytesOf("member")
		if err != nil {
			return parts, err
		}
		var p pb.Member
		if err := proto.Unmarshal(mb, &p); err != nil {
			return parts, fmt.Errorf("%w: member %d: %v", errSnapshotMalformed, i, err)
		}
		m := memberFromProto(&p)
		if _, dup := parts.membership.get(m.ID); dup || m.ID == 0 {
			return parts, fmt.Errorf("%w: member ID %x repeated or zero", errSnapshotMalformed, m.ID)
		}
		parts.membership.put(m)
	}
	count, err = next("removed count")
	if err != nil {
		return parts, err
	}
	if count > uint64(len(rest)) {
		return parts, fmt.Errorf("%w: %d removed IDs", errSnapshotMalformed, count)
	}
	for i := uint64(0); i < count; i++ {
		id, err := next("removed ID")
		if err != nil {
			return parts, err
		}
		parts.membership.remove(id)
	}
	count, err = next("applied request count")
	if err != nil {
		return parts, err
	}
	if count > RequestWindowSize || count > uint64(len(rest)) {
		return parts, fmt.Errorf("%w: %d applied requests", errSnapshotMalformed, count)
	}
	for i := uint64(0); i < count; i++ {
		id, err := next("applied request ID")
		if err != nil {
			return parts, err
		}
		parts.requests = append(parts.requests, id)
	}
	if len(rest) != 0 {
		return parts, fmt.Errorf("%w: %d trailing bytes", errSnapshotMalformed, len(rest))
	}
	return parts, nil
}
