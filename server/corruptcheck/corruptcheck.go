// Package corruptcheck compares the members' key-value state hashes (etcd's
// HashKV: a crc32c over the kept history up to a revision) to find a member
// whose data diverged from the others, as etcd's corruption checks do:
//
//   - Initial: a restarting member, before it serves clients, compares its
//     hash with each peer's at its own revision, and refuses to start if a
//     peer at the same compact revision disagrees.
//   - Periodic (--corrupt-check-time): the leader compares every member's
//     hash at its current revision.
//   - Compaction (CompactHashCheck): the leader compares every member's
//     hash at the newest compact revision, once per compaction.
//
// A periodic or compaction mismatch names the members to blame (Mismatched)
// and the caller raises a CORRUPT alarm for each, which stops the cluster
// from serving requests until an operator disarms it.
//
// corruptcheck decides and logs; it starts no goroutines and owns no timers.
// Hashes come through the Source its caller implements. It may import
// etcd's API types, zap and the standard library.
package corruptcheck

import (
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"
)

// Hash is one member's answer: the hash of its history up to Revision,
// compacted at CompactRevision (0 or less: never compacted).
type Hash struct {
	MemberID        uint64
	Revision        int64
	CompactRevision int64
	Hash            uint32
}

func (h Hash) String() string {
	return fmt.Sprintf("member %x rev=%d compact=%d hash=%08x", h.MemberID, h.Revision, h.CompactRevision, h.Hash)
}

// comparable says whether two hashes cover the same history: the same
// revision, compacted at the same revision (a member that compacted later
// hashes less history, and differs without being corrupt).
func comparable(a, b Hash) bool {
	return a.Revision == b.Revision && normalCompact(a.CompactRevision) == normalCompact(b.CompactRevision)
}

func normalCompact(r int64) int64 { return max(r, 0) }

// Source gives the hashes to compare.
type Source interface {
	// Local is this member's hash at rev (0: its current revision).
	Local(rev int64) (Hash, error)
	// Peers are the other members' IDs.
	Peers() []uint64
	// Peer asks member id for its hash at rev.
	Peer(ctx context.Context, id uint64, rev int64) (Hash, error)
}

// ErrInconsistent is Initial's verdict, in etcd's words.
type ErrInconsistent struct{ Member uint64 }

func (e *ErrInconsistent) Error() string {
	return fmt.Sprintf("%x found data inconsistency with peers", e.Member)
}

// Initial compares this member's hash at its current revision with every
// peer's at that revision. A peer that cannot answer (down, behind, or
// compacted past it) is skipped with a warning, as etcd does; one that
// answers for the same history with another hash fails the check.
func Initial(ctx context.Context, lg *zap.Logger, self uint64, src Source) error {
	local, err := src.Local(0)
	if err != nil {
		return fmt.Errorf("%x failed to fetch hash (%w)", self, err)
	}
	lg.Info("starting initial corruption check", zap.String("local-member-id", fmt.Sprintf("%x", self)),
		zap.Int64("revision", local.Revision))
	mismatch := false
	for _, id := range src.Peers() {
		remote, err := src.Peer(ctx, id, local.Revision)
		if err != nil {
			lg.Warn("cannot fetch hash from remote peer", zap.String("local-member-id", fmt.Sprintf("%x", self)),
				zap.String("remote-peer-id", fmt.Sprintf("%x", id)), zap.Error(err))
			continue
		}
		fields := []zap.Field{zap.String("local-member-id", fmt.Sprintf("%x", self)), zap.Int64("local-member-revision", local.Revision),
			zap.Int64("local-member-compact-revision", local.CompactRevision), zap.Uint32("local-member-hash", local.Hash),
			zap.String("remote-peer-id", fmt.Sprintf("%x", id)), zap.Int64("remote-peer-revision", remote.Revision),
			zap.Int64("remote-peer-compact-revision", remote.CompactRevision), zap.Uint32("remote-peer-hash", remote.Hash)}
		switch {
		case !comparable(local, remote):
			lg.Warn("found different compact revision values from remote peer", fields...)
		case local.Hash != remote.Hash:
			lg.Warn("found different hash values from remote peer", fields...)
			mismatch = true
		}
	}
	if mismatch {
		return &ErrInconsistent{Member: self}
	}
	lg.Info("initial corruption checking passed; no corruption", zap.String("local-member-id", fmt.Sprintf("%x", self)))
	return nil
}

// Cluster gathers every member's hash at rev, the leader's first; peers
// that cannot answer for that revision are left out.
func Cluster(ctx context.Context, lg *zap.Logger, self uint64, src Source, rev int64) ([]Hash, error) {
	local, err := src.Local(rev)
	if err != nil {
		return nil, err
	}
	hashes := []Hash{local}
	for _, id := range src.Peers() {
		remote, err := src.Peer(ctx, id, local.Revision)
		if err != nil {
			lg.Warn("failed hash kv request", zap.String("local-member-id", fmt.Sprintf("%x", self)),
				zap.String("remote-peer-id", fmt.Sprintf("%x", id)), zap.Int64("requested-revision", local.Revision), zap.Error(err))
			continue
		}
		hashes = append(hashes, remote)
	}
	return hashes, nil
}

// Mismatched names the members whose hash disagrees, among those that
// hashed the same history as the leader (hashes[0]): when most of them
// agree, everyone outside that majority; when no hash has a majority, the
// members that disagree with the leader (the leader trusts itself, as
// etcd's periodic check does). nil when all agree.
func Mismatched(hashes []Hash) []uint64 {
	if len(hashes) == 0 {
		return nil
	}
	leader := hashes[0]
	var same []Hash
	for _, h := range hashes {
		if comparable(leader, h) {
			same = append(same, h)
		}
	}
	counts := map[uint32]int{}
	for _, h := range same {
		counts[h.Hash]++
	}
	if len(counts) <= 1 {
		return nil
	}
	trusted := leader.Hash // without a majority, the leader trusts itself
	for hash, n := range counts {
		if 2*n > len(same) {
			trusted = hash
		}
	}
	var out []uint64
	for _, h := range same {
		if h.Hash != trusted {
			out = append(out, h.MemberID)
		}
	}
	slices.Sort(out)
	return out
}
