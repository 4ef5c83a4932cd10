package node

import "testing"

// etcd with no flags (one member "default" at http://localhost:2380, token
// "etcd-cluster") is member 8e9e05c52164694d of cluster cdf818194e3a8c32:
// IDs every etcd user has seen in `etcdctl member list`. noded derives the
// same, so a cluster moved from etcd keeps its IDs.
func TestIDsMatchEtcd(t *testing.T) {
	id := MemberID([]string{"http://localhost:2380"}, "etcd-cluster", nil)
	if id != 0x8e9e05c52164694d {
		t.Errorf("member ID %x, etcd derives 8e9e05c52164694d", id)
	}
	if cid := ClusterID([]uint64{id}); cid != 0xcdf818194e3a8c32 {
		t.Errorf("cluster ID %x, etcd derives cdf818194e3a8c32", cid)
	}
	// Order of URLs and of IDs does not matter.
	a := MemberID([]string{"http://b:2380", "http://a:2380"}, "t", nil)
	b := MemberID([]string{"http://a:2380", "http://b:2380"}, "t", nil)
	if a != b {
		t.Errorf("URL order changed the ID: %x vs %x", a, b)
	}
	if ClusterID([]uint64{1, 2, 3}) != ClusterID([]uint64{3, 1, 2}) {
		t.Error("member order changed the cluster ID")
	}
	d := uint64(7)
	if MemberID([]string{"http://a:2380"}, "t", &d) == MemberID([]string{"http://a:2380"}, "t", nil) {
		t.Error("the discriminator of a runtime-added member had no effect")
	}
}
