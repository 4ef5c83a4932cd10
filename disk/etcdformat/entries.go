package etcdformat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// EntryKind says what TranslateEntry did with one of etcd's log entries.
type EntryKind int

const (
	// EntryKept: the entry means the same to noded (a v3 request, an
	// empty entry, a member removal) and is kept as it is.
	EntryKept EntryKind = iota
	// EntryConfChange: a conf change whose context (the member, in etcd's
	// JSON) was rewritten in noded's form.
	EntryConfChange
	// EntryMemberAttributes: etcd 3.4's v2 request publishing a member's
	// name and client URLs, rewritten as the v3 request etcd 3.5 proposes.
	EntryMemberAttributes
	// EntryV2Dropped: another v2 request (the cluster version, a write to
	// the v2 store), which noded does not keep, as etcd 3.6 does not:
	// the entry becomes an empty one at the same index and term.
	EntryV2Dropped
)

func (k EntryKind) String() string {
	switch k {
	case EntryKept:
		return "kept"
	case EntryConfChange:
		return "conf-change"
	case EntryMemberAttributes:
		return "member-attributes"
	case EntryV2Dropped:
		return "v2-dropped"
	}
	return fmt.Sprintf("EntryKind(%d)", int(k))
}

// ErrPlaintextPassword refuses a log entry that carries a user's password
// in the clear (etcd 3.4 hashes it when it applies the entry, with a salt
// of its own; a later etcd hashes it before proposing): the hash the entry
// leads to cannot be reproduced.
var ErrPlaintextPassword = errors.New("an etcd 3.4 log entry sets a user's password in the clear, which noded cannot hash as etcd did: " +
	"take a snapshot with etcd (etcdctl snapshot save) and restore it instead")

// TranslateEntry turns one entry of etcd's log into the entry noded's log
// holds at the same index and term. memberContext encodes a member the way
// noded's conf changes carry it. An entry noded cannot apply faithfully is
// refused: one setting a password in the clear (ErrPlaintextPassword), or
// one holding fields this noded does not know (written by a newer etcd).
func TranslateEntry(e *raftpb.Entry, memberContext func(Member) []byte) (*raftpb.Entry, EntryKind, error) {
	out := proto.Clone(e).(*raftpb.Entry)
	switch e.GetType() {
	case raftpb.EntryNormal:
		if len(e.GetData()) == 0 {
			return out, EntryKept, nil
		}
		var r pb.InternalRaftRequest
		if err := proto.Unmarshal(e.GetData(), &r); err == nil && !hasUnknownFields(r.ProtoReflect()) {
			if setsPlaintextPassword(&r) {
				return nil, 0, fmt.Errorf("entry %d: %w", e.GetIndex(), ErrPlaintextPassword)
			}
			return out, EntryKept, nil
		}
		v2, err := decodeV2Request(e.GetData())
		if err != nil {
			return nil, 0, fmt.Errorf("entry %d holds neither a v3 request this noded knows (written by an etcd newer than 3.7?) nor a v2 request: %w", e.GetIndex(), err)
		}
		if attrs, ok, err := v2.memberAttributes(); err != nil {
			return nil, 0, fmt.Errorf("entry %d: %w", e.GetIndex(), err)
		} else if ok {
			req := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: v2.id}, ClusterMemberAttrSet: attrs}
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
			if err != nil {
				return nil, 0, err
			}
			out.Data = data
			return out, EntryMemberAttributes, nil
		}
		out.Data = nil
		return out, EntryV2Dropped, nil
	case raftpb.EntryConfChange:
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			return nil, 0, fmt.Errorf("entry %d: conf change: %w", e.GetIndex(), err)
		}
		if len(cc.GetContext()) == 0 {
			return out, EntryKept, nil
		}
		m, _, err := unmarshalMember(cc.GetContext())
		if err != nil {
			return nil, 0, fmt.Errorf("entry %d: conf change context: %w", e.GetIndex(), err)
		}
		if m.ID != cc.GetNodeId() {
			return nil, 0, fmt.Errorf("entry %d: conf change for member %x carries member %x", e.GetIndex(), cc.GetNodeId(), m.ID)
		}
		cc.Context = memberContext(m)
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&cc)
		if err != nil {
			return nil, 0, err
		}
		out.Data = data
		return out, EntryConfChange, nil
	}
	return nil, 0, fmt.Errorf("entry %d has type %v, which etcd does not write", e.GetIndex(), e.GetType())
}

