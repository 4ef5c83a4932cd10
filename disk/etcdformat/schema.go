package etcdformat

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// etcd's buckets and meta keys, as its backend names them.
var (
	bucketKey            = []byte("key")
	bucketMeta           = []byte("meta")
	bucketLease          = []byte("lease")
	bucketAlarm          = []byte("alarm")
	bucketCluster        = []byte("cluster")
	bucketMembers        = []byte("members")
	bucketMembersRemoved = []byte("members_removed")
	bucketAuth           = []byte("auth")
	bucketAuthUsers      = []byte("authUsers")
	bucketAuthRoles      = []byte("authRoles")

	// allBuckets is every bucket etcd 3.4 to 3.7 creates, in the order a
	// new etcd backend creates them.
	allBuckets = [][]byte{bucketKey, bucketMeta, bucketLease, bucketAlarm, bucketCluster,
		bucketMembers, bucketMembersRemoved, bucketAuth, bucketAuthUsers, bucketAuthRoles}

	metaConsistentIndex = []byte("consistent_index")
	metaTerm            = []byte("term")           // since 3.5
	metaConfState       = []byte("confState")      // since 3.5
	metaStorageVersion  = []byte("storageVersion") // since 3.6
	metaScheduledCompat = []byte("scheduledCompactRev")
	metaFinishedCompact = []byte("finishedCompactRev")

	clusterVersionKey = []byte("clusterVersion")
	clusterDowngrade  = []byte("downgrade")

	authEnabledKey  = []byte("authEnabled")
	authRevisionKey = []byte("authRevision")

	removedMarker = []byte("removed")
)

// revBytesLen is a key bucket key without the tombstone mark: 8 bytes of
// main revision, '_', 8 bytes of sub revision, both big-endian.
const revBytesLen = 17

func appendRevKey(b []byte, main int64, sub int64, tombstone bool) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(main))
	b = append(b, '_')
	b = binary.BigEndian.AppendUint64(b, uint64(sub))
	if tombstone {
		b = append(b, 't')
	}
	return b
}

func parseRevKey(k []byte) (main, sub int64, tombstone bool, err error) {
	switch {
	case len(k) == revBytesLen:
	case len(k) == revBytesLen+1 && k[revBytesLen] == 't':
		tombstone = true
	default:
		return 0, 0, false, fmt.Errorf("key bucket key %x is not a revision", k)
	}
	if k[8] != '_' {
		return 0, 0, false, fmt.Errorf("key bucket key %x is not a revision", k)
	}
	main, sub = int64(binary.BigEndian.Uint64(k[:8])), int64(binary.BigEndian.Uint64(k[9:17]))
	if main < 0 || sub < 0 {
		return 0, 0, false, fmt.Errorf("key bucket key %x has a negative revision", k)
	}
	return main, sub, tombstone, nil
}

// Member is one member as etcd's backend and conf changes describe it.
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// memberJSON is etcd's JSON for a member (membership.Member), and with
// IsPromote its conf change context (membership.ConfigChangeContext).
type memberJSON struct {
	ID         uint64   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
	Name       string   `json:"name,omitempty"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	IsPromote  *bool    `json:"isPromote,omitempty"`
}

func marshalMember(m Member) []byte {
	b, err := json.Marshal(memberJSON{ID: m.ID, PeerURLs: m.PeerURLs, IsLearner: m.IsLearner, Name: m.Name, ClientURLs: m.ClientURLs})
	if err != nil {
		panic(fmt.Sprintf("etcdformat: marshal member %x: %v", m.ID, err))
	}
	return b
}

func unmarshalMember(b []byte) (Member, bool, error) {
	var j memberJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Member{}, false, err
	}
	if j.ID == 0 {
		return Member{}, false, errors.New("member with ID 0")
	}
	promote := j.IsPromote != nil && *j.IsPromote
	return Member{ID: j.ID, Name: j.Name, PeerURLs: j.PeerURLs, ClientURLs: j.ClientURLs, IsLearner: j.IsLearner}, promote, nil
}

// memberKey is how etcd keys a member in its buckets: the ID in hex,
// without leading zeros (types.ID.String).
func memberKey(id uint64) []byte { return []byte(strconv.FormatUint(id, 16)) }

func parseMemberKey(k []byte) (uint64, error) {
	id, err := strconv.ParseUint(string(k), 16, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("member key %q is not a member ID", k)
	}
	return id, nil
}

// A lease as etcd stores it (leasepb.Lease): ID 1, TTL 2, RemainingTTL 3,
// all varint int64. etcd's lease package lives in its server module, so the
// three fields are encoded here.
func marshalLease(id, ttl, remainingTTL int64) []byte {
	var b []byte
	for _, f := range []struct {
		num protowire.Number
		v   int64
	}{{1, id}, {2, ttl}, {3, remainingTTL}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(f.v))
		}
	}
	return b
}

func unmarshalLease(b []byte) (id, ttl, remainingTTL int64, err error) {
	err = eachField(b, func(f field) error {
		if f.num < 1 || f.num > 3 {
			return nil
		}
		if f.typ != protowire.VarintType {
			return fmt.Errorf("lease field %d has wire type %d", f.num, f.typ)
		}
		switch f.num {
		case 1:
			id = int64(f.varint)
		case 2:
			ttl = int64(f.varint)
		case 3:
			remainingTTL = int64(f.varint)
		}
		return nil
	})
	return id, ttl, remainingTTL, err
}

// field is one top-level field of a protobuf message: its number, wire
// type, and its value (varint for VarintType, bytes for BytesType, which
// alias the message).
type field struct {
	num    protowire.Number
	typ    protowire.Type
	varint uint64
	bytes  []byte
}

// eachField walks a protobuf message's top-level fields in order, so that
// the small messages of etcd's files (records, leases, key values, v2
// requests) decode without their generated types, or without copying.
func eachField(b []byte, fn func(field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.varint, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.bytes, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}
