package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/noded/noded/server/tlsconfig/testpki"
)

// pki is a CA with a server and a client certificate written to files.
type pki struct {
	dir            string
	ca             *testpki.CA
	caFile         string
	server, client *testpki.Cert
	serverFiles    testpki.Files
	clientFiles    testpki.Files
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: testpki.NewCA(t, "tlsconfig test CA")}
	p.caFile = p.ca.WriteFile(t, p.dir, "ca.crt")
	p.server = p.ca.Issue(t, testpki.Leaf{CommonName: "server", IPs: []string{"127.0.0.1"}, Server: true, Client: true})
	p.client = p.ca.Issue(t, testpki.Leaf{CommonName: "client", Client: true})
	p.serverFiles = p.server.WriteFiles(t, p.dir, "server")
	p.clientFiles = p.client.WriteFiles(t, p.dir, "client")
	return p
}

func (p *pki) settings() Settings {
	return Settings{CertFile: p.serverFiles.Cert, KeyFile: p.serverFiles.Key, TrustedCAFile: p.caFile, ClientCertAuth: true}
}

// Bad input stops New with an error naming the flag and the file.
func TestNewRefusesBadInput(t *testing.T) {
	p := newPKI(t)
	other := p.ca.Issue(t, testpki.Leaf{CommonName: "other", Server: true}).WriteFiles(t, p.dir, "other")
	expired := p.ca.Issue(t, testpki.Leaf{CommonName: "old", Server: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).WriteFiles(t, p.dir, "expired")
	unreadable := filepath.Join(p.dir, "unreadable.key")
	if err := os.WriteFile(unreadable, []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(p.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(p.dir, "missing.crt")
	tests := []struct {
		name string
		side Side
		edit func(*Options)
		want []string
	}{
		{"missing cert", Client, func(o *Options) { o.Settings.CertFile = missing }, []string{"--cert-file " + missing, "no such file or directory"}},
		{"missing peer key", Peer, func(o *Options) { o.Settings.KeyFile = missing }, []string{"--peer-key-file " + missing, "no such file or directory"}},
		{"mismatched key", Client, func(o *Options) { o.Settings.KeyFile = other.Key }, []string{"--cert-file " + p.serverFiles.Cert, "--key-file " + other.Key, "private key does not match public key"}},
		{"expired", Peer, func(o *Options) { o.Settings.CertFile, o.Settings.KeyFile = expired.Cert, expired.Key }, []string{"--peer-cert-file " + expired.Cert, "expired at"}},
		{"garbage cert", Client, func(o *Options) { o.Settings.CertFile = garbage }, []string{"--cert-file " + garbage, "no PEM CERTIFICATE"}},
		{"garbage CA", Client, func(o *Options) { o.Settings.TrustedCAFile = garbage }, []string{"--trusted-ca-file " + garbage, "no PEM CERTIFICATE"}},
		{"missing CA", Peer, func(o *Options) { o.Settings.TrustedCAFile = missing }, []string{"--peer-trusted-ca-file " + missing}},
		{"garbage CRL", Client, func(o *Options) { o.Settings.CRLFile = garbage }, []string{"--client-crl-file " + garbage}},
		{"missing peer CRL", Peer, func(o *Options) { o.Settings.CRLFile = missing }, []string{"--peer-crl-file " + missing}},
		{"cert without key", Client, func(o *Options) { o.Settings.KeyFile = "" }, []string{"--cert-file and --key-file must both be given"}},
		{"bad cipher suite", Client, func(o *Options) { o.CipherSuites = []string{"TLS_NO_SUCH_SUITE"} }, []string{"--cipher-suites", `unexpected TLS cipher suite "TLS_NO_SUCH_SUITE"`}},
		{"bad min version", Client, func(o *Options) { o.MinVersion = "TLS1.1" }, []string{"--tls-min-version", `unexpected TLS version "TLS1.1"`}},
		{"bad max version", Peer, func(o *Options) { o.MaxVersion = "SSL3" }, []string{"--tls-max-version"}},
		{"min above max", Client, func(o *Options) { o.MinVersion, o.MaxVersion = "TLS1.3", "TLS1.2" }, []string{"min version (TLS1.3) is greater than max version (TLS1.2)"}},
		{"suites with TLS 1.3 only", Client, func(o *Options) {
			o.MinVersion, o.CipherSuites = "TLS1.3", []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
		}, []string{"cipher suites cannot be configured when only TLS1.3 is enabled"}},
		{"CNs and hostnames", Peer, func(o *Options) {
			o.Settings.AllowedCNs, o.Settings.AllowedHostnames = []string{"a"}, []string{"b"}
		}, []string{"--peer-cert-allowed-cn and --peer-cert-allowed-hostname are mutually exclusive"}},
	}
	if os.Getuid() != 0 {
		// root reads a file of mode 000 anyway.
		tests = append(tests, struct {
			name string
			side Side
			edit func(*Options)
			want []string
		}{"unreadable key", Client, func(o *Options) { o.Settings.KeyFile = unreadable }, []string{"--key-file " + unreadable, "permission denied"}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Side: tt.side, Settings: p.settings()}
			tt.edit(&o)
			s, err := New(o)
			if err == nil {
				t.Fatalf("New accepted it: %+v", s)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// handshake runs a TLS handshake between the source's server configuration
// and a client configuration over loopback, then the source's CheckConn on
// the server side, and returns both sides' errors.
func handshake(t *testing.T, s *Source, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	return handshakeWith(t, s.ServerConfig(), s.CheckConn, client)
}

func handshakeWith(t *testing.T, server *tls.Config, check func(*tls.Conn) error, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, server)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		if err := check(tc); err != nil {
			done <- err
			return
		}
		// One byte each way proves the connection is usable.
		buf := make([]byte, 1)
		if _, err := tc.Read(buf); err != nil {
			done <- err
			return
		}
		_, err = tc.Write(buf)
		done <- err
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), client)
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err = conn.Write([]byte{1}); err == nil {
			_, err = conn.Read(make([]byte, 1))
		}
		conn.Close()
	}
	return <-done, err
}

func clientConfig(t *testing.T, roots *x509.CertPool, cert *testpki.Cert) *tls.Config {
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		// Presented whatever CAs the server names, as etcd's clients do.
		pair := cert.TLSCertificate(t)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return cfg
}

// Mutual TLS: a client with a certificate of the trusted CA gets in;
// without one, with one of another CA, revoked by the CRL or with a CN not
// allowed, it is refused.
func TestClientCertificateChecks(t *testing.T) {
	p := newPKI(t)
	otherCA := testpki.NewCA(t, "another CA")
	stranger := otherCA.Issue(t, testpki.Leaf{CommonName: "client", Client: true})
	revoked := p.ca.Issue(t, testpki.Leaf{CommonName: "client", Client: true})
	intruder := p.ca.Issue(t, testpki.Leaf{CommonName: "intruder", Client: true})
	set := p.settings()
	set.CRLFile = p.ca.WriteCRL(t, p.dir, "crl.der", revoked)
	s, err := New(Options{Side: Client, Settings: set})
	if err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, s, clientConfig(t, p.ca.Pool(), p.client)); serverErr != nil || clientErr != nil {
		t.Fatalf("trusted client: server %v, client %v", serverErr, clientErr)
	}
	serverErr, _ := handshake(t, s, clientConfig(t, p.ca.Pool(), nil))
	if serverErr == nil || !strings.Contains(serverErr.Error(), "client didn't provide a certificate") {
		t.Errorf("no certificate: server error %v", serverErr)
	}
	serverErr, _ = handshake(t, s, clientConfig(t, p.ca.Pool(), stranger))
	if serverErr == nil || !strings.Contains(serverErr.Error(), "certificate signed by unknown authority") {
		t.Errorf("other CA: server error %v", serverErr)
	}
	serverErr, _ = handshake(t, s, clientConfig(t, p.ca.Pool(), revoked))
	if serverErr == nil || !strings.Contains(serverErr.Error(), "revoked") {
		t.Errorf("revoked: server error %v", serverErr)
	}

	set.CRLFile = ""
	set.AllowedCNs = []string{"client"}
	s, err = New(Options{Side: Peer, Settings: set})
	if err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, s, clientConfig(t, p.ca.Pool(), p.client)); serverErr != nil || clientErr != nil {
		t.Fatalf("allowed CN: server %v, client %v", serverErr, clientErr)
	}
	serverErr, _ = handshake(t, s, clientConfig(t, p.ca.Pool(), intruder))
	if !errors.Is(serverErr, ErrClientCertRejected) {
		t.Errorf("CN not allowed: server error %v, want %v", serverErr, ErrClientCertRejected)
	}

	// --client-cert-allowed-hostname: the certificate must be valid for one
	// of the hostnames.
	named := p.ca.Issue(t, testpki.Leaf{CommonName: "x", DNSNames: []string{"app.example"}, Client: true})
	set.AllowedCNs, set.AllowedHostnames = nil, []string{"db.example", "app.example"}
	if s, err = New(Options{Side: Client, Settings: set}); err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, s, clientConfig(t, p.ca.Pool(), named)); serverErr != nil || clientErr != nil {
		t.Fatalf("allowed hostname: server %v, client %v", serverErr, clientErr)
	}
	serverErr, _ = handshake(t, s, clientConfig(t, p.ca.Pool(), p.client))
	if !errors.Is(serverErr, ErrClientCertRejected) {
		t.Errorf("hostname not allowed: server error %v, want %v", serverErr, ErrClientCertRejected)
	}
}