// setsPlaintextPassword reports a user add or password change that
// carries the password itself rather than its hash.
func setsPlaintextPassword(r *pb.InternalRaftRequest) bool {
	if a := r.GetAuthUserAdd(); a != nil {
		return a.GetPassword() != "" && a.GetHashedPassword() == ""
	}
	if c := r.GetAuthUserChangePassword(); c != nil {
		return c.GetPassword() != "" && c.GetHashedPassword() == ""
	}
	return false
}

// hasUnknownFields reports fields the message's descriptor does not know,
// at any depth.
func hasUnknownFields(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	unknown := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && !unknown; i++ {
				unknown = hasUnknownFields(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				unknown = hasUnknownFields(mv.Message())
				return !unknown
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			unknown = hasUnknownFields(v.Message())
		}
		return !unknown
	})
	return unknown
}

// v2Request is the part of etcd's v2 request (etcdserverpb.Request, gone
// from the v3.6 API module) that a member's publication uses: ID 1,
// Method 2, Path 3, Val 4.
type v2Request struct {
	id                uint64
	method, path, val string
}

var v2Methods = map[string]bool{"GET": true, "PUT": true, "POST": true, "DELETE": true, "QGET": true, "SYNC": true, "HEAD": true}

// decodeV2Request decodes a v2 request, bare (etcd 3.4 proposes it so) or
// wrapped in an InternalRaftRequest's field 2 (etcd 3.3's v2 field).
func decodeV2Request(b []byte) (v2Request, error) {
	r, err := decodeV2Fields(b)
	if err == nil && v2Methods[r.method] {
		return r, nil
	}
	if inner, ok := wrappedV2(b); ok {
		if r, err := decodeV2Fields(inner); err == nil && v2Methods[r.method] {
			return r, nil
		}
	}
	if err == nil {
		err = fmt.Errorf("method %q", r.method)
	}
	return v2Request{}, err
}

func decodeV2Fields(b []byte) (v2Request, error) {
	var r v2Request
	err := eachField(b, func(f field) error {
		switch {
		case f.num == 1 && f.typ == protowire.VarintType:
			r.id = f.varint
		case f.num == 2 && f.typ == protowire.BytesType:
			r.method = string(f.bytes)
		case f.num == 3 && f.typ == protowire.BytesType:
			r.path = string(f.bytes)
		case f.num == 4 && f.typ == protowire.BytesType:
			r.val = string(f.bytes)
		case f.num >= 1 && f.num <= 4:
			return fmt.Errorf("v2 request field %d has wire type %d", f.num, f.typ)
		}
		return nil
	})
	return r, err
}

// wrappedV2 returns field 2 of an InternalRaftRequest, if it has one.
func wrappedV2(b []byte) ([]byte, bool) {
	var inner []byte
	found := false
	err := eachField(b, func(f field) error {
		if f.num == 2 && f.typ == protowire.BytesType && !found {
			inner, found = f.bytes, true
		}
		return nil
	})
	return inner, found && err == nil
}

// memberAttributes recognises a member publishing its attributes
// (PUT /0/members/<id>/attributes with {"name", "clientURLs"}).
func (r v2Request) memberAttributes() (*membershippb.ClusterMemberAttrSetRequest, bool, error) {
	rest, ok := strings.CutPrefix(r.path, "/0/members/")
	if r.method != "PUT" || !ok {
		return nil, false, nil
	}
	idHex, ok := strings.CutSuffix(rest, "/attributes")
	if !ok {
		return nil, false, nil
	}
	id, err := strconv.ParseUint(idHex, 16, 64)
	if err != nil {
		return nil, false, fmt.Errorf("v2 member attributes for %q: %w", idHex, err)
	}
	var attrs struct {
		Name       string   `json:"name"`
		ClientURLs []string `json:"clientURLs"`
	}
	if err := json.Unmarshal([]byte(r.val), &attrs); err != nil {
		return nil, false, fmt.Errorf("v2 member attributes of %x: %w", id, err)
	}
	return &membershippb.ClusterMemberAttrSetRequest{
		Member_ID:        id,
		MemberAttributes: &membershippb.Attributes{Name: attrs.Name, ClientUrls: attrs.ClientURLs},
	}, true, nil
}
