package main

// TLS end to end: members with client and peer mutual TLS driven by
// etcdctl 3.4 and client/v3, auto TLS, the clients and peers that are
// refused, certificate rotation while the cluster serves, and bad
// certificate files. Certificates are made by the test (testpki).

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/cmd/internal/flood"
	"github.com/noded/noded/cmd/internal/memberproc"
	"github.com/noded/noded/server/tlsconfig/testpki"
)

// e2ePKI is what a TLS cluster's members and clients read from files.
type e2ePKI struct {
	dir      string
	ca       *testpki.CA
	caFile   string
	members  []testpki.Files // one certificate per member, CN "member"
	memberCt []*testpki.Cert
	root     testpki.Files // client certificate, CN "root"
	rootCert *testpki.Cert
	revoked  testpki.Files // client certificate revoked by crlFile
	stranger testpki.Files // client certificate of another CA
	intruder testpki.Files // member certificate with CN "intruder"
	crlFile  string
}

func newE2EPKI(t *testing.T, members int) *e2ePKI {
	t.Helper()
	p := &e2ePKI{dir: t.TempDir(), ca: testpki.NewCA(t, "e2e CA")}
	p.caFile = p.ca.WriteFile(t, p.dir, "ca.crt")
	for i := range members {
		cert := p.issueMember(t, "member")
		p.memberCt = append(p.memberCt, cert)
		p.members = append(p.members, cert.WriteFiles(t, p.dir, fmt.Sprintf("m%d", i)))
	}
	p.rootCert = p.ca.Issue(t, testpki.Leaf{CommonName: "root", Client: true})
	p.root = p.rootCert.WriteFiles(t, p.dir, "root")
	revoked := p.ca.Issue(t, testpki.Leaf{CommonName: "root", Client: true})
	p.revoked = revoked.WriteFiles(t, p.dir, "revoked")
	p.crlFile = p.ca.WriteCRL(t, p.dir, "crl.der", revoked)
	p.stranger = testpki.NewCA(t, "another CA").Issue(t, testpki.Leaf{CommonName: "root", Client: true}).WriteFiles(t, p.dir, "stranger")
	p.intruder = p.issueMember(t, "intruder").WriteFiles(t, p.dir, "intruder")
	return p
}

func (p *e2ePKI) issueMember(t *testing.T, cn string) *testpki.Cert {
	return p.ca.Issue(t, testpki.Leaf{CommonName: cn, IPs: []string{"127.0.0.1"}, DNSNames: []string{"localhost"}, Server: true, Client: true})
}

// memberFlags are member i's flags for client and peer mutual TLS, the CRL
// and the allowed peer CN; cert overrides its certificate.
func (p *e2ePKI) memberFlags(cert testpki.Files) []string {
	return []string{
		"--cert-file=" + cert.Cert, "--key-file=" + cert.Key, "--trusted-ca-file=" + p.caFile, "--client-cert-auth",
		"--client-crl-file=" + p.crlFile,
		"--peer-cert-file=" + cert.Cert, "--peer-key-file=" + cert.Key, "--peer-trusted-ca-file=" + p.caFile, "--peer-client-cert-auth",
		"--peer-cert-allowed-cn=member",
	}
}

