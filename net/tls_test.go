package net

import (
	"crypto/tls"
	"crypto/x509"
	stdnet "net"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/server/tlsconfig/testpki"
)

// testPKI is a CA and one leaf certificate for 127.0.0.1 good for both
// server and client authentication, as peer certificates usually are.
type testPKI struct {
	pool *x509.CertPool
	leaf tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	ca := testpki.NewCA(t, "noded test CA")
	leaf := ca.Issue(t, testpki.Leaf{CommonName: "noded peer", IPs: []string{"127.0.0.1"}, Server: true, Client: true})
	return testPKI{pool: ca.Pool(), leaf: leaf.TLSCertificate(t)}
}

// startTLSMember serves https with mutual TLS, as the server would wrap its
// peer listener.
func startTLSMember(t *testing.T, id uint64, pki testPKI, clientCert bool) *member {
	t.Helper()
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverConfig := &tls.Config{
		Certificates: []tls.Certificate{pki.leaf},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
	}
	cfg := testConfig(id)
	cfg.TLS = &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12}
	if clientCert {
		cfg.TLS.Certificates = []tls.Certificate{pki.leaf}
	}
	return startMemberOn(t, cfg, tls.NewListener(l, serverConfig), "https")
}

// Members with https peer URLs talk over mutual TLS, snapshots included; a
// member without a client certificate is turned away at the handshake.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	a := startTLSMember(t, 1, pki, true)
	b := startTLSMember(t, 2, pki, true)
	connectAll(t, a, b)
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 1, 100), snapshotMessage(1, 2, seededBytes(3<<20, 7))})
	b.transport.Send([]*raftpb.Message{appMessage(2, 1, 1, 100)})
	waitFor(t, "message and snapshot over TLS", func() bool { return len(b.handler.received(1)) == 2 })
	waitFor(t, "message back over TLS", func() bool { return len(a.handler.received(2)) == 1 })
	waitFor(t, "snapshot reported", func() bool { return len(a.handler.snapshotReports()) == 1 })
	if got := a.handler.snapshotReports()[0]; got.failed {
		t.Fatalf("snapshot over TLS failed; log:\n%s", a.logs)
	}

	anonymous := startTLSMember(t, 3, pki, false)
	anonymous.transport.AddPeer(1, []string{a.url})
	waitFor(t, "a member without a client certificate is refused", func() bool {
		status, _ := anonymous.transport.PeerStatus(1)
		return status.LastError != ""
	})
	if status, _ := anonymous.transport.PeerStatus(1); status.Active || !strings.Contains(status.LastError, "certificate") {
		t.Errorf("status %+v, want a certificate error", status)
	}

	plain := startMember(t, testConfig(4), "127.0.0.1:0")
	plain.transport.AddPeer(1, []string{a.url})
	waitFor(t, "https without a TLS configuration is an error", func() bool {
		status, _ := plain.transport.PeerStatus(1)
		return strings.Contains(status.LastError, "no TLS configuration")
	})
}