// The peer port checks that a client certificate names the address the
// connection comes from, unless told not to.
func TestPeerSANCheck(t *testing.T) {
	p := newPKI(t)
	elsewhere := p.ca.Issue(t, testpki.Leaf{CommonName: "peer", IPs: []string{"10.1.2.3"}, Client: true})
	s, err := New(Options{Side: Peer, Settings: p.settings()})
	if err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, s, clientConfig(t, p.ca.Pool(), p.server)); serverErr != nil || clientErr != nil {
		t.Fatalf("certificate for 127.0.0.1: server %v, client %v", serverErr, clientErr)
	}
	serverErr, _ := handshake(t, s, clientConfig(t, p.ca.Pool(), elsewhere))
	if serverErr == nil || !strings.Contains(serverErr.Error(), "10.1.2.3") {
		t.Errorf("certificate for 10.1.2.3 from 127.0.0.1: server error %v", serverErr)
	}
	set := p.settings()
	set.SkipClientSANVerify = true
	if s, err = New(Options{Side: Peer, Settings: set}); err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, s, clientConfig(t, p.ca.Pool(), elsewhere)); serverErr != nil || clientErr != nil {
		t.Fatalf("SAN check skipped: server %v, client %v", serverErr, clientErr)
	}
	// The client port makes no SAN check (etcd neither).
	if s, err = New(Options{Side: Client, Settings: p.settings()}); err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, s, clientConfig(t, p.ca.Pool(), elsewhere)); serverErr != nil || clientErr != nil {
		t.Fatalf("client port: server %v, client %v", serverErr, clientErr)
	}
}