// clientTLS is what a client holding files dials with (nil: no
// certificate).
func (p *e2ePKI) clientTLS(t *testing.T, files *testpki.Files) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.ca.Pool()}
	if files != nil {
		pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// ctlTLS are etcdctl's flags for a client holding files.
func (p *e2ePKI) ctlTLS(files *testpki.Files) []string {
	args := []string{"--cacert=" + p.caFile}
	if files != nil {
		args = append(args, "--cert="+files.Cert, "--key="+files.Key)
	}
	return args
}

func newTLSCluster(t *testing.T, p *e2ePKI, size int) *e2eCluster {
	t.Helper()
	return newClusterWith(t, clusterOptions{
		size: size, clientScheme: "https", peerScheme: "https",
		flags:     func(i int) []string { return p.memberFlags(p.members[i]) },
		clientTLS: p.clientTLS(t, &p.root),
	})
}

// A 3-member cluster with client and peer mutual TLS, driven by etcdctl 3.4
// and client/v3; clients without a certificate, with one of another CA or
// with a revoked one are refused.
func TestTLSMutualCluster(t *testing.T) {
	p := newE2EPKI(t, 3)
	c := newTLSCluster(t, p, 3)
	eps := c.endpoints()
	ctl := func(files *testpki.Files, args ...string) []string { return append(p.ctlTLS(files), args...) }

	wantCtl(t, eps, "OK\n", ctl(&p.root, "put", "greeting", "hello")...)
	wantCtl(t, eps, "greeting\nhello\n", ctl(&p.root, "get", "greeting")...)
	res := etcdctl(t, eps[:1], "", ctl(&p.root, "member", "list")...)
	if res.exitCode != 0 || strings.Count(res.stdout, ", started, m") != 3 || strings.Count(res.stdout, "https://127.0.0.1:") != 6 {
		t.Errorf("member list over TLS: exit %d %q %q", res.exitCode, res.stdout, res.stderr)
	}
	res = etcdctl(t, eps, "", ctl(&p.root, "endpoint", "health")...)
	if res.exitCode != 0 || strings.Count(res.stderr+res.stdout, "is healthy") != 3 {
		t.Errorf("endpoint health over TLS: exit %d %q %q", res.exitCode, res.stdout, res.stderr)
	}

	cli := c.client(t)
	ctx := ctxTimeout(t)
	watch := cli.Watch(ctx, "greeting")
	if _, err := cli.Put(ctx, "greeting", "hello again"); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-watch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "hello again" {
			t.Errorf("watch over TLS: %+v", wr)
		}
	case <-ctx.Done():
		t.Fatal("no watch event over TLS")
	}

	// Refused clients: etcdctl gives up when its deadline passes, as with
	// etcd; the member logs why.
	quick := []string{"--dial-timeout=2s", "--command-timeout=4s", "get", "greeting"}
	for _, tc := range []struct {
		name  string
		files *testpki.Files
		log   string
	}{
		{"no certificate", nil, "client didn't provide a certificate"},
		{"another CA", &p.stranger, "certificate signed by unknown authority"},
		{"revoked", &p.revoked, "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := etcdctl(t, eps[:1], "", append(p.ctlTLS(tc.files), quick...)...)
			t.Logf("etcdctl with %s: exit %d\nstdout %q\nstderr %s", tc.name, res.exitCode, res.stdout, res.stderr)
			if res.exitCode != 1 || res.stdout != "" || res.lastStderrLine() != "Error: context deadline exceeded" ||
				!strings.Contains(res.stderr, `"msg":"retrying of unary invoker failed"`) || !strings.Contains(res.stderr, "all SubConns are in TransientFailure") {
				t.Errorf("etcdctl with %s: exit %d stdout %q stderr %q; want exit 1, etcdctl's retry warning and Error: context deadline exceeded", tc.name, res.exitCode, res.stdout, res.stderr)
			}
			waitLog(t, c.members[0], "rejected connection", tc.log)
			cli, err := clientv3.New(clientv3.Config{Endpoints: eps[:1], DialTimeout: 2 * time.Second, TLS: p.clientTLS(t, tc.files), Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Get(shortCtx(t), "greeting"); err == nil {
				t.Errorf("client/v3 with %s was served", tc.name)
			}
		})
	}
}

// waitLog waits until a line of m's log holds every one of parts.
func waitLog(t *testing.T, m *e2eMember, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(m.log.tail(logKeepBytes), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("member %s never logged a line with %q", m.name, parts)
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runBinary runs the member binary with args to its exit (within
// startTimeout) and returns its combined output and exit code.
func runBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2eBinary, args...)
	cmd.Env = memberproc.Env()
	cmd.SysProcAttr = memberproc.SysProcAttr()
	out, err := cmd.CombinedOutput()
	if exitErr, ok := err.(*exec.ExitError); ok {
		return string(out), exitErr.ExitCode()
	}
	if err != nil {
		t.Fatalf("run %s: %v", e2eBinary, err)
	}
	return string(out), 0
}

// A member whose peer certificate's CN is not allowed is refused by its
// peers with etcd's error; the others serve without it.
func TestTLSPeerCNNotAllowed(t *testing.T) {
	p := newE2EPKI(t, 3)
	c := newClusterWith(t, clusterOptions{
		size: 3, clientScheme: "https", peerScheme: "https",
		flags: func(i int) []string {
			if i == 2 {
				return p.memberFlags(p.intruder)
			}
			return p.memberFlags(p.members[i])
		},
		clientTLS: p.clientTLS(t, &p.root),
		noWait:    map[int]bool{2: true},
	})
	// etcd 3.4 says "rejected connection from ...", 3.7 and noded "rejected
	// connection on peer endpoint".
	waitLog(t, c.members[0], "rejected connection", "client certificate authentication failed")
	waitLog(t, c.members[2], "bad certificate")
	wantCtl(t, c.endpoints()[:2], "OK\n", append(p.ctlTLS(&p.root), "put", "k", "v")...)
}

// --auto-tls and --peer-auto-tls: members generate self-signed
// certificates under their data directories and serve etcdctl
// --insecure-skip-tls-verify and client/v3 with InsecureSkipVerify.
func TestTLSAuto(t *testing.T) {
	c := newClusterWith(t, clusterOptions{
		size: 3, clientScheme: "https", peerScheme: "https",
		flags:     func(int) []string { return []string{"--auto-tls", "--peer-auto-tls"} },
		clientTLS: &tls.Config{InsecureSkipVerify: true},
	})
	for _, m := range c.members {
		for _, side := range []string{"client", "peer"} {
			for _, f := range []string{"cert.pem", "key.pem"} {
				if _, err := os.Stat(filepath.Join(m.dataDir, "fixtures", side, f)); err != nil {
					t.Errorf("member %s: %v", m.name, err)
				}
			}
		}
	}
	wantCtl(t, c.endpoints(), "OK\n", "--insecure-skip-tls-verify", "--insecure-transport=false", "put", "auto", "tls")
	cli := c.client(t)
	if resp, err := cli.Get(ctxTimeout(t), "auto"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get over auto TLS: %v %v", resp, err)
	}
	// Restarted, a member keeps its certificate and rejoins.
	before, _ := os.ReadFile(filepath.Join(c.members[1].dataDir, "fixtures", "peer", "cert.pem"))
	c.members[1].kill(t)
	c.members[1].restart(t)
	after, _ := os.ReadFile(filepath.Join(c.members[1].dataDir, "fixtures", "peer", "cert.pem"))
	if len(before) == 0 || string(before) != string(after) {
		t.Error("a restarted member generated a new peer certificate")
	}
}

// servedSerial dials addr over TLS and returns the serial of the
// certificate it serves.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// Rotating a member's certificate files while the cluster serves: the new
// certificate is served from the next connection on (client and peer
// ports), writes go on throughout, and peers reconnect with it.
func TestTLSRotation(t *testing.T) {
	p := newE2EPKI(t, 3)
	c := newTLSCluster(t, p, 3)
	cli := c.client(t)
	// A client writes and reads back through the rotation; a put in flight
	// while a member restarts may fail and is not counted.
	rw := flood.StartReadWriter(cli, "rot-", requestTimeout)
	m0 := c.members[0]
	host := strings.TrimPrefix(m0.clientURL, "https://")
	peerHost := strings.TrimPrefix(m0.peerURL, "https://")
	dialCfg := p.clientTLS(t, &p.root)
	if got, want := servedSerial(t, host, dialCfg), p.memberCt[0].Leaf.SerialNumber.String(); got != want {
		t.Fatalf("served serial %s before the rotation, want %s", got, want)
	}
	next := p.issueMember(t, "member")
	next.WriteFiles(t, p.dir, "m0")
	if got, want := servedSerial(t, host, dialCfg), next.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("client port serves serial %s after the rotation, want %s", got, want)
	}
	if got, want := servedSerial(t, peerHost, dialCfg), next.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("peer port serves serial %s after the rotation, want %s", got, want)
	}
	// A follower other than m0 restarts: m0 dials it and it dials m0 with
	// the rotated certificate on both sides.
	lead := c.leader(t, cli)
	restart := 1
	if lead == 1 {
		restart = 2
	}
	c.members[restart].kill(t)
	c.members[restart].restart(t)
	waitProgress(t, rw, "writes and reads after the restart", 10)
	finishReadWriter(t, rw, cli, "rot-")
	wantCtl(t, c.endpoints(), "OK\n", append(p.ctlTLS(&p.root), "put", "after", "rotation")...)
}

