package sim

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

// The auth workload (Knobs.Auth): an administrator sets up root, two users
// and two roles, enables auth, then keeps granting and revoking roles and
// permissions while the faults go on; two users keep making requests under
// the "a/" keys, some inside their permissions and some not (txn compares
// on keys they may not read among them). The KV clients run as root.
//
// What is checked (auth_check.go): at every applied index, every member
// that applies the entry must give the same answer (the auth-agreement
// checker): permission is a pure function of replicated state, so a member
// that decides otherwise has a bug. Entries refused at apply had no effect
// and are left out of the log the KV checkers replay.

const (
	authKeyPrefix = "a/"
	// authHandleBit marks the auth workload's request handles apart from
	// the clients' and the operator's.
	authHandleBit = 1 << 61
	// authStreamBase numbers the auth users' watch streams apart from the
	// clients'.
	authStreamBase = 1 << 60
)

var authUsers = []string{"u1", "u2"}
var authRoles = []string{"r1", "r2"}

// fakeHashedPassword stands for a bcrypt hash: the simulator never logs in
// with a password (identities are handed in), so any bytes do.
var fakeHashedPassword = base64.StdEncoding.EncodeToString([]byte("sim-password-hash"))

type authWorkload struct {
	rng     *rand.Rand
	seq     uint64
	streams uint64
	enabled bool // the administrator saw auth on in the most-applied member's state
	// setupPermsSent counts the setup's permission grants sent (the store
	// has no reader for a role's permissions, so each is sent once; a lost
	// one only makes the start less pointed).
	setupPermsSent int
}

// authSetupPerms start each user with write access to its own prefix only
// (u2 may read it too): from the start, a user's txn whose compare reads
// the other user's keys must be refused, which only a correct permission
// check of the compares does. The random changes then move away from it.
var authSetupPerms = []*pb.AuthRoleGrantPermissionRequest{
	{Name: "r1", Perm: &authpb.Permission{PermType: authpb.WRITE, Key: []byte(authKeyPrefix + "u1/"), RangeEnd: prefixEnd(authKeyPrefix + "u1/")}},
	{Name: "r2", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte(authKeyPrefix + "u2/"), RangeEnd: prefixEnd(authKeyPrefix + "u2/")}},
}

// authSetupUserRoles pairs each user with its role in the setup.
var authSetupUserRoles = [][2]string{{"u1", "r1"}, {"u2", "r2"}}

func (w *world) setUpAuth() {
	if !w.k.Auth {
		return
	}
	w.auth = &authWorkload{rng: rand.New(rand.NewPCG(w.opts.Seed, 0x61757468))} // "auth"
	w.after(w.electionNs(), "auth admin", w.authAdminRound)
	w.after(2*w.electionNs(), "auth user", w.authUserRound)
}

// authIdentity is who a request from user comes as, resolved the way the
// server does for a simple token: the user at the member's auth revision
// when the request arrives.
func authIdentity(m *member, user string) kvsm.AuthInfo {
	return kvsm.AuthInfo{Username: user, Revision: m.node.Store().AuthRevision()}
}

// submitAs hands a request to m as root when the run uses auth (the KV
// clients and the operator are root), or anonymously otherwise.
func (w *world) submitAs(m *member, h node.Handle, req proto.Message) {
	if w.auth == nil {
		m.node.Submit(h, req)
		return
	}
	m.node.SubmitAs(h, req, authIdentity(m, kvsm.RootUser))
}

// watchAs is submitAs for watch requests.
func (w *world) watchAs(m *member, stream kvsm.StreamID, req *pb.WatchRequest) {
	if w.auth == nil {
		m.node.Watch(stream, req)
		return
	}
	m.node.WatchAs(stream, req, authIdentity(m, kvsm.RootUser))
}

