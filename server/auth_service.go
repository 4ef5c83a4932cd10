package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
	"github.com/noded/noded/server/auth"
)

// Authentication: who a call comes from is resolved here, once, from its
// token or client certificate (server/auth), and handed to the node with
// the request; users, roles and permissions are replicated state in kvsm,
// and the node checks them. Calls the member makes itself (auto
// compaction, health probes, leadership transfer on stop) run as root.

type internalCallKey struct{}

// internalCall marks a call the member makes on its own behalf.
func internalCall(ctx context.Context) context.Context {
	return context.WithValue(ctx, internalCallKey{}, true)
}

func isInternalCall(ctx context.Context) bool {
	v, _ := ctx.Value(internalCallKey{}).(bool)
	return v
}

// identity is etcd's AuthInfoFromCtx: nobody while auth is off; the user
// a token names (an invalid token is an error, never anonymous); else,
// with --client-cert-auth, the CN of the client's verified certificate;
// else anonymous (refused by every check once auth is on).
func (m *Member) identity(ctx context.Context) (kvsm.AuthInfo, error) {
	view := m.state.Load().view
	if !view.AuthEnabled() {
		return kvsm.AuthInfo{}, nil
	}
	if isInternalCall(ctx) {
		return kvsm.AuthInfo{Username: kvsm.RootUser, Revision: view.AuthRevision()}, nil
	}
	if token, ok := auth.TokenFromContext(ctx); ok {
		ai, ok := m.tokens.Resolve(ctx, token,
			func() uint64 { return m.state.Load().view.AuthRevision() },
			func() uint64 { return m.state.Load().status.AppliedIndex })
		if !ok {
			return kvsm.AuthInfo{}, rpctypes.ErrGRPCInvalidAuthToken
		}
		return ai, nil
	}
	if m.cfg.ClientTLS.ClientCertAuth {
		if cn := auth.CommonNameFromContext(ctx); cn != "" {
			return kvsm.AuthInfo{Username: cn, Revision: view.AuthRevision()}, nil
		}
	}
	return kvsm.AuthInfo{}, nil
}

// followAuth hands applied auth changes to the token store (on the loop).
func (m *Member) followAuth(events []node.AuthEvent) {
	for _, ev := range events {
		m.tokens.Follow(ev)
	}
}

// authServer is etcd's Auth service. Every request but Authenticate is
// proposed with its caller's identity and applied by every member.
type authServer struct {
	pb.UnimplementedAuthServer
	m *Member
}

func (s *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return doTyped[*pb.AuthEnableResponse](ctx, s.m, r)
}

func (s *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return doTyped[*pb.AuthDisableResponse](ctx, s.m, r)
}

func (s *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return doTyped[*pb.AuthStatusResponse](ctx, s.m, r)
}

// authenticateRoundsMax bounds the retries of a login whose password check
// raced an auth change.
const authenticateRoundsMax = 8

// Authenticate is etcd's: a linearizable read so that the password is
// checked against everything committed before the call, the check (bcrypt,
// off the loop), then the login through the log, so that every member
// learns a simple token; retried if the auth state changed meanwhile.
func (s *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	m := s.m
	for range authenticateRoundsMax {
		if _, err := m.do(internalCall(ctx), &pb.RangeRequest{Key: []byte{0}, Limit: 1, KeysOnly: true}); err != nil {
			return nil, err
		}
		view := m.state.Load().view
		if !view.AuthEnabled() {
			return nil, rpctypes.ErrGRPCAuthNotEnabled
		}
		checked := view.AuthRevision()
		hash, ok, noPassword := view.UserPassword(r.GetName())
		if !ok || noPassword || !auth.PasswordMatches(hash, r.GetPassword()) {
			m.lg.Info("invalid authentication was requested", zap.String("user", r.GetName()))
			return nil, rpctypes.ErrGRPCAuthFailed
		}
		prefix, err := m.tokens.LoginPrefix()
		if err != nil {
			return nil, err
		}
		resp, err := doTyped[*pb.AuthenticateResponse](ctx, m, &pb.InternalAuthenticateRequest{Name: r.GetName(), SimpleToken: prefix})
		if err != nil {
			return nil, err
		}
		rev := m.state.Load().view.AuthRevision()
		if rev != checked {
			m.lg.Info("auth changed while a password was checked; checking again", zap.String("user", r.GetName()))
			continue
		}
		if resp.Token, err = m.tokens.Issue(r.GetName(), rev, resp.GetToken()); err != nil {
			return nil, err
		}
		return resp, nil
	}
	return nil, rpctypes.ErrGRPCTimeout
}

func (s *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if !r.GetOptions().GetNoPassword() {
		hashed, err := auth.HashPassword(r.GetPassword(), s.m.bcryptCost)
		if err != nil {
			return nil, err
		}
		r = &pb.AuthUserAddRequest{Name: r.GetName(), HashedPassword: hashed, Options: r.GetOptions()}
	} else {
		r = &pb.AuthUserAddRequest{Name: r.GetName(), Options: r.GetOptions()}
	}
	return doTyped[*pb.AuthUserAddResponse](ctx, s.m, r)
}

func (s *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return doTyped[*pb.AuthUserGetResponse](ctx, s.m, r)
}

func (s *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return doTyped[*pb.AuthUserListResponse](ctx, s.m, r)
}

func (s *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return doTyped[*pb.AuthUserDeleteResponse](ctx, s.m, r)
}

func (s *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	hashed, err := auth.HashPassword(r.GetPassword(), s.m.bcryptCost)
	if err != nil {
		return nil, err
	}
	r = &pb.AuthUserChangePasswordRequest{Name: r.GetName(), HashedPassword: hashed}
	return doTyped[*pb.AuthUserChangePasswordResponse](ctx, s.m, r)
}

func (s *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return doTyped[*pb.AuthUserGrantRoleResponse](ctx, s.m, r)
}

func (s *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return doTyped[*pb.AuthUserRevokeRoleResponse](ctx, s.m, r)
}

func (s *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return doTyped[*pb.AuthRoleAddResponse](ctx, s.m, r)
}

func (s *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return doTyped[*pb.AuthRoleGetResponse](ctx, s.m, r)
}

func (s *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return doTyped[*pb.AuthRoleListResponse](ctx, s.m, r)
}

func (s *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return doTyped[*pb.AuthRoleDeleteResponse](ctx, s.m, r)
}

func (s *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return doTyped[*pb.AuthRoleGrantPermissionResponse](ctx, s.m, r)
}

func (s *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return doTyped[*pb.AuthRoleRevokePermissionResponse](ctx, s.m, r)
}

// adminOnly is etcd's API-layer check for the maintenance calls served
// without the loop (defragment, snapshot, hash).
func (m *Member) adminOnly(ctx context.Context) error {
	ai, err := m.identity(ctx)
	if err != nil {
		return err
	}
	return m.state.Load().view.CheckAdmin(ai)
}
