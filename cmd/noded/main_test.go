package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/server"
	"github.com/noded/noded/server/features"
	"github.com/noded/noded/server/tlsconfig"
)

func parseConfig(t *testing.T, args, env []string) (server.Config, error) {
	t.Helper()
	o := newOptions()
	if err := o.parse(args, env, func(string) {}); err != nil {
		return server.Config{}, err
	}
	cfg, _, err := o.toConfig()
	return cfg, err
}

// TestDefaultsAreEtcds: with no flags, one member named default on
// localhost:2379/2380 with its data in default.etcd.
func TestDefaultsAreEtcds(t *testing.T) {
	cfg, err := parseConfig(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "default" || cfg.DataDir != "default.etcd" || cfg.InitialCluster != "default=http://localhost:2380" ||
		server.URLStrings(cfg.ListenClientURLs)[0] != "http://localhost:2379" || cfg.HeartbeatMs != 100 || cfg.ElectionMs != 1000 ||
		cfg.InitialClusterToken != "etcd-cluster" || cfg.InitialClusterState != "new" || cfg.MaxRequestBytes != 1572864 || cfg.MaxTxnOps != 128 {
		t.Fatalf("defaults: %+v", cfg)
	}
	named, err := parseConfig(t, []string{"--name", "infra1"}, nil)
	if err != nil || named.DataDir != "infra1.etcd" || named.InitialCluster != "infra1=http://localhost:2380" {
		t.Fatalf("--name infra1: data dir %q initial cluster %q (%v)", named.DataDir, named.InitialCluster, err)
	}
}

// TestEnvironment: every flag from its ETCD_* variable; a flag set both
// ways is etcd's fatal conflict.
func TestEnvironment(t *testing.T) {
	cfg, err := parseConfig(t, nil, []string{"ETCD_NAME=envname", "ETCD_HEARTBEAT_INTERVAL=50", "ETCD_ELECTION_TIMEOUT=500",
		"ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:12379", "ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:12379", "ETCD_AUTO_COMPACTION_MODE=revision",
		"ETCD_AUTO_COMPACTION_RETENTION=1000", "NODED_MAX_TXN_OPS=64"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "envname" || cfg.HeartbeatMs != 50 || cfg.ElectionMs != 500 || cfg.AutoCompactionMode != "revision" || cfg.MaxTxnOps != 64 ||
		server.URLStrings(cfg.ListenClientURLs)[0] != "http://127.0.0.1:12379" {
		t.Fatalf("config from the environment: %+v", cfg)
	}
	_, err = parseConfig(t, []string{"--name", "flag"}, []string{"ETCD_NAME=env"})
	if err == nil || err.Error() != `conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)` {
		t.Fatalf("flag and environment both set: %v", err)
	}
	var warned []string
	o := newOptions()
	if err := o.parse(nil, []string{"ETCD_NO_SUCH_FLAG=1"}, func(w string) { warned = append(warned, w) }); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || warned[0] != "unrecognized environment variable ETCD_NO_SUCH_FLAG=1" {
		t.Fatalf("unknown ETCD_ variable: warnings %q", warned)
	}
}

// TestValidation: etcd's errors for bad combinations, with etcd's texts
// and exit codes.
func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		text string
		code int
	}{
		{[]string{"--listen-client-urls", "http://127.0.0.1:1"}, "--advertise-client-urls is required when --listen-client-urls is set explicitly", 1},
		{[]string{"--heartbeat-interval", "300"}, "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]", 1},
		{[]string{"--initial-cluster-state", "bogus"}, `unexpected clusterState "bogus"`, 1},
		{[]string{"--auto-compaction-mode", "weekly"}, `unknown auto-compaction-mode "weekly"`, 1},
		{[]string{"--listen-peer-urls", "http://example.com:2380"}, "expected IP in URL for binding (http://example.com:2380)", 1},
		{[]string{"--cert-file", "x.pem"}, "--cert-file and --key-file must both be given", 1},
		{[]string{"--cert-file", "/nonexistent/x.pem", "--key-file", "/nonexistent/x.key"}, "--cert-file /nonexistent/x.pem: no such file or directory", 1},
		{[]string{"--peer-auto-tls", "--peer-cert-allowed-cn", "a", "--peer-cert-allowed-hostname", "b"}, "--peer-cert-allowed-cn and --peer-cert-allowed-hostname are mutually exclusive", 1},
		{[]string{"--listen-client-urls", "https://127.0.0.1:1", "--advertise-client-urls", "https://127.0.0.1:1"}, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:1 with HTTPS scheme", 1},
		{[]string{"--listen-metrics-urls", "https://127.0.0.1:1"}, "client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url", 1},
		{[]string{"--cipher-suites", "TLS_NO_SUCH_SUITE"}, `--cipher-suites: unexpected TLS cipher suite "TLS_NO_SUCH_SUITE"`, 1},
		{[]string{"--tls-min-version", "TLS1.0"}, `--tls-min-version: unexpected TLS version "TLS1.0" (must be one of: TLS1.2, TLS1.3)`, 1},
		{[]string{"--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"}, "min version (TLS1.3) is greater than max version (TLS1.2)", 1},
		{[]string{"--self-signed-cert-validity", "0"}, "--self-signed-cert-validity must be at least 1", 1},
		{[]string{"--feature-gates", "Foo=true"}, "unrecognized feature gate: Foo", 2},
		{[]string{"--feature-gates", "InitialCorruptCheck"}, "missing bool value for InitialCorruptCheck", 2},
		{[]string{"--bogus"}, "unknown flag: --bogus", 2},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, nil, &stdout, &stderr, nil)
		if code != tc.code || !strings.Contains(logText(stderr.String()), tc.text) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), tc.code, tc.text)
		}
	}
	// A member not in its own initial cluster fails at start.
	dir := t.TempDir()
	var stderr bytes.Buffer
	code := run([]string{"--name", "a", "--data-dir", dir, "--initial-cluster", "b=http://127.0.0.1:2380"}, nil, &bytes.Buffer{}, &stderr, nil)
	if code != 1 || !strings.Contains(logText(stderr.String()), `couldn't find local name "a" in the initial cluster configuration`) {
		t.Fatalf("member missing from its initial cluster: exit %d %q", code, stderr.String())
	}
}