func (w *world) authMember() *member {
	var up []*member
	for _, m := range w.members {
		if m.up && !m.paused && !m.removed && m.node != nil {
			up = append(up, m)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[w.auth.rng.IntN(len(up))]
}

// mostApplied is the running member that has applied the most: the
// administrator reads the auth state there to decide its next step.
func (w *world) mostApplied() *member {
	var best *member
	for _, m := range w.members {
		if m.up && !m.removed && m.node != nil && (best == nil || m.node.Status().AppliedIndex > best.node.Status().AppliedIndex) {
			best = m
		}
	}
	return best
}

func (w *world) authSend(m *member, user string, req proto.Message) {
	a := w.auth
	a.seq++
	h := node.Handle(authHandleBit | a.seq)
	w.after(w.clientLatency(), "auth request", func() {
		if m.up && !m.paused && m.node != nil {
			m.node.SubmitAs(h, req, authIdentity(m, user))
			w.drive(m)
		}
	})
}

// authAdminRound takes the next setup step, or, once auth is on, one
// random change of roles and permissions; then schedules the next round.
func (w *world) authAdminRound() {
	if w.phase != phaseSafety {
		return
	}
	// Setup steps follow each other quickly, so that auth is on for most
	// of the run; changes once it is on come every election timeout or so.
	next := w.electionNs()/2 + w.auth.rng.Int64N(2*w.electionNs()+1)
	defer func() { w.after(next, "auth admin", w.authAdminRound) }()
	state := w.mostApplied()
	target := w.authMember()
	if state == nil || target == nil {
		return
	}
	if req := w.authSetupStep(state.node.Store()); req != nil {
		w.tracef("auth admin: setup %s", describeAuthRequest(req))
		w.authSend(target, kvsm.RootUser, req)
		next = w.electionNs()/8 + w.auth.rng.Int64N(w.electionNs()/4+1)
		return
	}
	w.auth.enabled = true
	req := w.authRandomChange(state.node.Store())
	w.tracef("auth admin: %s", describeAuthRequest(req))
	w.authSend(target, kvsm.RootUser, req)
}

// authSetupStep is the next request of the setup, nil once it is done.
func (w *world) authSetupStep(s *kvsm.Store) proto.Message {
	if !s.HasUser(kvsm.RootUser) {
		return &pb.AuthUserAddRequest{Name: kvsm.RootUser, HashedPassword: fakeHashedPassword}
	}
	roles := s.RoleNames()
	if !slices.Contains(roles, kvsm.RootRole) {
		return &pb.AuthRoleAddRequest{Name: kvsm.RootRole}
	}
	if !slices.Contains(s.UserRoles(kvsm.RootUser), kvsm.RootRole) {
		return &pb.AuthUserGrantRoleRequest{User: kvsm.RootUser, Role: kvsm.RootRole}
	}
	for _, u := range authUsers {
		if !s.HasUser(u) {
			return &pb.AuthUserAddRequest{Name: u, HashedPassword: fakeHashedPassword}
		}
	}
	for _, r := range authRoles {
		if !slices.Contains(roles, r) {
			return &pb.AuthRoleAddRequest{Name: r}
		}
	}
	if w.auth.setupPermsSent < len(authSetupPerms) {
		w.auth.setupPermsSent++
		return authSetupPerms[w.auth.setupPermsSent-1]
	}
	if !w.auth.enabled { // once on, the random changes may take these away
		for _, ur := range authSetupUserRoles {
			if !slices.Contains(s.UserRoles(ur[0]), ur[1]) {
				return &pb.AuthUserGrantRoleRequest{User: ur[0], Role: ur[1]}
			}
		}
	}
	if !s.AuthEnabled() && !w.auth.enabled {
		return &pb.AuthEnableRequest{}
	}
	return nil
}

// authPermRange is one of the key ranges the administrator grants: a
// user's own prefix, a shared key, or everything under the prefix.
func (w *world) authPermRange() (key, end []byte) {
	switch w.auth.rng.IntN(4) {
	case 0:
		return []byte(authKeyPrefix + "shared"), nil
	case 1:
		return []byte(authKeyPrefix), prefixEnd(authKeyPrefix)
	default:
		p := authKeyPrefix + authUsers[w.auth.rng.IntN(len(authUsers))] + "/"
		return []byte(p), prefixEnd(p)
	}
}

func (w *world) authRandomChange(s *kvsm.Store) proto.Message {
	rng := w.auth.rng
	role := authRoles[rng.IntN(len(authRoles))]
	user := authUsers[rng.IntN(len(authUsers))]
	switch rng.IntN(10) {
	case 0, 1, 2:
		key, end := w.authPermRange()
		return &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: &authpb.Permission{
			PermType: authpb.Permission_Type(rng.IntN(3)), Key: key, RangeEnd: end}}
	case 3, 4:
		key, end := w.authPermRange()
		return &pb.AuthRoleRevokePermissionRequest{Role: role, Key: key, RangeEnd: end}
	case 5, 6:
		return &pb.AuthUserGrantRoleRequest{User: user, Role: role}
	case 7:
		return &pb.AuthUserRevokeRoleRequest{Name: user, Role: role}
	case 8:
		if s.AuthEnabled() && rng.IntN(4) == 0 {
			return &pb.AuthDisableRequest{}
		}
		return &pb.AuthEnableRequest{}
	default:
		// A role deleted and added back: its users lose it meanwhile.
		if slices.Contains(s.RoleNames(), role) {
			return &pb.AuthRoleDeleteRequest{Role: role}
		}
		return &pb.AuthRoleAddRequest{Name: role}
	}
}

// authUserRound has one of the users make one request under the "a/" keys.
func (w *world) authUserRound() {
	if w.phase != phaseSafety {
		return
	}
	a := w.auth
	defer w.after(w.electionNs()/4+a.rng.Int64N(w.electionNs()/2+1), "auth user", w.authUserRound)
	m := w.authMember()
	if m == nil {
		return
	}
	user := authUsers[a.rng.IntN(len(authUsers))]
	own := authKeyPrefix + user + "/"
	key := func() []byte {
		switch a.rng.IntN(4) {
		case 0:
			return []byte(authKeyPrefix + "shared")
		case 1:
			return []byte(authKeyPrefix + authUsers[a.rng.IntN(len(authUsers))] + "/k")
		default:
			return []byte(own + "k")
		}
	}
	val := []byte(fmt.Sprintf("%s.%d", user, a.seq+1))
	switch a.rng.IntN(6) {
	case 0:
		w.authSend(m, user, &pb.PutRequest{Key: key(), Value: val, PrevKv: a.rng.IntN(3) == 0})
	case 1:
		w.authSend(m, user, &pb.RangeRequest{Key: key(), Serializable: a.rng.IntN(2) == 0})
	case 2:
		w.authSend(m, user, &pb.DeleteRangeRequest{Key: []byte(own), RangeEnd: prefixEnd(own)})
	case 3, 4:
		// A write txn whose compare may be on a key the user cannot read
		// while its put is in its own prefix: only the compare decides.
		// Half of them compare the other user's key, which the setup's
		// permissions let no user but its owner read.
		cmpKey := key()
		if a.rng.IntN(2) == 0 {
			other := authUsers[(slices.Index(authUsers, user)+1)%len(authUsers)]
			cmpKey = []byte(authKeyPrefix + other + "/k")
		}
		w.authSend(m, user, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: cmpKey, Target: pb.Compare_VERSION, Result: pb.Compare_GREATER,
				TargetUnion: &pb.Compare_Version{Version: -1}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(own + "t"), Value: val}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(own + "t")}}}},
		})
	default:
		// A watch: created or refused by the member's permission check; the
		// stream closes again at once.
		a.streams++
		stream := kvsm.StreamID(authStreamBase + a.streams)
		k := key()
		w.after(w.clientLatency(), "auth watch", func() {
			if m.up && !m.paused && m.node != nil {
				m.node.WatchAs(stream, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
					CreateRequest: &pb.WatchCreateRequest{Key: k}}}, authIdentity(m, user))
				m.node.WatchCloseStream(stream)
				w.drive(m)
			}
		})
	}
}

