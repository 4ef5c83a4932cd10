package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	stdnet "net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/test/bufconn"

	"github.com/noded/noded/server/auth"
	"github.com/noded/noded/server/connmux"
	"github.com/noded/noded/server/tlsconfig"
	"github.com/noded/noded/server/tlsconfig/testpki"
)

// testTLS is a CA with certificates for the members (server and client
// use, 127.0.0.1) and for a client, written to files.
type testTLS struct {
	ca     *testpki.CA
	caFile string
	member testpki.Files
	client *testpki.Cert
}

func newTestTLS(t *testing.T) *testTLS {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "server test CA")
	return &testTLS{
		ca:     ca,
		caFile: ca.WriteFile(t, dir, "ca.crt"),
		member: ca.Issue(t, testpki.Leaf{CommonName: "member", IPs: []string{"127.0.0.1"}, Server: true, Client: true}).WriteFiles(t, dir, "member"),
		client: ca.Issue(t, testpki.Leaf{CommonName: "alice", Client: true}),
	}
}

func (p *testTLS) settings() tlsconfig.Settings {
	return tlsconfig.Settings{CertFile: p.member.Cert, KeyFile: p.member.Key, TrustedCAFile: p.caFile, ClientCertAuth: true}
}

// clientConfig is what a client with p's client certificate dials with.
func (p *testTLS) clientConfig(t *testing.T) *tls.Config {
	pair := p.client.TLSCertificate(t)
	return &tls.Config{RootCAs: p.ca.Pool(), Certificates: []tls.Certificate{pair}}
}

// useTLS turns the members' client and peer URLs into https ones served
// with p's certificates and mutual TLS.
func useTLS(tms []*testMember, p *testTLS) {
	toHTTPS := func(us []url.URL) {
		for i := range us {
			us[i].Scheme = "https"
		}
	}
	var initial []string
	for _, tm := range tms {
		cfg := &tm.cfg
		for _, us := range [][]url.URL{cfg.ListenClientURLs, cfg.AdvertiseClientURLs, cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs} {
			toHTTPS(us)
		}
		cfg.ClientTLS, cfg.PeerTLS = p.settings(), p.settings()
		tm.clientURL = cfg.AdvertiseClientURLs[0].String()
		tm.peerURL = cfg.InitialAdvertisePeerURLs[0].String()
		initial = append(initial, tm.name+"="+tm.peerURL)
	}
	for _, tm := range tms {
		tm.cfg.InitialCluster = strings.Join(initial, ",")
	}
}

func newTLSClient(t *testing.T, cfg *tls.Config, tms ...*testMember) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, tm := range tms {
		eps = append(eps, tm.clientURL)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, TLS: cfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A cluster with client and peer mutual TLS: gRPC, the JSON gateway,
// /health and /metrics all behind the client port's TLS; a plain client
// and one without a certificate are refused; forwarding to the leader
// (lease TTL) works over TLS.
func TestMutualTLSCluster(t *testing.T) {
	p := newTestTLS(t)
	tms := newTestConfigs(t, 3)
	useTLS(tms, p)
	for _, tm := range tms {
		tm.start(t)
	}
	lead := waitLeader(t, tms)
	cli := newTLSClient(t, p.clientConfig(t), tms...)
	ctx := testContext(t)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Get(ctx, "k"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", resp, err)
	}
	// A lease TTL is answered by the leader: a follower forwards over TLS.
	var follower *testMember
	for _, tm := range tms {
		if tm.m.ID() != lead {
			follower = tm
		}
	}
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	fcli := newTLSClient(t, p.clientConfig(t), follower)
	if ttl, err := fcli.TimeToLive(ctx, lease.ID); err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease TTL through a follower: %v %v", ttl, err)
	}

	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: p.clientConfig(t), ForceAttemptHTTP2: true}}
	for _, path := range []string{"/health", "/metrics", "/version"} {
		resp, err := httpc.Get(follower.clientURL + path)
		if err != nil {
			t.Fatalf("GET %s over TLS: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	resp, err := httpc.Post(follower.clientURL+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"aw=="}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rr struct {
		Kvs []struct{ Value string }
	}
	if err := json.Unmarshal(body, &rr); err != nil || len(rr.Kvs) != 1 || rr.Kvs[0].Value != "dg==" {
		t.Errorf("gateway range over TLS: %s (%v)", body, err)
	}

	// No certificate: the handshake is refused.
	anon := p.clientConfig(t)
	anon.Certificates = nil
	if _, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: anon}}).Get(follower.clientURL + "/health"); err == nil {
		t.Error("a client without a certificate was served")
	}
	// Plain HTTP to an https port gets nothing.
	plainURL := strings.Replace(follower.clientURL, "https://", "http://", 1)
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(plainURL + "/health"); err == nil {
		t.Error("plain HTTP to an https port was served")
	}
}