// Bad certificate files stop noded before it starts anything: a clear
// error naming the flag and the file, exit code 1, no data directory.
func TestTLSBadFiles(t *testing.T) {
	requireE2E(t)
	if !strings.Contains(e2eBinary, "noded") {
		t.Skip("etcd 3.4 creates its data directory and serves before it reads the certificate files; this is noded's behaviour")
	}
	p := newE2EPKI(t, 1)
	expired := p.ca.Issue(t, testpki.Leaf{CommonName: "old", IPs: []string{"127.0.0.1"}, Server: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).WriteFiles(t, p.dir, "expired")
	missing := filepath.Join(p.dir, "missing.crt")
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"missing", []string{"--cert-file=" + missing, "--key-file=" + p.members[0].Key}, "--cert-file " + missing + ": no such file or directory"},
		{"mismatched", []string{"--cert-file=" + p.members[0].Cert, "--key-file=" + p.root.Key}, "--key-file " + p.root.Key + ": tls: private key does not match public key"},
		{"expired peer", []string{"--peer-cert-file=" + expired.Cert, "--peer-key-file=" + expired.Key}, "--peer-cert-file " + expired.Cert + ": the certificate"},
		{"CA as key", []string{"--peer-cert-file=" + p.members[0].Cert, "--peer-key-file=" + p.caFile}, "--peer-key-file " + p.caFile + ": no PEM PRIVATE KEY block"},
		{"bad cipher suite", []string{"--cipher-suites=TLS_NOT_A_SUITE"}, `--cipher-suites: unexpected TLS cipher suite`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			ports := freePorts(t, 2)
			args := append([]string{"--data-dir=" + dataDir,
				fmt.Sprintf("--listen-client-urls=https://127.0.0.1:%d", ports[0]), fmt.Sprintf("--advertise-client-urls=https://127.0.0.1:%d", ports[0]),
				fmt.Sprintf("--listen-peer-urls=https://127.0.0.1:%d", ports[1]), fmt.Sprintf("--initial-advertise-peer-urls=https://127.0.0.1:%d", ports[1]),
				fmt.Sprintf("--initial-cluster=default=https://127.0.0.1:%d", ports[1]),
				"--cert-file=" + p.members[0].Cert, "--key-file=" + p.members[0].Key,
				"--peer-cert-file=" + p.members[0].Cert, "--peer-key-file=" + p.members[0].Key}, tc.flags...)
			out, code := runBinary(t, args...)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit 1 and %q", code, out, tc.want)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data directory was created (%v): a partial start", err)
			}
		})
	}
}