// servedSerial dials s and returns the serial of the certificate served.
func servedSerial(t *testing.T, s *Source, p *pki) string {
	t.Helper()
	var served string
	cfg := clientConfig(t, p.ca.Pool(), p.client)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		served = cs.PeerCertificates[0].SerialNumber.String()
		return nil
	}
	if serverErr, clientErr := handshake(t, s, cfg); serverErr != nil || clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", serverErr, clientErr)
	}
	return served
}

// A rotated certificate is served from the next handshake on; a rotation
// that does not load (a key that does not match yet) keeps the old one and
// says so once; the CRL is re-read too.
func TestRotation(t *testing.T) {
	p := newPKI(t)
	core, logs := observer.New(zap.InfoLevel)
	set := p.settings()
	set.CRLFile = p.ca.WriteCRL(t, p.dir, "crl.der")
	s, err := New(Options{Side: Client, Settings: set, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := servedSerial(t, s, p), p.server.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("served serial %s, want %s", got, want)
	}

	next := p.ca.Issue(t, testpki.Leaf{CommonName: "server", IPs: []string{"127.0.0.1"}, Server: true})
	// Only the certificate changed: it does not match the key on disk.
	writeNewer(t, p.serverFiles.Cert, next.CertPEM)
	for range 3 {
		if got, want := servedSerial(t, s, p), p.server.Leaf.SerialNumber.String(); got != want {
			t.Fatalf("half-rotated: served serial %s, want the old %s", got, want)
		}
	}
	if n := logs.FilterMessage("cannot reload the TLS certificate; keeping the one loaded before").Len(); n != 1 {
		t.Errorf("the failed reload was logged %d times, want once", n)
	}
	writeNewer(t, p.serverFiles.Key, next.KeyPEM)
	if got, want := servedSerial(t, s, p), next.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("rotated: served serial %s, want %s", got, want)
	}
	if logs.FilterMessage("reloaded the TLS certificate").Len() != 1 {
		t.Errorf("the reload was not logged")
	}

	// Revoke the client certificate: the next connection is refused.
	writeNewer(t, set.CRLFile, p.ca.CRL(t, p.client))
	serverErr, _ := handshake(t, s, clientConfig(t, p.ca.Pool(), p.client))
	if serverErr == nil || !strings.Contains(serverErr.Error(), "revoked") {
		t.Errorf("after the CRL changed: server error %v, want revoked", serverErr)
	}
}

