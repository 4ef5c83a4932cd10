package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rsaKeys writes an RSA key pair and returns the files.
func rsaKeys(t *testing.T, dir, name string) (pub, priv string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return writePEM(t, dir, name+".pub", "PUBLIC KEY", pubDER), writePEM(t, dir, name+".key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
}

func TestParseTokenSpec(t *testing.T) {
	dir := t.TempDir()
	pub, priv := rsaKeys(t, dir, "a")
	otherPub, _ := rsaKeys(t, dir, "b")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	ecPriv := writePEM(t, dir, "ec.key", "EC PRIVATE KEY", ecDER)
	for _, tc := range []struct {
		spec string
		want string // "" = accepted; else a piece of the error
	}{
		{"simple", ""},
		{"jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=RS256", ""},
		{"jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=RS256,ttl=10m", ""},
		{"jwt,priv-key=" + ecPriv + ",sign-method=ES256", ""},
		{"jwt,pub-key=" + pub + ",sign-method=RS256", ""}, // verify only
		{"jwt,priv-key=" + dir + "/secret-missing,sign-method=HS256", "priv-key"},
		{"", "unknown token type"},
		{"plain", "unknown token type"},
		{"simple,ttl", "not key=value"},
		{"jwt,sign-method=RS256,sign-method=RS512", "given twice"},
		{"jwt,priv-key=" + priv + ",sign-method=XX999", "signature method"},
		{"jwt,priv-key=" + priv, "signature method"},
		{"jwt,priv-key=" + priv + ",sign-method=RS256,ttl=soon", "ttl"},
		{"jwt,sign-method=RS256", "missing key"},
		{"jwt,pub-key=" + otherPub + ",priv-key=" + priv + ",sign-method=RS256", "don't match"},
		{"jwt,priv-key=" + priv + ",sign-method=ES256", "priv-key"},
		{"jwt,priv-key=" + priv + ",sign-method=RS256,colour=blue", "unknown jwt option"},
	} {
		_, err := ParseTokenSpec(tc.spec, os.ReadFile)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want an error with %q", tc.spec, err, tc.want)
		case tc.want != "" && !errors.Is(err, errInvalidAuthOpts):
			t.Errorf("%q: %v is not etcd's invalid auth options", tc.spec, err)
		}
	}
}