// logText renders JSON log lines as their messages and errors, so that
// tests match texts with quotes in them.
func logText(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil {
			b.WriteString(line + "\n")
			continue
		}
		fmt.Fprintf(&b, "%v %v\n", entry["msg"], entry["error"])
	}
	return b.String()
}

func TestVersionAndHelp(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--version"}, nil, &out, &bytes.Buffer{}, nil); code != 0 || !strings.HasPrefix(out.String(), "etcd Version: "+server.Version+"\nGit SHA: ") {
		t.Fatalf("--version: %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, nil, &out, &bytes.Buffer{}, nil); code != 0 ||
		!strings.Contains(out.String(), "  --initial-cluster 'default=http://localhost:2380'\n    Initial cluster configuration for bootstrapping.\n") ||
		!strings.Contains(out.String(), "(accepted and ignored by noded:") {
		t.Fatalf("--help: %d %q", code, out.String())
	}
}

// TestConfigFile: a YAML file keyed by flag names replaces flags and
// environment, as etcd's --config-file.
func TestConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "noded.yaml")
	yaml := `name: fromfile
data-dir: /var/lib/fromfile
heartbeat-interval: 50
election-timeout: 600
listen-client-urls: http://127.0.0.1:22379
advertise-client-urls: http://127.0.0.1:22379
initial-cluster: fromfile=http://localhost:2380
initial-cluster-state: new
snapshot-count: 5000
auto-compaction-retention: "1h"
cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
tls-max-version: TLS1.3
feature-gates: InitialCorruptCheck=true,CompactHashCheck=true
client-transport-security:
  cert-file: /etc/noded/server.crt
  key-file: /etc/noded/server.key
  client-cert-auth: true
  trusted-ca-file: /etc/noded/ca.crt
  allowed-cn: [alice]
  unknown-key: ignored
peer-transport-security:
  auto-tls: true
  client-cert-auth: false
  allowed-cn:
    - m1
    - m2
  skip-client-san-verification: true
  crl-file: /etc/noded/peer.crl
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	o := newOptions()
	if err := o.parse([]string{"--config-file", path, "--name", "ignored"}, nil, func(string) {}); err != nil {
		t.Fatal(err)
	}
	if err := o.loadConfigFile(path); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := o.toConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "fromfile" || cfg.DataDir != "/var/lib/fromfile" || cfg.HeartbeatMs != 50 || cfg.ElectionMs != 600 ||
		cfg.SnapshotCount != 5000 || cfg.AutoCompactionRetention != "1h" || server.URLStrings(cfg.AdvertiseClientURLs)[0] != "http://127.0.0.1:22379" {
		t.Fatalf("config from file: %+v", cfg)
	}
	wantClient := tlsconfig.Settings{CertFile: "/etc/noded/server.crt", KeyFile: "/etc/noded/server.key", ClientCertAuth: true, TrustedCAFile: "/etc/noded/ca.crt", AllowedCNs: []string{"alice"}}
	wantPeer := tlsconfig.Settings{AutoTLS: true, AllowedCNs: []string{"m1", "m2"}, SkipClientSANVerify: true, CRLFile: "/etc/noded/peer.crl"}
	if !reflect.DeepEqual(cfg.ClientTLS, wantClient) || !reflect.DeepEqual(cfg.PeerTLS, wantPeer) {
		t.Fatalf("TLS from file:\nclient %+v\nwant   %+v\npeer %+v\nwant %+v", cfg.ClientTLS, wantClient, cfg.PeerTLS, wantPeer)
	}
	if len(cfg.CipherSuites) != 2 || cfg.TLSMaxVersion != "TLS1.3" || !cfg.FeatureGates.Enabled(features.InitialCorruptCheck) ||
		!cfg.FeatureGates.Enabled(features.CompactHashCheck) || cfg.FeatureGates.Enabled(features.LeaseCheckpoint) ||
		!cfg.InitialCorruptCheck || !cfg.CompactHashCheck {
		t.Fatalf("TLS options and gates from file: %v %q %s", cfg.CipherSuites, cfg.TLSMaxVersion, cfg.FeatureGates)
	}
}

// TestTLSFlags: the TLS flags and the feature gates reach the member's
// configuration.
func TestTLSFlags(t *testing.T) {
	cfg, err := parseConfig(t, []string{"--cert-file", "c.crt", "--key-file", "c.key", "--trusted-ca-file", "ca.crt", "--client-cert-auth",
		"--client-crl-file", "c.crl", "--client-cert-allowed-hostname", "a.example,b.example", "--peer-cert-file", "p.crt", "--peer-key-file", "p.key",
		"--peer-client-cert-auth", "--peer-cert-allowed-cn", "m1,m2", "--experimental-peer-skip-client-san-verification", "--auto-tls",
		"--self-signed-cert-validity", "3", "--feature-gates", "InitialCorruptCheck=true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantClient := tlsconfig.Settings{CertFile: "c.crt", KeyFile: "c.key", TrustedCAFile: "ca.crt", ClientCertAuth: true, CRLFile: "c.crl",
		AllowedHostnames: []string{"a.example", "b.example"}, AutoTLS: true}
	wantPeer := tlsconfig.Settings{CertFile: "p.crt", KeyFile: "p.key", ClientCertAuth: true, AllowedCNs: []string{"m1", "m2"}, SkipClientSANVerify: true}
	if !reflect.DeepEqual(cfg.ClientTLS, wantClient) || !reflect.DeepEqual(cfg.PeerTLS, wantPeer) {
		t.Fatalf("TLS from flags:\nclient %+v\nwant   %+v\npeer %+v\nwant %+v", cfg.ClientTLS, wantClient, cfg.PeerTLS, wantPeer)
	}
	if cfg.SelfSignedCertValidity != 3 || !cfg.FeatureGates.Enabled(features.InitialCorruptCheck) || cfg.TLSMinVersion != "TLS1.2" {
		t.Fatalf("validity %d, gates %s, min version %q", cfg.SelfSignedCertValidity, cfg.FeatureGates, cfg.TLSMinVersion)
	}
	// The corruption-check gates turn the checks on.
	if !cfg.InitialCorruptCheck || cfg.CompactHashCheck {
		t.Fatalf("InitialCorruptCheck=true: initial check %v, compact hash check %v", cfg.InitialCorruptCheck, cfg.CompactHashCheck)
	}
}

// startedAddr waits for the member's "started member" log line and
// returns its client address.
func startedAddr(t *testing.T, logPath string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(string(data), "\n") {
			var entry struct {
				Msg    string   `json:"msg"`
				Listen []string `json:"listen-client-urls"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "started member" && len(entry.Listen) > 0 {
				return entry.Listen[0]
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no 'started member' line in %s", logPath)
	return ""
}