// writeNewer replaces path's content with a modification time surely
// different from the old one's.
func writeNewer(t *testing.T, path string, data []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, fi.Mode()); err != nil {
		t.Fatal(err)
	}
	later := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

// Auto TLS writes a self-signed certificate for the listen hosts into its
// directory, reuses it on the next start, and dials without verifying.
func TestAutoTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fixtures", "peer")
	o := Options{Side: Peer, Settings: Settings{AutoTLS: true}, AutoTLSDir: dir, AutoTLSHosts: []string{"127.0.0.1:2380", "node1.example:2380"}, SelfSignedCertValidityYears: 2}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if !s.SelfSigned() || !s.CanServe() {
		t.Fatalf("auto TLS source: self-signed %v, can serve %v", s.SelfSigned(), s.CanServe())
	}
	cert := s.serverPair.current().Leaf
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || len(cert.DNSNames) != 1 || cert.DNSNames[0] != "node1.example" {
		t.Errorf("issued for IPs %v and names %v", cert.IPAddresses, cert.DNSNames)
	}
	if years := cert.NotAfter.Sub(cert.NotBefore).Hours() / 24 / 365; years < 1.99 || years > 2.01 {
		t.Errorf("valid for %.2f years, want 2", years)
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v", err, fi.Mode())
	}
	again, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.serverPair.current().Leaf.SerialNumber; got.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("restart generated a new certificate (serial %s, was %s)", got, cert.SerialNumber)
	}
	if serverErr, clientErr := handshake(t, s, again.ClientConfig()); serverErr != nil || clientErr != nil {
		t.Fatalf("auto TLS to auto TLS: server %v, client %v", serverErr, clientErr)
	}

	// Given certificates win over auto TLS.
	p := newPKI(t)
	o.Settings = p.settings()
	o.Settings.AutoTLS = true
	if s, err = New(o); err != nil || s.SelfSigned() {
		t.Fatalf("auto TLS with certificates given: %v, self-signed %v", err, s.SelfSigned())
	}
}

// The client configuration verifies servers against the trusted CA and
// presents the explicit client certificate when one is given.
func TestClientConfig(t *testing.T) {
	p := newPKI(t)
	server, err := New(Options{Side: Peer, Settings: p.settings()})
	if err != nil {
		t.Fatal(err)
	}
	set := p.settings()
	set.ClientCertFile, set.ClientKeyFile = p.clientFiles.Cert, p.clientFiles.Key
	set.AllowedCNs = nil
	dialer, err := New(Options{Side: Peer, Settings: set})
	if err != nil {
		t.Fatal(err)
	}
	var presented string
	sc := server.ServerConfig()
	sc.VerifyConnection = func(cs tls.ConnectionState) error {
		presented = cs.PeerCertificates[0].Subject.CommonName
		return nil
	}
	cc := dialer.ClientConfig()
	cc.ServerName = "127.0.0.1"
	if serverErr, clientErr := handshakeWith(t, sc, server.CheckConn, cc); serverErr != nil || clientErr != nil {
		t.Fatalf("server %v, client %v", serverErr, clientErr)
	}
	if presented != "client" {
		t.Errorf("the dialer presented %q, want the client certificate", presented)
	}
	// A server certificate of another CA is refused by the dialer.
	stranger := testpki.NewCA(t, "another CA").Issue(t, testpki.Leaf{CommonName: "x", IPs: []string{"127.0.0.1"}, Server: true}).WriteFiles(t, p.dir, "stranger")
	set = p.settings()
	set.CertFile, set.KeyFile = stranger.Cert, stranger.Key
	strangeServer, err := New(Options{Side: Peer, Settings: set})
	if err != nil {
		t.Fatal(err)
	}
	if _, clientErr := handshake(t, strangeServer, dialer.ClientConfig()); clientErr == nil || !strings.Contains(clientErr.Error(), "unknown authority") {
		t.Errorf("server of another CA: client error %v", clientErr)
	}
}
