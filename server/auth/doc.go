// Package auth is the member's side of authentication that is not
// replicated state: tokens (etcd's simple tokens, with their TTL renewed on
// use, and signed JWTs), bcrypt password hashing and checking, the
// --auth-token flag, and reading who a request comes from (its token in the
// gRPC metadata or the gateway's Authorization header, or the CN of its
// verified client certificate). Randomness and clocks live here, never in
// kvsm: users, roles, permissions and the auth revision are replicated
// state there, and the checks against them are pure functions.
//
// auth may import kvsm, node, the standard library and the modules in
// go.mod (golang-jwt/jwt/v5, golang.org/x/crypto/bcrypt, grpc).
//
// # Files
//
//	options.go   the --auth-token flag: type, JWT options, keys
//	tokens.go    Tokens: one token store for simple and JWT tokens
//	simple.go    simple tokens: random prefixes, the table, TTLs
//	jwt.go       JWT signing and verification
//	password.go  bcrypt
//	identity.go  the token or client certificate CN of a request
package auth