func describeAuthRequest(m proto.Message) string {
	return fmt.Sprintf("%s %s", m.ProtoReflect().Descriptor().Name(), describeAuthFields(m))
}

func describeAuthFields(m proto.Message) string {
	switch r := m.(type) {
	case *pb.AuthRoleGrantPermissionRequest:
		return fmt.Sprintf("role=%s %s [%q,%q)", r.GetName(), r.GetPerm().GetPermType(), r.GetPerm().GetKey(), r.GetPerm().GetRangeEnd())
	case *pb.AuthRoleRevokePermissionRequest:
		return fmt.Sprintf("role=%s [%q,%q)", r.GetRole(), r.GetKey(), r.GetRangeEnd())
	case *pb.AuthUserGrantRoleRequest:
		return fmt.Sprintf("user=%s role=%s", r.GetUser(), r.GetRole())
	case *pb.AuthUserRevokeRoleRequest:
		return fmt.Sprintf("user=%s role=%s", r.GetName(), r.GetRole())
	case *pb.AuthUserAddRequest:
		return "user=" + r.GetName()
	case *pb.AuthRoleAddRequest:
		return "role=" + r.GetName()
	case *pb.AuthRoleDeleteRequest:
		return "role=" + r.GetRole()
	}
	return ""
}

// isAuthRefusal reports errors that mean the permission check refused a
// request: it had no effect.
func isAuthRefusal(err error) bool {
	switch rpctypes.ErrorDesc(err) {
	case rpctypes.ErrorDesc(rpctypes.ErrGRPCPermissionDenied), rpctypes.ErrorDesc(rpctypes.ErrGRPCAuthOldRevision),
		rpctypes.ErrorDesc(rpctypes.ErrGRPCUserEmpty), rpctypes.ErrorDesc(rpctypes.ErrGRPCUserNotFound):
		return err != nil
	}
	return false
}
