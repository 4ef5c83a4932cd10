package etcddata

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
)

// PrepareConfig describes the data directory a member is about to open.
type PrepareConfig struct {
	FS disk.FS
	// DataDir, WALDir and SnapDir are FS names: the data directory and
	// where the member keeps its WAL (--wal-dir, or DataDir/member/wal) and
	// snapshots (DataDir/member/snap).
	DataDir, WALDir, SnapDir string
	// WALDirSet is true when --wal-dir was given.
	WALDirSet bool
	// DBPath is the OS path of DataDir/member/snap/db: bbolt opens its
	// files itself.
	DBPath string
	// LockTimeout bounds the wait for a running etcd's lock on its
	// database (0: one second).
	LockTimeout time.Duration
	Options     disk.Options
	Logger      *zap.Logger

	// readDB reads etcd's database; tests hand in their own.
	readDB func(path string) (*etcdformat.State, *kvsm.Store, error)
}

// Layout is where the member's own files are.
type Layout struct {
	WALDir, SnapDir string
	// Etcd is set for an etcd member's data directory: noded's files are
	// beside etcd's, which it never writes.
	Etcd bool
	// Converted is set when Prepare converted etcd's files just now.
	Converted *Converted
}

// Converted sums up a conversion of an etcd member's data directory.
type Converted struct {
	MemberID, ClusterID uint64
	ConsistentIndex     uint64 // the last entry etcd applied to its database
	LastIndex           uint64 // the last entry of etcd's WAL
	Revision            int64
	Keys, Leases        int
	Members             int
	Entries             map[etcdformat.EntryKind]int
	TornTail            bool
}

// dbName is etcd's database, beside its snapshot files.
const dbName = "db"

// ConvertedDirs are where noded keeps its files in an etcd member's data
// directory: its own subdirectory of member/, and of --wal-dir when that
// was given, so that etcd's files stay as they were.
func ConvertedDirs(dataDir, walDir string, walDirSet bool) (nodedWAL, nodedSnap string) {
	nodedWAL = path.Join(dataDir, "member", "noded", "wal")
	if walDirSet {
		nodedWAL = path.Join(walDir, "noded")
	}
	return nodedWAL, path.Join(dataDir, "member", "noded", "snap")
}

// Prepare decides where the member's files are, converting an etcd
// member's data directory first if it finds one not converted yet:
//
//   - a noded data directory: WALDir and SnapDir, unchanged. One whose
//     snapshot directory holds snapshot files but which has no WAL is
//     refused: an interrupted restore, not a member to start empty.
//   - an etcd data directory (member/snap/db): noded's files in
//     ConvertedDirs, written from etcd's database and WAL if they do not
//     exist yet. etcd's files are only read.
func Prepare(cfg PrepareConfig) (Layout, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	fsys := cfg.FS
	if !fileExists(fsys, path.Join(cfg.SnapDir, dbName)) {
		if !disk.Exists(fsys, cfg.WALDir) {
			files, _, _ := listTree(fsys, cfg.SnapDir)
			for _, f := range files {
				if strings.HasSuffix(f, ".snap") {
					return Layout{}, fmt.Errorf("data directory %s holds snapshot files (%s) but no WAL in %s: "+
						"a restore that did not finish, or a damaged directory; restore again into an empty directory", cfg.DataDir, f, cfg.WALDir)
				}
			}
		}
		return Layout{WALDir: cfg.WALDir, SnapDir: cfg.SnapDir}, nil
	}
	nodedWAL, nodedSnap := ConvertedDirs(cfg.DataDir, cfg.WALDir, cfg.WALDirSet)
	layout := Layout{WALDir: nodedWAL, SnapDir: nodedSnap, Etcd: true}
	if disk.Exists(fsys, nodedWAL) {
		if err := checkEtcdDidNotRun(cfg); err != nil {
			return Layout{}, err
		}
		return layout, nil
	}
	conv, err := convert(cfg, nodedWAL, nodedSnap)
	if err != nil {
		return Layout{}, fmt.Errorf("convert etcd data directory %s: %w", cfg.DataDir, err)
	}
	layout.Converted = conv
	lg.Info("converted an etcd member's data directory; etcd's files are untouched",
		zap.String("data-dir", cfg.DataDir), zap.String("noded-wal-dir", nodedWAL), zap.String("noded-snap-dir", nodedSnap),
		zap.String("member-id", fmt.Sprintf("%x", conv.MemberID)), zap.String("cluster-id", fmt.Sprintf("%x", conv.ClusterID)),
		zap.Uint64("consistent-index", conv.ConsistentIndex), zap.Uint64("last-index", conv.LastIndex),
		zap.Int64("revision", conv.Revision), zap.Int("keys", conv.Keys), zap.Int("leases", conv.Leases), zap.Int("members", conv.Members),
		zap.Int("entries-kept", conv.Entries[etcdformat.EntryKept]), zap.Int("conf-changes", conv.Entries[etcdformat.EntryConfChange]),
		zap.Int("v2-member-attributes", conv.Entries[etcdformat.EntryMemberAttributes]), zap.Int("v2-entries-dropped", conv.Entries[etcdformat.EntryV2Dropped]),
		zap.Bool("torn-wal-tail", conv.TornTail))
	return layout, nil
}

