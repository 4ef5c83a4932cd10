package auth

import (
	"crypto/rand"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Simple tokens are etcd's: 16 random letters, ".", and the raft index of
// the login that assigned them. Every member applies the login and learns
// the token (node's AuthTokenAssigned), so any member accepts it; it lives
// --auth-token-ttl from its last use, and dies with its user's deletion or
// password change, or when auth is disabled.

const (
	simplePrefixLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	simplePrefixLength  = 16
	// simpleTokensMax bounds the table: past it the oldest-expiring token
	// goes first (a flood of logins cannot grow the member without bound).
	simpleTokensMax = 1 << 20
)

// newSimplePrefix draws a login's token prefix.
func newSimplePrefix() (string, error) {
	b := make([]byte, simplePrefixLength)
	n := big.NewInt(int64(len(simplePrefixLetters)))
	for i := range b {
		x, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", err
		}
		b[i] = simplePrefixLetters[x.Int64()]
	}
	return string(b), nil
}

// ParseSimpleToken splits a simple token into its prefix and index; ok is
// false for anything that is not one.
func ParseSimpleToken(token string) (prefix string, index uint64, ok bool) {
	prefix, idx, found := strings.Cut(token, ".")
	if !found || len(prefix) != simplePrefixLength || strings.Trim(prefix, simplePrefixLetters) != "" {
		return "", 0, false
	}
	index, err := strconv.ParseUint(idx, 10, 64)
	if err != nil || index == 0 || strconv.FormatUint(index, 10) != idx {
		return "", 0, false
	}
	return prefix, index, true
}

type simpleEntry struct {
	user    string
	expires time.Time
}

// simpleTable is the member's table of simple tokens.
type simpleTable struct {
	ttl   time.Duration
	now   func() time.Time
	mu    sync.Mutex
	byTok map[string]*simpleEntry
	added chan struct{} // closed and replaced on every assignment
}

func newSimpleTable(ttl time.Duration, now func() time.Time) *simpleTable {
	return &simpleTable{ttl: ttl, now: now, byTok: map[string]*simpleEntry{}, added: make(chan struct{})}
}

func (t *simpleTable) assign(token, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byTok) >= simpleTokensMax {
		t.expireLocked(true)
	}
	t.byTok[token] = &simpleEntry{user: user, expires: t.now().Add(t.ttl)}
	close(t.added)
	t.added = make(chan struct{})
}

// lookup returns the token's user and renews it; the channel is closed at
// the next assignment (a caller that is early may wait for it).
func (t *simpleTable) lookup(token string) (string, bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byTok[token]
	now := t.now()
	if e == nil || now.After(e.expires) {
		return "", false, t.added
	}
	e.expires = now.Add(t.ttl)
	return e.user, true, t.added
}

func (t *simpleTable) invalidateUser(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for tok, e := range t.byTok {
		if e.user == user {
			delete(t.byTok, tok)
		}
	}
}

func (t *simpleTable) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byTok = map[string]*simpleEntry{}
}

// expire drops expired tokens (the server calls it now and then).
func (t *simpleTable) expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(false)
}

// expireLocked drops expired tokens; full also drops the one closest to
// expiring, to make room.
func (t *simpleTable) expireLocked(full bool) {
	now := t.now()
	var soonest string
	var soonestAt time.Time
	for tok, e := range t.byTok {
		if now.After(e.expires) {
			delete(t.byTok, tok)
			continue
		}
		if soonest == "" || e.expires.Before(soonestAt) {
			soonest, soonestAt = tok, e.expires
		}
	}
	if full && len(t.byTok) >= simpleTokensMax && soonest != "" {
		delete(t.byTok, soonest)
	}
}

func (t *simpleTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byTok)
}