// http and https client URLs side by side on one member.
func TestHTTPAndHTTPSSideBySide(t *testing.T) {
	p := newTestTLS(t)
	tms := newTestConfigs(t, 1)
	cfg := &tms[0].cfg
	extra := listenLoopback(t)
	httpsURL := urlOf(t, extra)
	httpsURL.Scheme = "https"
	cfg.ListenClientURLs = append(cfg.ListenClientURLs, httpsURL)
	cfg.ClientListeners = append(cfg.ClientListeners, extra)
	cfg.ClientTLS = tlsconfig.Settings{CertFile: p.member.Cert, KeyFile: p.member.Key}
	tms[0].start(t)
	waitLeader(t, tms)
	plain := newClient(t, tms[0])
	ctx := testContext(t)
	if _, err := plain.Put(ctx, "a", "1"); err != nil {
		t.Fatalf("plain client: %v", err)
	}
	secure, err := clientv3.New(clientv3.Config{Endpoints: []string{httpsURL.String()}, DialTimeout: 5 * time.Second, TLS: &tls.Config{RootCAs: p.ca.Pool()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Close()
	if resp, err := secure.Get(ctx, "a"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("TLS client without a certificate (none required): %v %v", resp, err)
	}
}

// Bad TLS input stops Start before it listens, naming the flag and file.
func TestStartRefusesBadTLSFiles(t *testing.T) {
	p := newTestTLS(t)
	tms := newTestConfigs(t, 1)
	useTLS(tms, p)
	cfg := tms[0].cfg
	cfg.PeerTLS.KeyFile = p.caFile // not a key
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "--peer-key-file "+p.caFile) {
		t.Fatalf("Start with a CA file as the peer key: %v", err)
	}
	cfg = tms[0].cfg
	cfg.ClientTLS = tlsconfig.Settings{}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "TLS key/cert (--cert-file, --key-file) must be provided for client url https://") {
		t.Fatalf("Start with https and no certificate: %v", err)
	}
	cfg = tms[0].cfg
	cfg.CipherSuites = []string{"TLS_RSA_WITH_RC4_128_SHA_NOT"}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "--cipher-suites") {
		t.Fatalf("Start with a bad cipher suite: %v", err)
	}
	// Nothing was started: the listeners handed in are still free to
	// accept (nobody took them over).
	if _, err := Start(tms[0].cfg); err != nil {
		t.Fatalf("a good start after the refused ones: %v", err)
	}
}

// With --client-cert-auth over real TLS, the client certificate's CN is
// the user of a call without a token (muxCredentials hand gRPC the TLS
// state the auth check reads): alice's certificate writes inside her
// prefix and is refused outside it; the JSON gateway's calls carry no
// certificate, so they are anonymous.
func TestClientCertCNIsTheUserOverTLS(t *testing.T) {
	p := newTestTLS(t)
	tms := newTestConfigs(t, 1)
	useTLS(tms, p)
	tms[0].cfg.BcryptCost = 4
	tms[0].start(t)
	waitLeader(t, tms)
	setUpAuth(t, tms[0].m)
	cli := newTLSClient(t, p.clientConfig(t), tms...)
	ctx := testContext(t)
	if _, err := cli.Put(ctx, "/a/x", "1"); err != nil {
		t.Fatalf("alice's certificate, her prefix: %v", err)
	}
	if _, err := cli.Put(ctx, "/b", "1"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("alice's certificate outside her prefix: %v, want permission denied", err)
	}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: p.clientConfig(t)}}
	resp, err := httpc.Post(tms[0].clientURL+"/v3/kv/put", "application/json", strings.NewReader(`{"key":"L2EveQ==","value":"MQ=="}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "user name is empty") {
		t.Errorf("a gateway put without a token: %s %s, want the anonymous refusal", resp.Status, body)
	}
}

// muxCredentials describe each connection to gRPC: a TLS connection's
// state, the gateway's in-memory connection, a plain one.
func TestMuxCredentials(t *testing.T) {
	p := newTestTLS(t)
	src, err := tlsconfig.New(tlsconfig.Options{Side: tlsconfig.Client, Settings: p.settings()})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	srv := grpc.NewServer(grpc.Creds(muxCredentials{}), grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		pr, _ := peer.FromContext(ctx)
		desc := pr.AuthInfo.AuthType()
		if cn := auth.CommonNameFromContext(ctx); cn != "" {
			desc += " " + cn
		}
		seen <- desc
		return handler(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	defer srv.Stop()
	l := listenLoopback(t)
	mux := connmux.New(l, connmux.Config{TLS: src.ServerConfig(clientALPN...), Routes: clientRoutes, Classify: classifyClient})
	go mux.Serve()
	defer mux.Close()
	go srv.Serve(mux.Listener(clientRouteGRPC))
	gateway := bufconn.Listen(1 << 16)
	go srv.Serve(gateway)
	plainL := listenLoopback(t)
	go srv.Serve(plainL)

	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		dial []grpc.DialOption
		want string
	}{
		{"TLS", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(p.clientConfig(t)))}, "tls alice"},
		{"plain", []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, "insecure"},
		{"gateway", []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (stdnet.Conn, error) { return gateway.DialContext(ctx) })}, "noded-gateway"},
	} {
		target := map[string]string{"TLS": l.Addr().String(), "plain": plainL.Addr().String(), "gateway": "gateway"}[tc.name]
		conn, err := grpc.NewClient("passthrough:///"+target, tc.dial...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		conn.Close()
		if got := <-seen; got != tc.want {
			t.Errorf("%s connection: handler saw %q, want %q", tc.name, got, tc.want)
		}
	}
}
