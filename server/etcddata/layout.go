package etcddata

import (
	"encoding/binary"
	"path"
	"slices"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

// WALMetadata is what a member's WAL holds about whose it is: the member
// ID and the cluster ID, big-endian.
func WALMetadata(memberID, clusterID uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, memberID)
	return binary.BigEndian.AppendUint64(b, clusterID)
}

// seed is a member's whole durable state, assembled before anything is
// written: the state at a raft index, and the log after it.
type seed struct {
	store     *kvsm.Store
	members   []node.Member
	removed   []uint64
	index     uint64 // the raft index the state is at
	term      uint64 // the term of the entry at index
	confState *raftpb.ConfState
	hardState *raftpb.HardState
	entries   []*raftpb.Entry // index+1 on
	memberID  uint64
	clusterID uint64
}

// write lays the seed out as noded's WAL and snapshot files. The WAL
// appearing is the commit point (disk.CreateFromSnapshot).
func (s *seed) write(fsys disk.FS, walDir, snapDir string, opts disk.Options) error {
	data, err := node.SnapshotData(s.store, s.members, s.removed)
	if err != nil {
		return err
	}
	snap := &raftpb.Snapshot{
		Data: data,
		Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(s.index),
			Term:      proto.Uint64(s.term),
			ConfState: s.confState,
		},
	}
	st, err := createWAL(fsys, walDir, snapDir, WALMetadata(s.memberID, s.clusterID), snap, s.hardState, s.entries, opts)
	if err != nil {
		return err
	}
	return st.Close()
}

// createWAL is disk.CreateFromSnapshot; the crash sweeps' planted-bug
// tests replace it with a WAL that appears before its contents, to show
// they catch one.
var createWAL = disk.CreateFromSnapshot

// fromEtcdMembers turns etcd's member records into noded's.
func fromEtcdMembers(ms []etcdformat.Member) []node.Member {
	out := make([]node.Member, len(ms))
	for i, m := range ms {
		out[i] = node.Member{ID: m.ID, Name: m.Name, PeerURLs: slices.Clone(m.PeerURLs), ClientURLs: slices.Clone(m.ClientURLs), IsLearner: m.IsLearner}
	}
	return out
}

func toEtcdMembers(ms []node.Member) []etcdformat.Member {
	out := make([]etcdformat.Member, len(ms))
	for i, m := range ms {
		out[i] = etcdformat.Member{ID: m.ID, Name: m.Name, PeerURLs: slices.Clone(m.PeerURLs), ClientURLs: slices.Clone(m.ClientURLs), IsLearner: m.IsLearner}
	}
	return out
}

// memberContext encodes a member of an etcd conf change as noded's conf
// changes carry it.
func memberContext(m etcdformat.Member) []byte {
	return node.ConfChangeContext(fromEtcdMembers([]etcdformat.Member{m})[0])
}

// confStateOf derives the raft configuration from a member table (etcd
// before 3.5 kept none in its database).
func confStateOf(ms []node.Member) *raftpb.ConfState {
	cs := &raftpb.ConfState{}
	for _, m := range ms {
		if m.IsLearner {
			cs.Learners = append(cs.Learners, m.ID)
		} else {
			cs.Voters = append(cs.Voters, m.ID)
		}
	}
	return cs
}

// listTree returns every file under dir (FS names), and whether dir
// exists.
func listTree(fsys disk.FS, dir string) ([]string, bool, error) {
	names, err := fsys.List(dir)
	if err != nil {
		if _, statErr := fsys.Stat(dir); statErr != nil {
			return nil, false, nil // no such directory
		}
		return []string{dir}, true, nil // a file
	}
	var files []string
	for _, n := range names {
		sub, _, err := listTree(fsys, path.Join(dir, n))
		if err != nil {
			return nil, true, err
		}
		files = append(files, sub...)
	}
	return files, true, nil
}

// onlyLeftovers reports whether every file is one a restore interrupted
// before its WAL appeared leaves: snapshot files and temporary files.
func onlyLeftovers(files []string) bool {
	for _, f := range files {
		if !strings.HasSuffix(f, ".snap") && !strings.HasSuffix(f, ".tmp") {
			return false
		}
	}
	return true
}
