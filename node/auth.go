package node

import (
	"fmt"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// Authentication in the node. The host resolves who a request comes from
// (a token or a client certificate, server/auth) and hands it in with
// SubmitAs; the node checks it as etcd's API layer does (reads when they
// are served, admin-only calls before they are proposed) and stamps it into
// the proposal's header, so that every member checks the write against the
// same replicated auth state when it applies it (kvsm).

// AuthEventKind names an applied change the host's token store follows:
// tokens live outside the replicated state, but which are valid follows
// from it, on every member alike.
type AuthEventKind uint8

const (
	// AuthTokenAssigned: a login applied; Token (a simple token, made of the
	// prefix the login carried and the entry's index) now names User.
	AuthTokenAssigned AuthEventKind = iota + 1
	// AuthUserInvalidated: User was deleted or changed its password; its
	// simple tokens are void.
	AuthUserInvalidated
	// AuthDisabled: auth was turned off; every simple token is void.
	AuthDisabled
)

// AuthEvent is one applied auth change for the host's token store.
type AuthEvent struct {
	Kind  AuthEventKind
	User  string
	Token string
}

func (e AuthEvent) String() string {
	switch e.Kind {
	case AuthTokenAssigned:
		// The token itself is a secret: only its index part is traced.
		return fmt.Sprintf("auth token-assigned user=%q", e.User)
	case AuthUserInvalidated:
		return fmt.Sprintf("auth user-invalidated user=%q", e.User)
	case AuthDisabled:
		return "auth disabled"
	}
	return fmt.Sprintf("auth event-%d", e.Kind)
}

// SubmitAs is Submit on behalf of an identity the host resolved (a zero
// AuthInfo: an anonymous request). Besides Submit's requests it takes the
// auth requests: *pb.AuthEnableRequest, *pb.AuthDisableRequest,
// *pb.AuthStatusRequest, *pb.InternalAuthenticateRequest (the password
// already checked by the host), *pb.AuthUserAddRequest and
// *pb.AuthUserChangePasswordRequest (the password already hashed into
// HashedPassword), and the other user and role requests; each is proposed
// and answered once applied, as etcd does.
func (n *Node) SubmitAs(h Handle, op proto.Message, ai kvsm.AuthInfo) {
	n.caller = ai
	defer func() { n.caller = kvsm.AuthInfo{} }()
	n.Submit(h, op)
}

// adminRefusal is etcd's API-layer check for the calls it reserves for
// root once auth is on: compaction, membership, alarm changes, leader
// transfer, HashKV. nil when the caller may.
func (n *Node) adminRefusal(op proto.Message) error {
	switch r := op.(type) {
	case *pb.CompactionRequest, *pb.MemberAddRequest, *pb.MemberRemoveRequest, *pb.MemberUpdateRequest,
		*pb.MemberPromoteRequest, *pb.MoveLeaderRequest, *pb.HashKVRequest:
		return n.store.CheckAdmin(n.caller)
	case *pb.AlarmRequest:
		if r.GetAction() != pb.AlarmRequest_GET {
			return n.store.CheckAdmin(n.caller)
		}
	}
	return nil
}

// authRequest wraps an auth request for the log; ok is false for anything
// else.
func authRequest(op proto.Message) (*pb.InternalRaftRequest, bool) {
	switch r := op.(type) {
	case *pb.AuthEnableRequest:
		return &pb.InternalRaftRequest{AuthEnable: r}, true
	case *pb.AuthDisableRequest:
		return &pb.InternalRaftRequest{AuthDisable: r}, true
	case *pb.AuthStatusRequest:
		return &pb.InternalRaftRequest{AuthStatus: r}, true
	case *pb.InternalAuthenticateRequest:
		return &pb.InternalRaftRequest{Authenticate: r}, true
	case *pb.AuthUserAddRequest:
		return &pb.InternalRaftRequest{AuthUserAdd: r}, true
	case *pb.AuthUserDeleteRequest:
		return &pb.InternalRaftRequest{AuthUserDelete: r}, true
	case *pb.AuthUserGetRequest:
		return &pb.InternalRaftRequest{AuthUserGet: r}, true
	case *pb.AuthUserChangePasswordRequest:
		return &pb.InternalRaftRequest{AuthUserChangePassword: r}, true
	case *pb.AuthUserGrantRoleRequest:
		return &pb.InternalRaftRequest{AuthUserGrantRole: r}, true
	case *pb.AuthUserRevokeRoleRequest:
		return &pb.InternalRaftRequest{AuthUserRevokeRole: r}, true
	case *pb.AuthUserListRequest:
		return &pb.InternalRaftRequest{AuthUserList: r}, true
	case *pb.AuthRoleAddRequest:
		return &pb.InternalRaftRequest{AuthRoleAdd: r}, true
	case *pb.AuthRoleDeleteRequest:
		return &pb.InternalRaftRequest{AuthRoleDelete: r}, true
	case *pb.AuthRoleGetRequest:
		return &pb.InternalRaftRequest{AuthRoleGet: r}, true
	case *pb.AuthRoleListRequest:
		return &pb.InternalRaftRequest{AuthRoleList: r}, true
	case *pb.AuthRoleGrantPermissionRequest:
		return &pb.InternalRaftRequest{AuthRoleGrantPermission: r}, true
	case *pb.AuthRoleRevokePermissionRequest:
		return &pb.InternalRaftRequest{AuthRoleRevokePermission: r}, true
	}
	return nil, false
}

// readRefusal is the permission check of a read when it is served (etcd's
// doSerialize): range permission for a range, every compare and op of a
// read-only txn.
func (n *Node) readRefusal(ai kvsm.AuthInfo, op proto.Message) error {
	switch r := op.(type) {
	case *pb.RangeRequest:
		return n.store.CheckRange(ai, r.GetKey(), r.GetRangeEnd())
	case *pb.TxnRequest:
		return n.store.CheckTxn(ai, r)
	}
	return nil
}

// afterAuthApply finishes an applied auth request: the simple token of a
// login (its prefix and the entry's index, as etcd makes it) and the events
// the host's token store follows.
func (n *Node) afterAuthApply(index uint64, r *pb.InternalRaftRequest, res kvsm.ApplyResult) {
	if res.Err != nil {
		return
	}
	switch {
	case r.GetAuthenticate() != nil:
		prefix := r.GetAuthenticate().GetSimpleToken()
		if prefix == "" {
			return // a JWT login: the host signs the token
		}
		token := prefix + "." + strconv.FormatUint(index, 10)
		if resp, ok := res.Resp.(*pb.AuthenticateResponse); ok {
			resp.Token = token
		}
		n.out.Auth = append(n.out.Auth, AuthEvent{Kind: AuthTokenAssigned, User: r.GetAuthenticate().GetName(), Token: token})
	case r.GetAuthUserDelete() != nil:
		n.out.Auth = append(n.out.Auth, AuthEvent{Kind: AuthUserInvalidated, User: r.GetAuthUserDelete().GetName()})
	case r.GetAuthUserChangePassword() != nil:
		n.out.Auth = append(n.out.Auth, AuthEvent{Kind: AuthUserInvalidated, User: r.GetAuthUserChangePassword().GetName()})
	case r.GetAuthDisable() != nil:
		n.out.Auth = append(n.out.Auth, AuthEvent{Kind: AuthDisabled})
	}
}

// WatchAs is Watch on behalf of the stream's identity: a watch is created
// only over a range its user may read; otherwise the reply is etcd's,
// created and canceled at once with the reason.
func (n *Node) WatchAs(stream kvsm.StreamID, req *pb.WatchRequest, ai kvsm.AuthInfo) {
	if cr := req.GetCreateRequest(); cr != nil && cr.GetStartRevision() >= 0 {
		key := cr.GetKey()
		if len(key) == 0 {
			key = []byte{0}
		}
		if err := n.store.CheckRange(ai, key, cr.GetRangeEnd()); err != nil {
			reason := rpctypes.ErrGRPCPermissionDenied.Error()
			switch err {
			case rpctypes.ErrGRPCAuthOldRevision, rpctypes.ErrGRPCUserEmpty, rpctypes.ErrGRPCInvalidAuthToken:
				reason = err.Error()
			}
			n.pushWatch(stream, &pb.WatchResponse{Header: n.header(0), WatchId: -1, Created: true, Canceled: true, CancelReason: reason})
			return
		}
	}
	n.Watch(stream, req)
}