// TestRunAndStop runs the daemon in-process on port 0, writes through
// etcd's client, stops it with SIGTERM (exit 0), and runs it again on the
// same data directory: the data is there.
func TestRunAndStop(t *testing.T) {
	dir := t.TempDir()
	for round := range 2 {
		logPath := filepath.Join(dir, "log-"+string(rune('a'+round)))
		args := []string{"--name", "solo", "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0",
			"--initial-cluster", "solo=http://127.0.0.1:0", "--heartbeat-interval", "20", "--election-timeout", "200",
			"--log-outputs", logPath}
		signals := make(chan os.Signal, 1)
		exit := make(chan int, 1)
		go func() { exit <- run(args, nil, &bytes.Buffer{}, &bytes.Buffer{}, signals) }()
		addr := startedAddr(t, logPath)
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if round == 0 {
			if _, err := c.Put(ctx, "survives", "restart"); err != nil {
				t.Fatal(err)
			}
		} else {
			get, err := c.Get(ctx, "survives")
			if err != nil || len(get.Kvs) != 1 || string(get.Kvs[0].Value) != "restart" {
				t.Fatalf("after restart: %v %v", get, err)
			}
		}
		cancel()
		c.Close()
		signals <- syscall.SIGTERM
		select {
		case code := <-exit:
			if code != 0 {
				t.Fatalf("exit %d after SIGTERM, want 0", code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("noded did not stop after SIGTERM")
		}
	}
}

// TestEtcdSpellings: etcd's single-dash long flags, etcd 3.4's -debug,
// and a systemd unit that passes its EnvironmentFile's ETCD_* values
// again as flags (etcd refuses that; noded starts when they agree).
func TestEtcdSpellings(t *testing.T) {
	cfg, err := parseConfig(t, []string{"-name", "n1", "-initial-cluster=n1=http://127.0.0.1:2380", "-initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"-heartbeat-interval", "50", "-election-timeout=500"}, nil)
	if err != nil || cfg.Name != "n1" || cfg.InitialCluster != "n1=http://127.0.0.1:2380" || cfg.HeartbeatMs != 50 || cfg.ElectionMs != 500 {
		t.Fatalf("single-dash flags: %+v (%v)", cfg, err)
	}
	if _, err := parseConfig(t, []string{"-no-such-flag"}, nil); err == nil {
		t.Fatal("an unknown single-dash flag was accepted")
	}
	o := newOptions()
	if err := o.parse([]string{"-debug"}, nil, func(string) {}); err != nil || !o.boolean("debug") {
		t.Fatalf("-debug: %v", err)
	}

	var warned []string
	o = newOptions()
	err = o.parse([]string{"--name=infra1", "--heartbeat-interval=100", "--strict-reconfig-check=true"},
		[]string{"ETCD_NAME=infra1", "ETCD_HEARTBEAT_INTERVAL=100", "ETCD_STRICT_RECONFIG_CHECK=1"}, func(w string) { warned = append(warned, w) })
	if err != nil || o.str("name") != "infra1" || o.uint("heartbeat-interval") != 100 {
		t.Fatalf("flags repeating the environment: %v", err)
	}
	if len(warned) != 3 || !strings.Contains(strings.Join(warned, "\n"), "ETCD_HEARTBEAT_INTERVAL repeats flag --heartbeat-interval") {
		t.Fatalf("warnings %q: want one naming each repeated setting", warned)
	}
	_, err = parseConfig(t, []string{"--heartbeat-interval=100"}, []string{"ETCD_HEARTBEAT_INTERVAL=200"})
	if err == nil || err.Error() != `conflicting environment variable "ETCD_HEARTBEAT_INTERVAL" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)` {
		t.Fatalf("flag and environment disagreeing: %v", err)
	}
}
