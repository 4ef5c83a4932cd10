package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// setUpAuth creates root and alice (no password: she is known by her
// certificate or logs in through a token), gives alice readwrite on /a/,
// and enables auth, through the Auth service as a client would.
func setUpAuth(t *testing.T, m *Member) {
	t.Helper()
	ctx := testContext(t)
	as := &authServer{m: m}
	steps := []func() error{
		func() error {
			_, err := as.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"})
			return err
		},
		func() error { _, err := as.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "root"}); return err },
		func() error {
			_, err := as.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error {
			_, err := as.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
			return err
		},
		func() error { _, err := as.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "r"}); return err },
		func() error {
			_, err := as.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "r",
				Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("/a/"), RangeEnd: []byte("/a0")}})
			return err
		},
		func() error {
			_, err := as.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "r"})
			return err
		},
		func() error { _, err := as.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
}

// certContext is a gRPC call over a TLS connection whose client presented
// a verified certificate with this CN.
func certContext(ctx context.Context, cn string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, SerialNumber: big.NewInt(1)}
	state := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
	return metadata.NewIncomingContext(ctx, metadata.MD{})
}

// With --client-cert-auth, the CN of a verified client certificate names
// the user of a call that sends no token; without it, the CN means
// nothing.
func TestClientCertCommonNameIsTheUser(t *testing.T) {
	for _, certAuth := range []bool{true, false} {
		tms := newTestConfigs(t, 1)
		tms[0].cfg.ClientTLS.ClientCertAuth = certAuth
		tms[0].cfg.BcryptCost = 4
		tms[0].start(t)
		waitLeader(t, tms)
		m := tms[0].m
		setUpAuth(t, m)
		kv := &kvServer{m: m}
		ctx := testContext(t)

		_, err := kv.Put(certContext(ctx, "alice"), &pb.PutRequest{Key: []byte("/a/x"), Value: []byte("1")})
		if certAuth && err != nil {
			t.Fatalf("alice's certificate, her prefix: %v", err)
		}
		if !certAuth && !errors.Is(err, rpctypes.ErrGRPCUserEmpty) {
			t.Fatalf("without --client-cert-auth a certificate names nobody: got %v, want user name is empty", err)
		}
		if !certAuth {
			continue
		}
		if _, err := kv.Put(certContext(ctx, "alice"), &pb.PutRequest{Key: []byte("/b"), Value: []byte("1")}); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
			t.Fatalf("alice's certificate outside her prefix: %v", err)
		}
		if _, err := kv.Range(certContext(ctx, "mallory"), &pb.RangeRequest{Key: []byte("/a/x"), Serializable: true}); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
			t.Fatalf("an unknown CN: %v", err)
		}
		if _, err := kv.Range(certContext(ctx, "root"), &pb.RangeRequest{Key: []byte("/b")}); err != nil {
			t.Fatalf("root's certificate: %v", err)
		}
		// A token wins over the certificate.
		tokenCtx := metadata.NewIncomingContext(certContext(ctx, "root"), metadata.Pairs("token", "not-a-token"))
		if _, err := kv.Range(tokenCtx, &pb.RangeRequest{Key: []byte("/b")}); !errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken) {
			t.Fatalf("an invalid token with a certificate: %v", err)
		}
	}
}

// A JWT carries the auth revision it was signed at: after a permission
// change it is refused with etcd's AuthOldRevision, and a new login works.
func TestJWTFromBeforeAPermissionChangeIsOld(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("test-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	tms := newTestConfigs(t, 1)
	tms[0].cfg.AuthToken = "jwt,priv-key=" + secret + ",sign-method=HS256,ttl=1h"
	tms[0].cfg.BcryptCost = 4
	tms[0].start(t)
	waitLeader(t, tms)
	m := tms[0].m
	setUpAuth(t, m)
	ctx := testContext(t)
	as := &authServer{m: m}
	kv := &kvServer{m: m}
	login := func(user, pw string) context.Context {
		t.Helper()
		resp, err := as.Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: pw})
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		return metadata.NewIncomingContext(ctx, metadata.Pairs("token", resp.GetToken()))
	}
	alice := login("alice", "alicepw")
	if _, err := kv.Put(alice, &pb.PutRequest{Key: []byte("/a/x"), Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := as.RoleGrantPermission(login("root", "rootpw"), &pb.AuthRoleGrantPermissionRequest{Name: "r",
		Perm: &authpb.Permission{PermType: authpb.Permission_READ, Key: []byte("/b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(alice, &pb.PutRequest{Key: []byte("/a/x"), Value: []byte("2")}); !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("a token from before the change: %v, want AuthOldRevision", err)
	}
	if _, err := kv.Range(alice, &pb.RangeRequest{Key: []byte("/a/x")}); !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("a linearizable read with a token from before the change: %v, want AuthOldRevision", err)
	}
	if _, err := kv.Range(login("alice", "alicepw"), &pb.RangeRequest{Key: []byte("/b")}); err != nil {
		t.Fatalf("a new login reads what the change granted: %v", err)
	}
	if _, err := as.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "nope"}); !errors.Is(err, rpctypes.ErrGRPCAuthFailed) {
		t.Fatalf("a wrong password: %v", err)
	}
}
