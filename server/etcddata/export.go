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
	return etcdformat.WriteDB(path, &etcdformat.Source{
		View:            ex.View,
		Leases:          ex.Leases,
		Alarms:          ex.Alarms,
		Members:         toEtcdMembers(ex.Members),
		Removed:         ex.Removed,
		ConsistentIndex: ex.AppliedIndex,
		Term:            ex.AppliedTerm,
		ConfState:       ex.ConfState,
		ClusterVersion:  clusterVersion,
		// Auth stays zero: noded keeps no users or roles yet (see
		// etcdformat.Source.Auth and checkAuth).
	})
}