// fileExists reports whether name is a file (not a directory).
func fileExists(fsys disk.FS, name string) bool {
	if _, err := fsys.Stat(name); err != nil {
		return false
	}
	_, err := fsys.List(name)
	return err != nil
}

// convert reads etcd's database and WAL, checks them, and writes noded's
// files: a snapshot at the database's consistent index and the entries of
// etcd's log after it, translated, with etcd's hard state.
func convert(cfg PrepareConfig, nodedWAL, nodedSnap string) (*Converted, error) {
	fsys := cfg.FS
	if _, err := fsys.Stat(path.Join(cfg.DataDir, "member", "wal.tmp")); err == nil {
		return nil, errors.New("member/wal.tmp exists: etcd stopped while creating its WAL; this directory was never a running member")
	}
	if !etcdformat.HasWAL(fsys, cfg.WALDir) {
		return nil, fmt.Errorf("member/snap/db exists but %s holds no WAL: etcd stopped during its first start, or the directory is half copied", cfg.WALDir)
	}
	read := cfg.readDB
	if read == nil {
		read = func(p string) (*etcdformat.State, *kvsm.Store, error) {
			return readDB(p, etcdformat.ReadOptions{LockTimeout: cfg.LockTimeout})
		}
	}
	st, store, err := read(cfg.DBPath)
	if err != nil {
		return nil, err
	}
	ci := st.ConsistentIndex
	if ci == 0 {
		return nil, errors.New("the database records no applied raft entry (consistent index 0)")
	}
	wal, err := etcdformat.ReadWAL(fsys, cfg.WALDir, ci)
	if err != nil {
		return nil, err
	}
	term := st.Term
	switch {
	case term != 0 && wal.TermAtStart != 0 && term != wal.TermAtStart:
		return nil, fmt.Errorf("the database applied index %d in term %d, the WAL has it in term %d", ci, term, wal.TermAtStart)
	case term == 0:
		term = wal.TermAtStart
	}
	if term == 0 {
		return nil, fmt.Errorf("neither the database nor the WAL says the term of applied entry %d", ci)
	}
	members := fromEtcdMembers(st.Members)
	if slices.Contains(st.Removed, wal.NodeID) {
		return nil, fmt.Errorf("member %x was removed from cluster %x: there is nothing to continue", wal.NodeID, wal.ClusterID)
	}
	confState := st.ConfState
	if confState == nil {
		confState = confStateOf(members)
	}
	conv := &Converted{
		MemberID: wal.NodeID, ClusterID: wal.ClusterID, ConsistentIndex: ci, LastIndex: ci + uint64(len(wal.Entries)),
		Revision: store.Rev(), Keys: st.Status.TotalKey, Leases: len(store.Leases()), Members: len(members),
		Entries: map[etcdformat.EntryKind]int{}, TornTail: wal.TornTail,
	}
	entries := make([]*raftpb.Entry, len(wal.Entries))
	for i, e := range wal.Entries {
		ne, kind, err := etcdformat.TranslateEntry(e, memberContext)
		if err != nil {
			return nil, err
		}
		entries[i] = ne
		conv.Entries[kind]++
	}
	hs := wal.HardState
	if hs == nil {
		hs = &raftpb.HardState{Term: proto.Uint64(term), Commit: proto.Uint64(ci)}
	} else {
		hs = proto.Clone(hs).(*raftpb.HardState)
	}
	if hs.GetCommit() < ci {
		// The database is written after the WAL's hard state: it may
		// have applied entries the hard state does not yet call committed.
		hs.Commit = proto.Uint64(ci)
	}
	if hs.GetCommit() > conv.LastIndex {
		return nil, fmt.Errorf("etcd's hard state commits index %d but its WAL ends at %d", hs.GetCommit(), conv.LastIndex)
	}
	s := &seed{
		store: store, members: members, removed: st.Removed,
		index: ci, term: term, confState: confState, hardState: hs, entries: entries,
		memberID: wal.NodeID, clusterID: wal.ClusterID,
	}
	// What was read of etcd's files, durable before noded's WAL appears:
	// a later start checks against it that etcd did not run since.
	seen, err := json.Marshal(etcdSeen{ConsistentIndex: ci, WALEndCRC: wal.EndCRC, MemberID: fmt.Sprintf("%x", wal.NodeID)})
	if err != nil {
		return nil, err
	}
	if err := fsys.MkdirAll(path.Dir(seenPath(cfg.DataDir))); err != nil {
		return nil, err
	}
	if err := disk.WriteFile(fsys, seenPath(cfg.DataDir), seen); err != nil {
		return nil, err
	}
	if err := s.write(fsys, nodedWAL, nodedSnap, cfg.Options); err != nil {
		return nil, err
	}
	return conv, nil
}