func TestJWTRoundTrip(t *testing.T) {
	dir := t.TempDir()
	pub, priv := rsaKeys(t, dir, "a")
	spec, err := ParseTokenSpec("jwt,pub-key="+pub+",priv-key="+priv+",sign-method=RS256,ttl=1m", os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	tok := NewTokens(spec, 0, func() time.Time { return now })
	token, err := tok.Issue("alice", 7, "")
	if err != nil {
		t.Fatal(err)
	}
	ai, ok := tok.Resolve(context.Background(), token, func() uint64 { return 9 }, func() uint64 { return 0 })
	if !ok || ai != (kvsm.AuthInfo{Username: "alice", Revision: 7}) {
		t.Fatalf("resolved %v %v; want alice at the revision it was signed at", ai, ok)
	}
	// Expired, tampered, and signed by another key: invalid.
	if _, ok := ParseJWT(spec, token, now.Add(2*time.Minute)); ok {
		t.Error("an expired token resolved")
	}
	if _, ok := ParseJWT(spec, token[:len(token)-2]+"xx", now); ok {
		t.Error("a tampered token resolved")
	}
	_, otherPriv := rsaKeys(t, dir, "b")
	other, _ := ParseTokenSpec("jwt,priv-key="+otherPriv+",sign-method=RS256", os.ReadFile)
	forged, _ := signJWT(other, "root", 7, now)
	if _, ok := ParseJWT(spec, forged, now); ok {
		t.Error("a token signed with another key resolved")
	}
	// Verify-only members check but never sign.
	vo, _ := ParseTokenSpec("jwt,pub-key="+pub+",sign-method=RS256", os.ReadFile)
	if _, ok := ParseJWT(vo, token, now); !ok {
		t.Error("a verify-only member refused a good token")
	}
	if _, err := NewTokens(vo, 0, nil).Issue("alice", 1, ""); !errors.Is(err, errVerifyOnly) {
		t.Errorf("verify-only issue: %v", err)
	}
}

func TestSimpleTokens(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tok := NewTokens(TokenSpec{Type: TokenSimple}, time.Minute, func() time.Time { return now })
	prefix, err := tok.LoginPrefix()
	if err != nil {
		t.Fatal(err)
	}
	token := prefix + ".42"
	if _, _, ok := ParseSimpleToken(token); !ok {
		t.Fatalf("%q does not parse", token)
	}
	for _, bad := range []string{"", "abc.1", prefix, prefix + ".", prefix + ".0", prefix + ".01", prefix + ".-1", "0123456789abcdef.1", prefix + ".1.2"} {
		if _, _, ok := ParseSimpleToken(bad); ok {
			t.Errorf("%q parsed as a simple token", bad)
		}
	}
	applied := uint64(42)
	rev := func() uint64 { return 5 }
	idx := func() uint64 { return applied }
	if _, ok := tok.Resolve(context.Background(), token, rev, idx); ok {
		t.Fatal("an unassigned token resolved")
	}
	tok.Follow(node.AuthEvent{Kind: node.AuthTokenAssigned, User: "bob", Token: token})
	if ai, ok := tok.Resolve(context.Background(), token, rev, idx); !ok || ai != (kvsm.AuthInfo{Username: "bob", Revision: 5}) {
		t.Fatalf("resolved %v %v", ai, ok)
	}
	// Used, it lives a TTL from its last use.
	now = now.Add(50 * time.Second)
	tok.Resolve(context.Background(), token, rev, idx)
	now = now.Add(50 * time.Second)
	if _, ok := tok.Resolve(context.Background(), token, rev, idx); !ok {
		t.Fatal("a token used within its TTL expired")
	}
	now = now.Add(61 * time.Second)
	tok.Expire()
	if _, ok := tok.Resolve(context.Background(), token, rev, idx); ok {
		t.Fatal("an expired token resolved")
	}
	tok.Follow(node.AuthEvent{Kind: node.AuthTokenAssigned, User: "bob", Token: token})
	tok.Follow(node.AuthEvent{Kind: node.AuthUserInvalidated, User: "bob"})
	if _, ok := tok.Resolve(context.Background(), token, rev, idx); ok {
		t.Fatal("a deleted user's token resolved")
	}
	// A token from a login this member has not applied yet is waited for.
	applied = 10
	later := prefix + ".43"
	go func() {
		time.Sleep(10 * time.Millisecond)
		tok.Follow(node.AuthEvent{Kind: node.AuthTokenAssigned, User: "carol", Token: later})
	}()
	if ai, ok := tok.Resolve(context.Background(), later, rev, idx); !ok || ai.Username != "carol" {
		t.Fatalf("a token assigned while waiting: %v %v", ai, ok)
	}
}

func TestPassword(t *testing.T) {
	h, err := HashPassword("s3cret", BcryptCostMin)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := decodeForTest(h)
	if !PasswordMatches(raw, "s3cret") || PasswordMatches(raw, "wrong") {
		t.Fatal("password check")
	}
}

// The CN of a verified client certificate names the user of a gRPC call
// that sends no token; a gateway call, an unverified or absent
// certificate name nobody.
func TestCommonName(t *testing.T) {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "alice"}, SerialNumber: big.NewInt(1)}
	state := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
	ctx = metadata.NewIncomingContext(ctx, metadata.MD{})
	if got := CommonNameFromContext(ctx); got != "alice" {
		t.Errorf("CN %q, want alice", got)
	}
	gw := metadata.NewIncomingContext(ctx, metadata.Pairs("grpcgateway-accept", "*/*"))
	if got := CommonNameFromContext(gw); got != "" {
		t.Errorf("gateway call named %q", got)
	}
	unverified := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}}})
	if got := CommonNameFromContext(unverified); got != "" {
		t.Errorf("unverified certificate named %q", got)
	}
	if got := CommonNameFromContext(context.Background()); got != "" {
		t.Errorf("plain call named %q", got)
	}
	withToken := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer abc"))
	if tok, ok := TokenFromContext(withToken); !ok || tok != "abc" {
		t.Errorf("gateway token %q %v", tok, ok)
	}
}
