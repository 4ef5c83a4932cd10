package kvsm

import (
	"bytes"
	"maps"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Authentication state: users, roles, their key permissions, whether auth
// is on, and the auth revision that every change to them bumps. It is
// replicated state like the keys: it changes only through committed auth
// requests (auth_apply.go), a snapshot carries it, and the permission
// checks here are pure functions of it and the request's identity, so
// every member decides every request alike.
//
// Passwords arrive hashed (the API layer runs bcrypt, which draws random
// salt); tokens and their lifetimes are the server's (server/auth), never
// state.

// RootUser and RootRole are etcd's: enabling auth needs the root user
// holding the root role, which may do everything.
const (
	RootUser = "root"
	RootRole = "root"
)

// AuthInfo is who a request comes from, as the API layer resolved its
// token or client certificate: the user, and the auth revision the
// identity was issued at. A zero AuthInfo is an anonymous request.
type AuthInfo struct {
	Username string
	Revision uint64
}

// authState is immutable once built: a change builds a successor (auth
// changes are rare), so a View may share it with readers on other
// goroutines.
type authState struct {
	enabled  bool
	revision uint64
	users    map[string]*authpb.User // by name; never mutated after build
	roles    map[string]*authpb.Role
	perms    map[string]*userPerms // derived: each user's merged permissions
}

// interval is a half-open key range [start, end); end nil is unbounded.
type interval struct {
	start, end []byte
}

// userPerms holds one user's permissions merged over all its roles: sorted,
// disjoint, non-touching intervals, so that a range is permitted exactly
// when one interval covers it.
type userPerms struct {
	read, write []interval
}

func newAuthState() *authState {
	return &authState{
		revision: 1, // etcd's store starts at revision 1
		users:    map[string]*authpb.User{},
		roles:    map[string]*authpb.Role{},
		perms:    map[string]*userPerms{},
	}
}

// clone returns a successor to change; the caller replaces the entries it
// changes (never mutating a shared one) and calls derive.
func (a *authState) clone() *authState {
	return &authState{
		enabled:  a.enabled,
		revision: a.revision,
		users:    maps.Clone(a.users),
		roles:    maps.Clone(a.roles),
	}
}

// derive rebuilds the merged permissions of every user.
func (a *authState) derive() {
	a.perms = make(map[string]*userPerms, len(a.users))
	for _, name := range slices.Sorted(maps.Keys(a.users)) {
		a.perms[name] = a.mergePerms(a.users[name])
	}
}

func (a *authState) mergePerms(u *authpb.User) *userPerms {
	var read, write []interval
	for _, roleName := range u.GetRoles() {
		role := a.roles[roleName]
		for _, p := range role.GetKeyPermission() {
			ivl := permInterval(p.GetKey(), p.GetRangeEnd())
			switch p.GetPermType() {
			case authpb.Permission_READ:
				read = append(read, ivl)
			case authpb.Permission_WRITE:
				write = append(write, ivl)
			case authpb.Permission_READWRITE:
				read = append(read, ivl)
				write = append(write, ivl)
			}
		}
	}
	return &userPerms{read: mergeIntervals(read), write: mergeIntervals(write)}
}

// permInterval is the key range a permission grants: one key when
// range_end is empty, from key on when it is "\x00", else [key, range_end).
func permInterval(key, rangeEnd []byte) interval {
	switch {
	case len(rangeEnd) == 0:
		return interval{start: key, end: append(slices.Clip(key), 0)}
	case isOpenEnded(rangeEnd):
		return interval{start: key}
	}
	return interval{start: key, end: rangeEnd}
}

func isOpenEnded(rangeEnd []byte) bool { return len(rangeEnd) == 1 && rangeEnd[0] == 0 }

// endLess compares interval ends, nil (unbounded) above every key.
func endLess(a, b []byte) bool {
	switch {
	case a == nil:
		return false
	case b == nil:
		return true
	}
	return bytes.Compare(a, b) < 0
}

func mergeIntervals(in []interval) []interval {
	if len(in) == 0 {
		return nil
	}
	slices.SortStableFunc(in, func(x, y interval) int { return bytes.Compare(x.start, y.start) })
	out := []interval{in[0]}
	for _, ivl := range in[1:] {
		last := &out[len(out)-1]
		if last.end == nil || bytes.Compare(ivl.start, last.end) <= 0 {
			if endLess(last.end, ivl.end) {
				last.end = ivl.end
			}
			continue
		}
		out = append(out, ivl)
	}
	return out
}

// covers reports whether one of the merged intervals covers [start, end).
func covers(ivls []interval, start, end []byte) bool {
	for _, ivl := range ivls {
		if bytes.Compare(ivl.start, start) > 0 {
			return false
		}
		if !endLess(ivl.end, end) {
			return true
		}
	}
	return false
}

// permitted reports whether perms allow permType over the request range
// key..rangeEnd, read as a request reads it: one key when rangeEnd is
// empty, from key on when it is "\x00".
func (p *userPerms) permitted(key, rangeEnd []byte, permType authpb.Permission_Type) bool {
	ivls := p.read
	if permType == authpb.Permission_WRITE {
		ivls = p.write
	}
	var end []byte
	switch {
	case len(rangeEnd) == 0:
		end = append(slices.Clip(key), 0)
	case isOpenEnded(rangeEnd):
		end = nil
	case bytes.Compare(rangeEnd, key) <= 0:
		// An empty range reads nothing; it needs what its first key needs.
		end = append(slices.Clip(key), 0)
	default:
		end = rangeEnd
	}
	return covers(ivls, key, end)
}

func hasRootRole(u *authpb.User) bool {
	_, ok := slices.BinarySearch(u.GetRoles(), RootRole)
	return ok
}

// checkOp is etcd's isOpPermitted: nothing is checked while auth is off;
// an anonymous request is refused; an identity issued before the last
// auth change is refused as old (the client authenticates again); root
// may do everything; anyone else needs a permission covering the range.
func (a *authState) checkOp(ai AuthInfo, key, rangeEnd []byte, permType authpb.Permission_Type) error {
	if !a.enabled {
		return nil
	}
	if ai.Revision == 0 {
		return rpctypes.ErrGRPCUserEmpty
	}
	if ai.Revision < a.revision {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	u := a.users[ai.Username]
	if u == nil {
		return rpctypes.ErrGRPCPermissionDenied
	}
	if hasRootRole(u) {
		return nil
	}
	if p := a.perms[ai.Username]; p != nil && p.permitted(key, rangeEnd, permType) {
		return nil
	}
	return rpctypes.ErrGRPCPermissionDenied
}

// checkAdmin is etcd's IsAdminPermitted: with auth on, only a user holding
// the root role. It checks no revision, as etcd does not.
func (a *authState) checkAdmin(ai AuthInfo) error {
	if !a.enabled {
		return nil
	}
	if ai.Username == "" {
		return rpctypes.ErrGRPCUserEmpty
	}
	u := a.users[ai.Username]
	if u == nil {
		return rpctypes.ErrGRPCUserNotFound
	}
	if !hasRootRole(u) {
		return rpctypes.ErrGRPCPermissionDenied
	}
	return nil
}

func (a *authState) checkRange(ai AuthInfo, key, rangeEnd []byte) error {
	return a.checkOp(ai, key, rangeEnd, authpb.Permission_READ)
}

func (a *authState) checkWrite(ai AuthInfo, key, rangeEnd []byte) error {
	return a.checkOp(ai, key, rangeEnd, authpb.Permission_WRITE)
}

// checkPut is etcd's checkPutAuth: write on the key, write on every key of
// the lease it attaches (unless admin), read on the key for prev_kv.
func (a *authState) checkPut(ai AuthInfo, p *pb.PutRequest, leaseKeys func(int64) ([][]byte, bool)) error {
	if err := a.checkWrite(ai, p.GetKey(), nil); err != nil {
		return err
	}
	if err := a.checkLeaseKeys(ai, p.GetLease(), leaseKeys); err != nil {
		return err
	}
	if p.GetPrevKv() {
		return a.checkRange(ai, p.GetKey(), nil)
	}
	return nil
}

func (a *authState) checkDelete(ai AuthInfo, d *pb.DeleteRangeRequest) error {
	if err := a.checkWrite(ai, d.GetKey(), d.GetRangeEnd()); err != nil {
		return err
	}
	if d.GetPrevKv() {
		return a.checkRange(ai, d.GetKey(), d.GetRangeEnd())
	}
	return nil
}

// checkLeaseKeys is etcd's checkLeasePuts: a lease that exists may be
// attached to or revoked only by an admin or by whoever may write every
// key it holds.
func (a *authState) checkLeaseKeys(ai AuthInfo, leaseID int64, leaseKeys func(int64) ([][]byte, bool)) error {
	if leaseID == 0 || !a.enabled {
		return nil
	}
	keys, ok := leaseKeys(leaseID)
	if !ok {
		return nil
	}
	if a.checkAdmin(ai) == nil {
		return nil
	}
	for _, k := range keys {
		if err := a.checkWrite(ai, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// checkTxn is etcd's checkTxnPermission: read on every compare's range,
// then every op of both branches, nested txns included.
func (a *authState) checkTxn(ai AuthInfo, t *pb.TxnRequest, leaseKeys func(int64) ([][]byte, bool), skipCompares bool) error {
	if !skipCompares {
		for _, c := range t.GetCompare() {
			if err := a.checkRange(ai, c.GetKey(), c.GetRangeEnd()); err != nil {
				return err
			}
		}
	}
	for _, ops := range [][]*pb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			var err error
			switch {
			case op.GetRequestRange() != nil:
				err = a.checkRange(ai, op.GetRequestRange().GetKey(), op.GetRequestRange().GetRangeEnd())
			case op.GetRequestPut() != nil:
				err = a.checkPut(ai, op.GetRequestPut(), leaseKeys)
			case op.GetRequestDeleteRange() != nil:
				d := op.GetRequestDeleteRange()
				if d.GetPrevKv() {
					err = a.checkRange(ai, d.GetKey(), d.GetRangeEnd())
				}
				if err == nil {
					err = a.checkWrite(ai, d.GetKey(), d.GetRangeEnd())
				}
			case op.GetRequestTxn() != nil:
				err = a.checkTxn(ai, op.GetRequestTxn(), leaseKeys, skipCompares)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// AuthEnabled reports whether authentication is on.
func (s *Store) AuthEnabled() bool { return s.auth.enabled }

// AuthRevision is the auth revision: it starts at 1 and every change to
// users, roles or permissions (and disabling auth) bumps it.
func (s *Store) AuthRevision() uint64 { return s.auth.revision }

func (s *Store) leaseKeys(id int64) ([][]byte, bool) {
	l := s.getLease(id)
	if l == nil {
		return nil, false
	}
	return l.info().Keys, true
}

// CheckRange, CheckAdmin, CheckTxn, CheckLeaseKeys and CheckLeaseRead are
// the permission checks the API layer makes before or instead of raft
// (reads, watch creation, compaction, maintenance, lease keepalive).
// Proposals are checked again at apply, against the state they apply to.
func (s *Store) CheckRange(ai AuthInfo, key, rangeEnd []byte) error {
	return s.auth.checkRange(ai, key, rangeEnd)
}

func (s *Store) CheckAdmin(ai AuthInfo) error { return s.auth.checkAdmin(ai) }

func (s *Store) CheckTxn(ai AuthInfo, t *pb.TxnRequest) error {
	return s.auth.checkTxn(ai, t, s.leaseKeys, false)
}

// CheckLeaseKeys is the check for a keepalive: admin, or write on every
// key of the lease.
func (s *Store) CheckLeaseKeys(ai AuthInfo, id int64) error {
	if !s.auth.enabled {
		return nil
	}
	if ai.Username == "" && ai.Revision == 0 {
		return rpctypes.ErrGRPCUserEmpty
	}
	return s.auth.checkLeaseKeys(ai, id, s.leaseKeys)
}

// CheckLeaseRead is the check for a time-to-live: admin, or read on every
// key of the lease.
func (s *Store) CheckLeaseRead(ai AuthInfo, id int64) error {
	if !s.auth.enabled {
		return nil
	}
	if ai.Username == "" && ai.Revision == 0 {
		return rpctypes.ErrGRPCUserEmpty
	}
	if s.auth.checkAdmin(ai) == nil {
		return nil
	}
	keys, _ := s.leaseKeys(id)
	for _, k := range keys {
		if err := s.auth.checkRange(ai, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// UserPassword returns a user's bcrypt hash for the API layer's password
// check, and whether the user exists and may log in with a password.
func (s *Store) UserPassword(name string) (hash []byte, ok bool, noPassword bool) {
	return userPassword(s.auth, name)
}

func userPassword(a *authState, name string) (hash []byte, ok bool, noPassword bool) {
	u := a.users[name]
	if u == nil {
		return nil, false, false
	}
	if u.GetOptions().GetNoPassword() {
		return nil, true, true
	}
	return u.GetPassword(), true, false
}

// UserRoles returns a user's roles in name order (nil for no such user).
func (s *Store) UserRoles(name string) []string {
	return slices.Clone(s.auth.users[name].GetRoles())
}

// HasUser reports whether a user exists (a client certificate's CN names
// one).
func (s *Store) HasUser(name string) bool { return s.auth.users[name] != nil }
