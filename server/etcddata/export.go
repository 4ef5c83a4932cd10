package etcddata

import (
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/node"
)

// WriteSnapshotDB writes a member's exported state as etcd's database at
// path (which must not exist), with clusterVersion as the cluster and
// storage version. The Maintenance Snapshot stream sends it, followed by
// its sha256.
func WriteSnapshotDB(path string, ex node.Exported, clusterVersion string) error {
	src := sourceOf(ex.View, ex.Leases, ex.Alarms)
	src.Members = toEtcdMembers(ex.Members)
	src.Removed = ex.Removed
	src.ConsistentIndex, src.Term, src.ConfState = ex.AppliedIndex, ex.AppliedTerm, ex.ConfState
	src.ClusterVersion = clusterVersion
	src.SizeHintBytes = ex.SizeBytes
	return etcdformat.WriteDB(path, src)
}
