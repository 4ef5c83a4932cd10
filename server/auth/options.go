package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultJWTTTL is a JWT's lifetime when --auth-token names no ttl.
const DefaultJWTTTL = 5 * time.Minute

// TokenType is the kind of token --auth-token asks for.
type TokenType string

const (
	TokenSimple TokenType = "simple"
	TokenJWT    TokenType = "jwt"
)

// errInvalidAuthOpts is etcd's text for a malformed --auth-token.
var errInvalidAuthOpts = errors.New("auth: invalid auth options")

// TokenSpec is a parsed --auth-token: its type and, for jwt, the signing
// method, keys and TTL.
type TokenSpec struct {
	Type       TokenType
	SignMethod jwt.SigningMethod
	Key        any  // what signs (a private key or an HMAC secret), or only verifies
	VerifyOnly bool // only a public key was given: tokens are checked, never issued
	TTL        time.Duration
}

// ParseTokenSpec parses --auth-token as etcd does: "simple", or
// "jwt,pub-key=FILE,priv-key=FILE,sign-method=METHOD,ttl=DURATION" (etcd's
// options, comma-separated key=value pairs, each at most once). readFile
// reads the key files. Every error says what is wrong; the caller names
// the flag.
func ParseTokenSpec(spec string, readFile func(string) ([]byte, error)) (TokenSpec, error) {
	parts := strings.Split(spec, ",")
	opts := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.Contains(v, "=") {
			return TokenSpec{}, fmt.Errorf("%w: %q is not key=value", errInvalidAuthOpts, p)
		}
		if _, dup := opts[k]; dup {
			return TokenSpec{}, fmt.Errorf("%w: %q given twice", errInvalidAuthOpts, k)
		}
		opts[k] = v
	}
	switch TokenType(parts[0]) {
	case TokenSimple:
		return TokenSpec{Type: TokenSimple}, nil
	case TokenJWT:
		return parseJWTSpec(opts, readFile)
	}
	return TokenSpec{}, fmt.Errorf("%w: unknown token type %q (want simple or jwt)", errInvalidAuthOpts, parts[0])
}

func parseJWTSpec(opts map[string]string, readFile func(string) ([]byte, error)) (TokenSpec, error) {
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		switch k {
		case "sign-method", "pub-key", "priv-key", "ttl":
		default:
			return TokenSpec{}, fmt.Errorf("%w: unknown jwt option %q (want sign-method, pub-key, priv-key, ttl)", errInvalidAuthOpts, k)
		}
	}
	s := TokenSpec{Type: TokenJWT, TTL: DefaultJWTTTL}
	if v := opts["ttl"]; v != "" {
		ttl, err := time.ParseDuration(v)
		if err != nil || ttl <= 0 {
			return TokenSpec{}, fmt.Errorf("%w: jwt ttl %q is not a positive duration", errInvalidAuthOpts, v)
		}
		s.TTL = ttl
	}
	method := opts["sign-method"]
	s.SignMethod = jwt.GetSigningMethod(method)
	if s.SignMethod == nil || method == "none" {
		return TokenSpec{}, fmt.Errorf("%w: invalid auth signature method %q", errInvalidAuthOpts, method)
	}
	var pub, priv []byte
	var err error
	if f := opts["pub-key"]; f != "" {
		if pub, err = readFile(f); err != nil {
			return TokenSpec{}, fmt.Errorf("%w: pub-key: %v", errInvalidAuthOpts, err)
		}
	}
	if f := opts["priv-key"]; f != "" {
		if priv, err = readFile(f); err != nil {
			return TokenSpec{}, fmt.Errorf("%w: priv-key: %v", errInvalidAuthOpts, err)
		}
	}
	s.Key, s.VerifyOnly, err = jwtKey(s.SignMethod, pub, priv)
	if err != nil {
		return TokenSpec{}, fmt.Errorf("%w: %v", errInvalidAuthOpts, err)
	}
	return s, nil
}

var (
	errMissingKey  = errors.New("auth: missing key data")
	errKeyMismatch = errors.New("auth: public and private keys don't match")
)

// jwtKey parses the keys for the method: the private key signs (the public
// one, if given, must match it); a public key alone only verifies; HMAC
// takes its secret from priv-key.
func jwtKey(method jwt.SigningMethod, pub, priv []byte) (key any, verifyOnly bool, err error) {
	type keyPair struct {
		priv crypto.Signer
		pub  crypto.PublicKey
	}
	var kp keyPair
	switch method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(priv) == 0 {
			return nil, false, errMissingKey
		}
		return priv, false, nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		if len(priv) > 0 {
			k, err := jwt.ParseRSAPrivateKeyFromPEM(priv)
			if err != nil {
				return nil, false, fmt.Errorf("priv-key: %w", err)
			}
			kp.priv = k
		}
		if len(pub) > 0 {
			k, err := jwt.ParseRSAPublicKeyFromPEM(pub)
			if err != nil {
				return nil, false, fmt.Errorf("pub-key: %w", err)
			}
			kp.pub = k
		}
	case *jwt.SigningMethodECDSA:
		if len(priv) > 0 {
			k, err := jwt.ParseECPrivateKeyFromPEM(priv)
			if err != nil {
				return nil, false, fmt.Errorf("priv-key: %w", err)
			}
			kp.priv = k
		}
		if len(pub) > 0 {
			k, err := jwt.ParseECPublicKeyFromPEM(pub)
			if err != nil {
				return nil, false, fmt.Errorf("pub-key: %w", err)
			}
			kp.pub = k
		}
	case *jwt.SigningMethodEd25519:
		if len(priv) > 0 {
			k, err := jwt.ParseEdPrivateKeyFromPEM(priv)
			if err != nil {
				return nil, false, fmt.Errorf("priv-key: %w", err)
			}
			kp.priv = k.(ed25519.PrivateKey)
		}
		if len(pub) > 0 {
			k, err := jwt.ParseEdPublicKeyFromPEM(pub)
			if err != nil {
				return nil, false, fmt.Errorf("pub-key: %w", err)
			}
			kp.pub = k
		}
	default:
		return nil, false, fmt.Errorf("unsupported signing method %q", method.Alg())
	}
	if kp.priv == nil {
		if kp.pub == nil {
			return nil, false, errMissingKey
		}
		return kp.pub, true, nil
	}
	if kp.pub != nil {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if e, ok := kp.pub.(equaler); !ok || !e.Equal(kp.priv.Public()) {
			return nil, false, errKeyMismatch
		}
	}
	return kp.priv, false, nil
}

// verifyKey is what checks a signature made with key.
func verifyKey(key any) any {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case ed25519.PrivateKey:
		return k.Public()
	}
	return key
}