// etcdSeen is what a conversion read of etcd's files, kept beside noded's.
type etcdSeen struct {
	ConsistentIndex uint64 `json:"consistent_index"`
	WALEndCRC       uint32 `json:"wal_end_crc"`
	MemberID        string `json:"member_id"`
}

func seenPath(dataDir string) string {
	return path.Join(dataDir, "member", "noded", "converted-from-etcd.json")
}

// checkEtcdDidNotRun refuses a converted directory that etcd ran on again
// after the conversion (an operator going back to etcd's untouched files):
// noded's files would continue from a state behind etcd's, and what etcd
// took since would be lost. etcd appends to its WAL whenever it runs (a
// new term at least), so the WAL no longer reads as it did.
func checkEtcdDidNotRun(cfg PrepareConfig) error {
	raw, err := disk.ReadFile(cfg.FS, seenPath(cfg.DataDir), 1<<20)
	var seen etcdSeen
	if err == nil {
		err = json.Unmarshal(raw, &seen)
	}
	if err != nil {
		return fmt.Errorf("data directory %s holds noded's converted files but not %s (%v): cannot tell whether etcd ran on it since; "+
			"remove member/noded to convert etcd's files again", cfg.DataDir, seenPath(cfg.DataDir), err)
	}
	wal, err := etcdformat.ReadWAL(cfg.FS, cfg.WALDir, seen.ConsistentIndex)
	if err != nil || wal.EndCRC != seen.WALEndCRC {
		return fmt.Errorf("etcd ran on data directory %s after noded converted it (its WAL changed since): noded's files are behind etcd's. "+
			"To switch to noded again, stop etcd and remove noded's converted files (member/noded, and noded/ under --wal-dir) so that "+
			"etcd's files are converted anew; writes noded took before etcd ran again are not in them (save a noded snapshot first to keep them)", cfg.DataDir)
	}
	return nil
}
