package auth

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/noded/noded/kvsm"
)

// JWTs are etcd's: claims "username", "revision" (the auth revision at
// login) and "exp", signed with the configured method. A token signed
// before a later auth change carries the old revision and is refused with
// AuthOldRevision when used (the client logs in again).

var errVerifyOnly = errors.New("auth: token signing attempted with verify-only key")

func signJWT(spec TokenSpec, user string, revision uint64, now time.Time) (string, error) {
	if spec.VerifyOnly {
		return "", errVerifyOnly
	}
	tk := jwt.NewWithClaims(spec.SignMethod, jwt.MapClaims{
		"username": user,
		"revision": revision,
		"exp":      now.Add(spec.TTL).Unix(),
	})
	return tk.SignedString(spec.Key)
}

// ParseJWT verifies a token against the spec's key and method and returns
// its identity; ok is false for a token that is malformed, forged, signed
// another way, expired, or missing a claim.
func ParseJWT(spec TokenSpec, token string, now time.Time) (kvsm.AuthInfo, bool) {
	parsed, err := jwt.Parse(token, func(t *jwt.Token) (any, error) {
		if t.Method.Alg() != spec.SignMethod.Alg() {
			return nil, errors.New("auth: token signed with another method")
		}
		return verifyKey(spec.Key), nil
	}, jwt.WithTimeFunc(func() time.Time { return now }), jwt.WithValidMethods([]string{spec.SignMethod.Alg()}))
	if err != nil || !parsed.Valid {
		return kvsm.AuthInfo{}, false
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok {
		return kvsm.AuthInfo{}, false
	}
	user, ok := claims["username"].(string)
	if !ok {
		return kvsm.AuthInfo{}, false
	}
	rev, ok := claims["revision"].(float64)
	if !ok || rev < 0 || rev > 1<<53 {
		return kvsm.AuthInfo{}, false
	}
	return kvsm.AuthInfo{Username: user, Revision: uint64(rev)}, true
}