// With --client-cert-auth and auth enabled, the client certificate's CN is
// the user of a request that sends no password: etcdctl with root's
// certificate manages the cluster without --user; a certificate whose CN
// is no user is refused with etcd's error.
func TestTLSClientCertIsTheUser(t *testing.T) {
	p := newE2EPKI(t, 1)
	c := newTLSCluster(t, p, 1)
	eps := c.endpoints()
	ctl := func(files *testpki.Files, args ...string) []string { return append(p.ctlTLS(files), args...) }
	for _, args := range [][]string{
		{"user", "add", "root", "--new-user-password=rootpw"},
		{"role", "add", "root"},
		{"user", "grant-role", "root", "root"},
		{"auth", "enable"},
	} {
		if res := etcdctl(t, eps, "", ctl(&p.root, args...)...); res.exitCode != 0 {
			t.Fatalf("etcdctl %v: exit %d %s", args, res.exitCode, res.stderr)
		}
	}
	wantCtl(t, eps, "OK\n", ctl(&p.root, "put", "by-certificate", "root")...)
	wantCtl(t, eps, "by-certificate\nroot\n", ctl(&p.root, "get", "by-certificate")...)
	nobody := p.ca.Issue(t, testpki.Leaf{CommonName: "nobody", Client: true}).WriteFiles(t, p.dir, "nobody")
	wantCtlError(t, eps, "", 1, "Error: etcdserver: permission denied", ctl(&nobody, "put", "by-certificate", "nobody")...)
	wantCtl(t, eps, "Authentication Disabled\n", ctl(&p.root, "auth", "disable")...)
}
