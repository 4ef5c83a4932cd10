package auth

import (
	"context"
	"time"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

// simpleWaitMax bounds how long a member waits to learn a simple token
// whose login it has not applied yet (the client logged in through a
// member ahead of this one).
const simpleWaitMax = 2 * time.Second

// Tokens issues and resolves the member's tokens. It is safe for
// concurrent use.
type Tokens struct {
	spec   TokenSpec
	simple *simpleTable // simple tokens; only for TokenSimple
	now    func() time.Time
}

// NewTokens returns the token store for a parsed --auth-token; ttl is
// --auth-token-ttl (simple tokens). now is the wall clock (tests pass
// their own).
func NewTokens(spec TokenSpec, ttl time.Duration, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	t := &Tokens{spec: spec, now: now}
	if spec.Type == TokenSimple {
		t.simple = newSimpleTable(ttl, now)
	}
	return t
}

// LoginPrefix is what a login carries into the log: a fresh simple token
// prefix, or "" for JWTs (signed after the login applies).
func (t *Tokens) LoginPrefix() (string, error) {
	if t.spec.Type != TokenSimple {
		return "", nil
	}
	return newSimplePrefix()
}

// Issue returns the token for an applied login: the simple token node made
// (simpleToken), or a JWT signed now with the auth revision.
func (t *Tokens) Issue(user string, revision uint64, simpleToken string) (string, error) {
	if t.spec.Type == TokenSimple {
		return simpleToken, nil
	}
	return signJWT(t.spec, user, revision, t.now())
}

// Follow applies what the node reports of applied auth changes.
func (t *Tokens) Follow(ev node.AuthEvent) {
	if t.simple == nil {
		return
	}
	switch ev.Kind {
	case node.AuthTokenAssigned:
		t.simple.assign(ev.Token, ev.User)
	case node.AuthUserInvalidated:
		t.simple.invalidateUser(ev.User)
	case node.AuthDisabled:
		t.simple.clear()
	}
}

// Expire drops expired simple tokens.
func (t *Tokens) Expire() {
	if t.simple != nil {
		t.simple.expire()
	}
}

// Resolve returns the identity a token stands for; ok is false for an
// invalid token (etcd's ErrInvalidAuthToken). currentRevision is the
// member's auth revision: a simple token stands for its user at it, a JWT
// for the revision it was signed at. appliedIndex reports how far the
// member has applied: a simple token from a login not applied here yet is
// waited for, briefly.
func (t *Tokens) Resolve(ctx context.Context, token string, currentRevision func() uint64, appliedIndex func() uint64) (kvsm.AuthInfo, bool) {
	if t.spec.Type == TokenJWT {
		return ParseJWT(t.spec, token, t.now())
	}
	_, index, ok := ParseSimpleToken(token)
	if !ok {
		return kvsm.AuthInfo{}, false
	}
	deadline := time.NewTimer(simpleWaitMax)
	defer deadline.Stop()
	for {
		user, found, added := t.simple.lookup(token)
		if found {
			return kvsm.AuthInfo{Username: user, Revision: currentRevision()}, true
		}
		if appliedIndex() >= index {
			return kvsm.AuthInfo{}, false
		}
		select {
		case <-added:
		case <-ctx.Done():
			return kvsm.AuthInfo{}, false
		case <-deadline.C:
			return kvsm.AuthInfo{}, false
		case <-time.After(50 * time.Millisecond):
			// the index may be applied by an entry that assigned nothing
		}
	}
}
