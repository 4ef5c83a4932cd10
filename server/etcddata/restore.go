package etcddata

import (
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/node"
)

// RestoreConfig is `noded snapshot restore`: the snapshot, the new
// cluster, and where this member's data directory goes.
type RestoreConfig struct {
	SnapshotPath  string // an OS path
	SkipHashCheck bool
	// BumpRevision and MarkCompacted are etcdutl's: raise the revision by
	// BumpRevision and compact everything below it, so that clients of the
	// old cluster never see a revision go backwards. Both or neither.
	BumpRevision  uint64
	MarkCompacted bool

	// Members is the new cluster (from --initial-cluster and its token),
	// MemberID this member's ID among them, ClusterID the cluster's.
	Members   []node.Member
	MemberID  uint64
	ClusterID uint64

	// FS holds the output; DataDir, WALDir and SnapDir are FS names
	// (WALDir: --wal-dir, or DataDir/member/wal).
	FS      disk.FS
	DataDir string
	WALDir  string
	SnapDir string
	Options disk.Options
	Logger  *zap.Logger
}

// Restored sums up a restore.
type Restored struct {
	Format          string
	Revision        int64
	CompactRevision int64
	Keys            int
	Leases          int
	MemberID        uint64
	ClusterID       uint64
}

// Restore reads the snapshot, checks it whole, and only then lays out the
// member's data directory: the state as a snapshot at raft index
// len(Members) in term 1 (as etcdutl lays it out), with the new member
// table. The data directory must not exist or be empty (or hold only what
// an interrupted restore left); nothing is written on any error before the
// write itself.
func Restore(cfg RestoreConfig) (*Restored, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	if (cfg.BumpRevision == 0) != !cfg.MarkCompacted {
		return nil, errors.New("--mark-compacted required if --revision-bump > 0")
	}
	if i := slices.IndexFunc(cfg.Members, func(m node.Member) bool { return m.ID == cfg.MemberID }); i < 0 {
		return nil, fmt.Errorf("member %x is not in the initial cluster", cfg.MemberID)
	}
	if err := checkEmpty(cfg.FS, cfg.DataDir, cfg.WALDir); err != nil {
		return nil, err
	}
	st, store, err := ReadSnapshot(cfg.SnapshotPath, etcdformat.ReadOptions{SkipHashCheck: cfg.SkipHashCheck})
	if err != nil {
		return nil, err
	}
	if cfg.BumpRevision > 0 {
		if err := store.Bump(int64(cfg.BumpRevision), cfg.MarkCompacted); err != nil {
			return nil, err
		}
	}
	members := slices.Clone(cfg.Members)
	ids := make([]uint64, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	index, term := uint64(len(members)), uint64(1)
	s := &seed{
		store:     store,
		members:   members,
		index:     index,
		term:      term,
		confState: &raftpb.ConfState{Voters: ids},
		hardState: &raftpb.HardState{Term: proto.Uint64(term), Commit: proto.Uint64(index)},
		memberID:  cfg.MemberID,
		clusterID: cfg.ClusterID,
	}
	if err := s.write(cfg.FS, cfg.WALDir, cfg.SnapDir, cfg.Options); err != nil {
		return nil, fmt.Errorf("restore into %s: %w", cfg.DataDir, err)
	}
	r := &Restored{
		Format: st.Format, Revision: store.Rev(), CompactRevision: store.CompactRev(),
		Keys: st.Status.TotalKey, Leases: len(store.Leases()), MemberID: cfg.MemberID, ClusterID: cfg.ClusterID,
	}
	lg.Info("restored snapshot",
		zap.String("path", cfg.SnapshotPath), zap.String("format", r.Format),
		zap.String("data-dir", cfg.DataDir), zap.String("wal-dir", cfg.WALDir),
		zap.Int64("revision", r.Revision), zap.Int64("compact-revision", r.CompactRevision),
		zap.Int("keys", r.Keys), zap.Int("leases", r.Leases),
		zap.String("member-id", fmt.Sprintf("%x", r.MemberID)), zap.String("cluster-id", fmt.Sprintf("%x", r.ClusterID)))
	return r, nil
}

// checkEmpty refuses a data or WAL directory that holds anything but what
// an interrupted restore leaves (snapshot files with no WAL to vouch for
// them, temporary files), in etcdutl's words.
func checkEmpty(fsys disk.FS, dataDir, walDir string) error {
	if disk.Exists(fsys, walDir) {
		return fmt.Errorf("data-dir %q not empty or could not be read: it holds a WAL in %s", dataDir, walDir)
	}
	for _, dir := range []string{dataDir, walDir} {
		files, _, err := listTree(fsys, dir)
		if err != nil || !onlyLeftovers(files) {
			return fmt.Errorf("data-dir %q not empty or could not be read", dataDir)
		}
	}
	return nil
}
