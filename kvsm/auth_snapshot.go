package kvsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
)

// The auth section of a snapshot follows the alarms, and only when the
// auth state differs from a new store's, so a store that never used auth
// encodes (and hashes) as it did before auth existed:
//
//	enabled(0|1) revision
//	userCount { name password noPassword(0|1) roleCount { role } }
//	roleCount { name permCount { permType key rangeEnd } }
//
// Users and roles ascend by name, a user's roles ascend, a role's
// permissions ascend by (key, range end); nothing repeats.

func (a *authState) isNew() bool {
	return !a.enabled && a.revision == 1 && len(a.users) == 0 && len(a.roles) == 0
}

func (a *authState) encode(e *encoder) {
	if a.isNew() {
		return
	}
	e.uvarint(boolUvarint(a.enabled))
	e.uvarint(a.revision)
	names := sortedNames(a.users)
	e.uvarint(uint64(len(names)))
	for _, name := range names {
		u := a.users[name]
		e.bytes([]byte(name))
		e.bytes(u.GetPassword())
		e.uvarint(boolUvarint(u.GetOptions().GetNoPassword()))
		e.uvarint(uint64(len(u.GetRoles())))
		for _, r := range u.GetRoles() {
			e.bytes([]byte(r))
		}
	}
	names = sortedNames(a.roles)
	e.uvarint(uint64(len(names)))
	for _, name := range names {
		r := a.roles[name]
		e.bytes([]byte(name))
		e.uvarint(uint64(len(r.GetKeyPermission())))
		for _, p := range r.GetKeyPermission() {
			e.uvarint(uint64(p.GetPermType()))
			e.bytes(p.GetKey())
			e.bytes(p.GetRangeEnd())
		}
	}
}

func boolUvarint(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func (d *decoder) flag(what string) bool {
	v := d.uvarint()
	if v > 1 && d.err == nil {
		d.err = fmt.Errorf("kvsm: snapshot %s flag %d", what, v)
	}
	return v == 1
}

// decodeAuth reads the auth section; its invariants are checked with the
// rest of the state's.
func decodeAuth(d *decoder) (*authState, error) {
	a := newAuthState()
	a.enabled = d.flag("auth enabled")
	a.revision = d.uvarint()
	prevUser, prevRole := "", ""
	nusers := d.count(4)
	for range nusers {
		name := string(d.bytes())
		u := &authpb.User{Name: []byte(name), Password: d.bytes(), Options: &authpb.UserAddOptions{NoPassword: d.flag("no password")}}
		nroles := d.count(1)
		for range nroles {
			u.Roles = append(u.Roles, string(d.bytes()))
		}
		if d.err != nil {
			return nil, d.err
		}
		if len(u.Password) == 0 {
			u.Password = nil
		}
		if len(a.users) > 0 && prevUser >= name {
			return nil, fmt.Errorf("kvsm: snapshot users out of order at %q", name)
		}
		prevUser = name
		a.users[name] = u
	}
	nroles := d.count(2)
	for range nroles {
		name := string(d.bytes())
		r := &authpb.Role{Name: []byte(name)}
		nperms := d.count(3)
		for range nperms {
			t := d.uvarint()
			if _, ok := authpb.Permission_Type_name[int32(t)]; !ok && d.err == nil {
				d.err = fmt.Errorf("kvsm: snapshot permission type %d", t)
			}
			p := &authpb.Permission{PermType: authpb.Permission_Type(t), Key: d.bytes(), RangeEnd: d.bytes()}
			if len(p.RangeEnd) == 0 {
				p.RangeEnd = nil
			}
			r.KeyPermission = append(r.KeyPermission, p)
		}
		if d.err != nil {
			return nil, d.err
		}
		if len(a.roles) > 0 && prevRole >= name {
			return nil, fmt.Errorf("kvsm: snapshot roles out of order at %q", name)
		}
		prevRole = name
		a.roles[name] = r
	}
	if d.err != nil {
		return nil, d.err
	}
	if a.isNew() {
		// A new store's auth state has no section: one state, one encoding.
		return nil, errNotCanonical
	}
	a.derive()
	return a, nil
}

// checkInvariants verifies the auth state: a positive revision, names
// that match their keys, sorted and unique role lists, valid sorted
// permissions, and merged permissions that match.
func (a *authState) checkInvariants() error {
	if a.revision < 1 {
		return errors.New("kvsm: auth revision 0")
	}
	for _, name := range sortedNames(a.users) {
		u := a.users[name]
		if name == "" || string(u.GetName()) != name {
			return fmt.Errorf("kvsm: user %q stored as %q", u.GetName(), name)
		}
		for i, r := range u.GetRoles() {
			if i > 0 && u.GetRoles()[i-1] >= r {
				return fmt.Errorf("kvsm: user %q roles not sorted", name)
			}
		}
		if u.GetOptions().GetNoPassword() && len(u.GetPassword()) > 0 {
			return fmt.Errorf("kvsm: no-password user %q has a password", name)
		}
	}
	for _, name := range sortedNames(a.roles) {
		r := a.roles[name]
		if name == "" || string(r.GetName()) != name {
			return fmt.Errorf("kvsm: role %q stored as %q", r.GetName(), name)
		}
		for i, p := range r.GetKeyPermission() {
			if !validPermissionRange(p.GetKey(), p.GetRangeEnd()) {
				return fmt.Errorf("kvsm: role %q has an invalid permission range %q-%q", name, p.GetKey(), p.GetRangeEnd())
			}
			if _, ok := authpb.Permission_Type_name[int32(p.GetPermType())]; !ok {
				return fmt.Errorf("kvsm: role %q has permission type %d", name, p.GetPermType())
			}
			if i > 0 && comparePerm(r.GetKeyPermission()[i-1], p) >= 0 {
				return fmt.Errorf("kvsm: role %q permissions not sorted", name)
			}
		}
	}
	if a.enabled {
		if u := a.users[RootUser]; u == nil || !hasRootRole(u) {
			return errors.New("kvsm: auth enabled without a root user holding the root role")
		}
	}
	if len(a.perms) != len(a.users) {
		return fmt.Errorf("kvsm: merged permissions for %d users, %d users", len(a.perms), len(a.users))
	}
	for _, name := range sortedNames(a.users) {
		want := a.mergePerms(a.users[name])
		got := a.perms[name]
		if got == nil || !sameIntervals(got.read, want.read) || !sameIntervals(got.write, want.write) {
			return fmt.Errorf("kvsm: merged permissions of user %q are stale", name)
		}
	}
	return nil
}

func sameIntervals(a, b []interval) bool {
	return slices.EqualFunc(a, b, func(x, y interval) bool {
		return bytes.Equal(x.start, y.start) && bytes.Equal(x.end, y.end) && (x.end == nil) == (y.end == nil)
	})
}
