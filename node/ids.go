package node

import (
	"crypto/sha1"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
)

// MemberID derives a member's ID the way etcd does, so that a cluster
// bootstrapped from the same --initial-cluster and token has the same IDs
// under noded as under etcd: the first 8 bytes (big-endian) of
// sha1(sorted peer URLs concatenated, then the cluster token, then, for a
// member added at runtime, a decimal discriminator that etcd takes from the
// clock and noded from the proposing request's ID).
func MemberID(peerURLs []string, clusterToken string, discriminator *uint64) uint64 {
	sorted := slices.Clone(peerURLs)
	slices.Sort(sorted)
	b := []byte(strings.Join(sorted, ""))
	b = append(b, clusterToken...)
	if discriminator != nil {
		b = strconv.AppendUint(b, *discriminator, 10)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// ClusterID derives the cluster ID from the initial members' IDs as etcd
// does: the first 8 bytes of sha1 over the sorted IDs, each big-endian.
func ClusterID(memberIDs []uint64) uint64 {
	sorted := slices.Clone(memberIDs)
	slices.Sort(sorted)
	b := make([]byte, 8*len(sorted))
	for i, id := range sorted {
		binary.BigEndian.PutUint64(b[8*i:], id)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}
