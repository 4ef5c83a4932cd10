package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/noded/noded/server"
	"github.com/noded/noded/server/features"
	"github.com/noded/noded/server/tlsconfig"
)

// flagKind says how a flag's value parses.
type flagKind int

const (
	kindString flagKind = iota
	kindBool
	kindInt
	kindUint
	kindDuration
	// kindFeatureGates parses etcd's --feature-gates when it is set, so a
	// bad gate is a command-line error, as etcd's.
	kindFeatureGates
)

// flagDef is one of etcd's server flags. noded takes every flag etcd 3.5
// documents for a member; the ones it does not act on are either accepted
// and ignored (when ignoring them changes nothing a user relies on; the
// help says so) or refused when set (TLS, discovery: ignoring them would
// leave a member less safe or unable to form the cluster it was asked to).
type flagDef struct {
	name    string
	kind    flagKind
	def     string
	usage   string
	group   string
	ignored string // accepted and ignored, for this reason
	refused string // an error when set to anything but the default
}

const (
	groupMember     = "Member"
	groupClustering = "Clustering"
	groupSecurity   = "Security"
	groupAuth       = "Auth"
	groupLogging    = "Logging"
	groupProfiling  = "Profiling and Monitoring"
	groupV2         = "v2 Proxy / Experimental"
)

var flagDefs = []flagDef{
	{name: "name", def: "default", usage: "Human-readable name for this member.", group: groupMember},
	{name: "data-dir", def: "${name}.etcd", usage: "Path to the data directory.", group: groupMember},
	{name: "wal-dir", def: "", usage: "Path to the dedicated wal directory.", group: groupMember},
	{name: "snapshot-count", kind: kindUint, def: "100000", usage: "Number of committed transactions to trigger a snapshot to disk.", group: groupMember},
	{name: "heartbeat-interval", kind: kindUint, def: "100", usage: "Time (in milliseconds) of a heartbeat interval.", group: groupMember},
	{name: "election-timeout", kind: kindUint, def: "1000", usage: "Time (in milliseconds) for an election to timeout. See tuning documentation for details.", group: groupMember},
	{name: "initial-election-tick-advance", kind: kindBool, def: "true", usage: "Whether to fast-forward initial election ticks on boot for faster election.", group: groupMember},
	{name: "listen-peer-urls", def: "http://localhost:2380", usage: "List of URLs to listen on for peer traffic.", group: groupMember},
	{name: "listen-client-urls", def: "http://localhost:2379", usage: "List of URLs to listen on for client traffic.", group: groupMember},
	{name: "listen-metrics-urls", def: "", usage: "List of URLs to listen on for the metrics and health endpoints.", group: groupProfiling},
	{name: "max-snapshots", kind: kindUint, def: "5", usage: "Maximum number of snapshot files to retain (0 is unlimited).", group: groupMember},
	{name: "max-wals", kind: kindUint, def: "5", usage: "Maximum number of wal files to retain (0 is unlimited).", group: groupMember, ignored: "WAL segments are released as soon as a snapshot covers them"},
	{name: "quota-backend-bytes", kind: kindInt, def: "0", usage: "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).", group: groupMember},
	{name: "backend-bbolt-freelist-type", def: "map", usage: "BackendFreelistType specifies the type of freelist that boltdb backend uses(array and map are supported types)", group: groupMember, ignored: "noded has no bbolt backend"},
	{name: "backend-batch-interval", kind: kindDuration, def: "0s", usage: "BackendBatchInterval is the maximum time before commit the backend transaction.", group: groupMember, ignored: "noded has no bbolt backend"},
	{name: "backend-batch-limit", kind: kindInt, def: "0", usage: "BackendBatchLimit is the maximum operations before commit the backend transaction.", group: groupMember, ignored: "noded has no bbolt backend"},
	{name: "max-txn-ops", kind: kindUint, def: "128", usage: "Maximum number of operations permitted in a transaction.", group: groupMember},
	{name: "max-request-bytes", kind: kindUint, def: "1572864", usage: "Maximum client request size in bytes the server will accept.", group: groupMember},
	{name: "max-concurrent-streams", kind: kindUint, def: "4294967295", usage: "Maximum concurrent streams that each client can open at a time.", group: groupMember, ignored: "noded always allows etcd's default of 2^32-1"},
	{name: "grpc-keepalive-min-time", kind: kindDuration, def: "5s", usage: "Minimum duration interval that a client should wait before pinging server.", group: groupMember, ignored: "noded uses etcd's defaults"},
	{name: "grpc-keepalive-interval", kind: kindDuration, def: "2h0m0s", usage: "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).", group: groupMember, ignored: "noded uses etcd's defaults"},
	{name: "grpc-keepalive-timeout", kind: kindDuration, def: "20s", usage: "Additional duration of wait before closing a non-responsive connection (0 to disable).", group: groupMember, ignored: "noded uses etcd's defaults"},
	{name: "lease-based-reads", kind: kindBool, def: "false", usage: "Answer linearizable reads on the leader by its lease instead of a quorum round (noded's own flag). Faster, but correct only while no member's clock runs fast by more than the election timeout allows; off, reads are ReadIndex, as in etcd.", group: groupMember},
	{name: "max-watchers-per-stream", kind: kindUint, def: "1048576", usage: "Maximum number of watchers one watch stream may hold (noded's own flag; etcd has no bound). A create beyond it is refused.", group: groupMember},
	{name: "socket-reuse-port", kind: kindBool, def: "false", usage: "Enable to set socket option SO_REUSEPORT on listeners allowing rebinding of a port already in use.", group: groupMember, ignored: "listeners never share ports"},
	{name: "socket-reuse-address", kind: kindBool, def: "false", usage: "Enable to set socket option SO_REUSEADDR on listeners allowing binding to an address in `TIME_WAIT` state.", group: groupMember, ignored: "Go listeners already set SO_REUSEADDR"},

	{name: "initial-advertise-peer-urls", def: "http://localhost:2380", usage: "List of this member's peer URLs to advertise to the rest of the cluster.", group: groupClustering},
	{name: "initial-cluster", def: "default=http://localhost:2380", usage: "Initial cluster configuration for bootstrapping.", group: groupClustering},
	{name: "initial-cluster-state", def: "new", usage: "Initial cluster state ('new' or 'existing').", group: groupClustering},
	{name: "initial-cluster-token", def: "etcd-cluster", usage: "Initial cluster token for the etcd cluster during bootstrap.", group: groupClustering},
	{name: "advertise-client-urls", def: "http://localhost:2379", usage: "List of this member's client URLs to advertise to the public.", group: groupClustering},
	{name: "discovery", def: "", usage: "Discovery URL used to bootstrap the cluster.", group: groupClustering},
	{name: "discovery-fallback", def: "proxy", usage: "Expected behavior ('exit' or 'proxy') when discovery services fails.", group: groupClustering},
	{name: "discovery-proxy", def: "", usage: "HTTP proxy to use for traffic to discovery service.", group: groupClustering},
	{name: "discovery-srv", def: "", usage: "DNS srv domain used to bootstrap the cluster.", group: groupClustering},
	{name: "discovery-srv-name", def: "", usage: "Suffix to the dns srv name queried when bootstrapping.", group: groupClustering},
	{name: "discovery-token", def: "", usage: "V3 discovery: discovery token for the etcd cluster to be bootstrapped.", group: groupClustering},
	{name: "discovery-endpoints", def: "", usage: "V3 discovery: List of gRPC endpoints of the discovery service.", group: groupClustering},
	{name: "discovery-dial-timeout", kind: kindDuration, def: "2s", usage: "V3 discovery: dial timeout for client connections.", group: groupClustering},
	{name: "discovery-request-timeout", kind: kindDuration, def: "5s", usage: "V3 discovery: timeout for discovery requests (excluding dial timeout).", group: groupClustering},
	{name: "discovery-keepalive-time", kind: kindDuration, def: "2s", usage: "V3 discovery: keepalive time for client connections.", group: groupClustering},
	{name: "discovery-keepalive-timeout", kind: kindDuration, def: "6s", usage: "V3 discovery: keepalive timeout for client connections.", group: groupClustering},
	{name: "discovery-insecure-transport", kind: kindBool, def: "true", usage: "V3 discovery: disable transport security for client connections.", group: groupClustering},
	{name: "discovery-insecure-skip-tls-verify", kind: kindBool, def: "false", usage: "V3 discovery: skip server certificate verification (CAUTION: this option should be enabled only for testing purposes).", group: groupClustering},
	{name: "discovery-cert", def: "", usage: "V3 discovery: identify secure client using this TLS certificate file.", group: groupClustering, refused: "TLS to the discovery endpoints is not supported yet"},
	{name: "discovery-key", def: "", usage: "V3 discovery: identify secure client using this TLS key file.", group: groupClustering, refused: "TLS to the discovery endpoints is not supported yet"},
	{name: "discovery-cacert", def: "", usage: "V3 discovery: verify certificates of TLS-enabled secure servers using this CA bundle.", group: groupClustering, refused: "TLS to the discovery endpoints is not supported yet"},
	{name: "discovery-user", def: "", usage: "V3 discovery: username[:password] for authentication (prompt if password is not supplied).", group: groupClustering},
	{name: "discovery-password", def: "", usage: "V3 discovery: password for authentication (if this option is used, --user option shouldn't include password).", group: groupClustering},
	{name: "strict-reconfig-check", kind: kindBool, def: "true", usage: "Reject reconfiguration requests that would cause quorum loss.", group: groupClustering},
	{name: "pre-vote", kind: kindBool, def: "false", usage: "Enable to run an additional Raft election phase.", group: groupClustering, ignored: "noded always runs pre-vote (and check-quorum)"},
	{name: "auto-compaction-retention", def: "0", usage: "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.", group: groupClustering},
	{name: "auto-compaction-mode", def: "periodic", usage: "interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.", group: groupClustering},
	{name: "enable-v2", kind: kindBool, def: "false", usage: "Accept etcd V2 client requests.", group: groupClustering},

	{name: "cert-file", def: "", usage: "Path to the client server TLS cert file.", group: groupSecurity},
	{name: "key-file", def: "", usage: "Path to the client server TLS key file.", group: groupSecurity},
	{name: "client-cert-file", def: "", usage: "Path to an explicit peer client TLS cert file otherwise cert file will be used when client auth is required.", group: groupSecurity},
	{name: "client-key-file", def: "", usage: "Path to an explicit peer client TLS key file otherwise key file will be used when client auth is required.", group: groupSecurity},
	{name: "client-cert-auth", kind: kindBool, def: "false", usage: "Enable client cert authentication.", group: groupSecurity},
	{name: "client-crl-file", def: "", usage: "Path to the client certificate revocation list file.", group: groupSecurity},
	{name: "client-cert-allowed-hostname", def: "", usage: "Comma-separated list of SAN hostnames for client cert authentication.", group: groupSecurity},
	{name: "trusted-ca-file", def: "", usage: "Path to the client server TLS trusted CA cert file.", group: groupSecurity},
	{name: "auto-tls", kind: kindBool, def: "false", usage: "Client TLS using generated certificates", group: groupSecurity},
	{name: "peer-cert-file", def: "", usage: "Path to the peer server TLS cert file.", group: groupSecurity},
	{name: "peer-key-file", def: "", usage: "Path to the peer server TLS key file.", group: groupSecurity},
	{name: "peer-client-cert-file", def: "", usage: "Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required.", group: groupSecurity},
	{name: "peer-client-key-file", def: "", usage: "Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required.", group: groupSecurity},
	{name: "peer-client-cert-auth", kind: kindBool, def: "false", usage: "Enable peer client cert authentication.", group: groupSecurity},
	{name: "peer-trusted-ca-file", def: "", usage: "Path to the peer server TLS trusted CA file.", group: groupSecurity},
	{name: "peer-cert-allowed-cn", def: "", usage: "Comma-separated list of allowed CNs for inter-peer TLS authentication.", group: groupSecurity},
	{name: "peer-cert-allowed-hostname", def: "", usage: "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.", group: groupSecurity},
	{name: "peer-auto-tls", kind: kindBool, def: "false", usage: "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.", group: groupSecurity},
	{name: "self-signed-cert-validity", kind: kindUint, def: "1", usage: "The validity period of the client and peer certificates that are automatically generated for --auto-tls and --peer-auto-tls, in years.", group: groupSecurity},
	{name: "peer-crl-file", def: "", usage: "Path to the peer certificate revocation list file.", group: groupSecurity},
	{name: "cipher-suites", def: "", usage: "Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go).", group: groupSecurity},
	{name: "tls-min-version", def: "TLS1.2", usage: "Minimum TLS version supported. Possible values: TLS1.2, TLS1.3.", group: groupSecurity},
	{name: "tls-max-version", def: "", usage: "Maximum TLS version supported. Possible values: TLS1.2, TLS1.3 (empty will be auto-populated by Go).", group: groupSecurity},
	{name: "peer-skip-client-san-verification", kind: kindBool, def: "false", usage: "Skip verification of SAN field in client certificate for peer connections.", group: groupSecurity},
	{name: "experimental-peer-skip-client-san-verification", kind: kindBool, def: "false", usage: "Skip verification of SAN field in client certificate for peer connections (etcd 3.4's name of --peer-skip-client-san-verification).", group: groupSecurity},
	{name: "cors", def: "*", usage: "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, (empty or * means allow all).", group: groupSecurity, ignored: "no CORS headers are sent"},
	{name: "host-whitelist", def: "*", usage: "Acceptable hostnames from HTTP client requests, if server is not secure (empty means allow all).", group: groupSecurity, ignored: "every host is accepted, as with etcd's default"},

	{name: "auth-token", def: "simple", usage: "Specify auth token specific options.", group: groupAuth},
	{name: "bcrypt-cost", kind: kindUint, def: "10", usage: "Specify bcrypt algorithm cost factor for auth password hashing.", group: groupAuth},
	{name: "auth-token-ttl", kind: kindUint, def: "300", usage: "The lifetime in seconds of the auth token.", group: groupAuth},

	{name: "enable-pprof", kind: kindBool, def: "false", usage: "Enable runtime profiling data via HTTP server. Address is at client URL + \"/debug/pprof/\"", group: groupProfiling},
	{name: "metrics", def: "basic", usage: "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics.", group: groupProfiling},
	{name: "enable-grpc-gateway", kind: kindBool, def: "true", usage: "Enable GRPC gateway.", group: groupProfiling},

	{name: "logger", def: "zap", usage: "Currently only supports 'zap' for structured logging.", group: groupLogging},
	{name: "log-outputs", def: "default", usage: "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets.", group: groupLogging},
	{name: "log-level", def: "info", usage: "Configures log level. Only supports debug, info, warn, error, panic, or fatal.", group: groupLogging},
	{name: "debug", kind: kindBool, def: "false", usage: "Enable debug-level logging for etcd (etcd 3.4; --log-level=debug since).", group: groupLogging},
	{name: "log-format", def: "json", usage: "Configures log format. Only supports json, console.", group: groupLogging},
	{name: "enable-log-rotation", kind: kindBool, def: "false", usage: "Enable log rotation of a single log-outputs file target.", group: groupLogging},
	{name: "log-rotation-config-json", def: defaultLogRotationConfig, usage: "Configures log rotation if enabled with a JSON logger config. Default: MaxSize=100(MB), MaxAge=0(days,no limit), MaxBackups=0(no limit), LocalTime=false(UTC), Compress=false(gzip)", group: groupLogging},

	{name: "feature-gates", kind: kindFeatureGates, def: "", usage: "A set of key=value pairs that describe server level feature gates for alpha/experimental features. Options are:\n    " + strings.Join(features.Usage(), "\n    "), group: groupV2},
	{name: "proxy", def: "off", usage: "Proxy mode setting ('off', 'readonly' or 'on').", group: groupV2},
	{name: "proxy-failure-wait", kind: kindUint, def: "5000", usage: "Time (in milliseconds) an endpoint will be held in a failed state.", group: groupV2},
	{name: "proxy-refresh-interval", kind: kindUint, def: "30000", usage: "Time (in milliseconds) of the endpoints refresh interval.", group: groupV2},
	{name: "proxy-dial-timeout", kind: kindUint, def: "1000", usage: "Time (in milliseconds) for a dial to timeout.", group: groupV2},
	{name: "proxy-write-timeout", kind: kindUint, def: "5000", usage: "Time (in milliseconds) for a write to timeout.", group: groupV2},
	{name: "proxy-read-timeout", kind: kindUint, def: "0", usage: "Time (in milliseconds) for a read to timeout.", group: groupV2},
	{name: "force-new-cluster", kind: kindBool, def: "false", usage: "Force to create a new one member cluster.", group: groupV2, refused: "--force-new-cluster is not supported"},
	{name: "unsafe-no-fsync", kind: kindBool, def: "false", usage: "Disables fsync, unsafe, will cause data loss.", group: groupV2, ignored: "noded always fsyncs"},
	{name: "snapshot-catchup-entries", kind: kindUint, def: "5000", usage: "Number of entries for a slow follower to catch up after compacting the raft storage entries.", group: groupV2},
	{name: "experimental-snapshot-catchup-entries", kind: kindUint, def: "5000", usage: "Number of entries for a slow follower to catch up after compacting the raft storage entries.", group: groupV2},
	{name: "max-learners", kind: kindUint, def: "1", usage: "Sets the maximum number of learners that can be available in the cluster membership.", group: groupV2},
	{name: "experimental-max-learners", kind: kindUint, def: "1", usage: "Sets the maximum number of learners that can be available in the cluster membership.", group: groupV2},
	{name: "watch-progress-notify-interval", kind: kindDuration, def: "10m0s", usage: "Duration of periodic watch progress notifications.", group: groupV2},
	{name: "experimental-watch-progress-notify-interval", kind: kindDuration, def: "10m0s", usage: "Duration of periodic watch progress notifications.", group: groupV2},
	{name: "experimental-initial-corrupt-check", kind: kindBool, def: "false", usage: "Enable to check data corruption before serving any client/peer traffic.", group: groupV2},
	{name: "experimental-corrupt-check-time", kind: kindDuration, def: "0s", usage: "Duration of time between cluster corruption check passes.", group: groupV2},
	{name: "corrupt-check-time", kind: kindDuration, def: "0s", usage: "Duration of time between cluster corruption check passes.", group: groupV2},
	{name: "experimental-compact-hash-check-enabled", kind: kindBool, def: "false", usage: "Enable leader to periodically check followers compaction hashes.", group: groupV2},
	{name: "experimental-compact-hash-check-time", kind: kindDuration, def: "1m0s", usage: "Duration of time between leader checks followers compaction hashes.", group: groupV2},
	{name: "compact-hash-check-time", kind: kindDuration, def: "1m0s", usage: "Duration of time between leader checks followers compaction hashes.", group: groupV2},
	{name: "experimental-enable-lease-checkpoint", kind: kindBool, def: "false", usage: "Enable to persist lease remaining TTL to prevent indefinite auto-renewal of long lived leases.", group: groupV2, ignored: "a new leader gives every lease its full TTL"},
	{name: "experimental-compaction-batch-limit", kind: kindInt, def: "1000", usage: "Sets the maximum revisions deleted in each compaction batch.", group: groupV2, ignored: "compaction runs in memory"},
	{name: "experimental-warning-apply-duration", kind: kindDuration, def: "100ms", usage: "Time duration after which a warning is generated if request takes more time.", group: groupV2, ignored: "slow applies are not logged"},
	{name: "experimental-enable-distributed-tracing", kind: kindBool, def: "false", usage: "Enable experimental distributed tracing using OpenTelemetry Tracing.", group: groupV2, ignored: "tracing is not supported"},
}

// options holds the parsed flags.
type options struct {
	// clientAllowedCNs is the config file's client-transport-security
	// allowed-cn, which has no flag.
	clientAllowedCNs []string
	fs               *pflag.FlagSet
	values           map[string]any // flag name -> *string, *bool, *uint64, *int64, *time.Duration
	configFile       *string
	version          *bool
	help             *bool
}

func newOptions() *options {
	fs := pflag.NewFlagSet("noded", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	o := &options{fs: fs, values: map[string]any{}}
	for _, d := range flagDefs {
		switch d.kind {
		case kindString:
			o.values[d.name] = fs.String(d.name, d.def, d.usage)
		case kindBool:
			v, _ := strconv.ParseBool(d.def)
			o.values[d.name] = fs.Bool(d.name, v, d.usage)
		case kindInt:
			v, _ := strconv.ParseInt(d.def, 10, 64)
			o.values[d.name] = fs.Int64(d.name, v, d.usage)
		case kindUint:
			v, _ := strconv.ParseUint(d.def, 10, 64)
			o.values[d.name] = fs.Uint64(d.name, v, d.usage)
		case kindDuration:
			v, _ := time.ParseDuration(d.def)
			o.values[d.name] = fs.Duration(d.name, v, d.usage)
		case kindFeatureGates:
			v := &featureGatesValue{gates: features.Default()}
			fs.Var(v, d.name, d.usage)
			o.values[d.name] = v
		}
	}
	o.configFile = fs.String("config-file", "", "Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.")
	o.version = fs.Bool("version", false, "Print the version and exit.")
	o.help = fs.BoolP("help", "h", false, "Show the help information.")
	return o
}

func (o *options) str(name string) string             { return *o.values[name].(*string) }
func (o *options) boolean(name string) bool           { return *o.values[name].(*bool) }
func (o *options) uint(name string) uint64            { return *o.values[name].(*uint64) }
func (o *options) int(name string) int64              { return *o.values[name].(*int64) }
func (o *options) duration(name string) time.Duration { return *o.values[name].(*time.Duration) }
func (o *options) changed(name string) bool           { return o.fs.Changed(name) }
func (o *options) gates(name string) features.Gates   { return o.values[name].(*featureGatesValue).gates }

// list is a comma-separated flag's items, blanks dropped.
func (o *options) list(name string) []string { return splitList(o.str(name)) }

// featureGatesValue is --feature-gates as a pflag value.
type featureGatesValue struct {
	text  string
	gates features.Gates
}

func (v *featureGatesValue) String() string { return v.text }
func (v *featureGatesValue) Type() string   { return "mapStringBool" }
func (v *featureGatesValue) Set(s string) error {
	gates, err := features.Parse(s)
	if err != nil {
		return err
	}
	v.text, v.gates = s, gates
	return nil
}

// envName is etcd's environment variable for a flag: --foo-bar is
// ETCD_FOO_BAR (noded also reads NODED_FOO_BAR).
func envName(prefix, flag string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// parse reads the command line, then the environment for every flag not
// given on it, as etcd does: a flag given both ways is an error, and an
// unknown ETCD_* variable is a warning.
func (o *options) parse(args []string, environ []string, warn func(string)) error {
	if err := o.fs.Parse(o.doubleDashed(args)); err != nil {
		return err
	}
	if len(o.fs.Args()) > 0 {
		return fmt.Errorf("'%s' is not a valid flag", o.fs.Arg(0))
	}
	known := map[string]bool{}
	o.fs.VisitAll(func(f *pflag.Flag) {
		known[envName("ETCD_", f.Name)] = true
		known[envName("NODED_", f.Name)] = true
	})
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
		if strings.HasPrefix(k, "ETCD_") && !known[k] && !ignoredEnv[k] {
			warn(fmt.Sprintf("unrecognized environment variable %s=%s", k, v))
		}
	}
	var err error
	o.fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Name == "version" || f.Name == "help" {
			return
		}
		for _, prefix := range []string{"ETCD_", "NODED_"} {
			key := envName(prefix, f.Name)
			v, ok := env[key]
			if !ok || v == "" {
				continue
			}
			if o.fs.Changed(f.Name) {
				// A systemd unit that passes its EnvironmentFile's values
				// again as flags sets both; etcd refuses that, noded takes
				// it when the two agree.
				if agreed, aerr := o.agrees(f, v); aerr != nil || !agreed {
					err = fmt.Errorf("conflicting environment variable %q is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", key)
					return
				}
				warn(fmt.Sprintf("environment variable %s repeats flag --%s with the same value %q; etcd would refuse to start (either unset the environment variable or drop the flag)", key, f.Name, v))
				continue
			}
			if serr := o.fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("invalid value %q for %s: %v", v, key, serr)
				return
			}
		}
	})
	return err
}

// agrees reports whether an environment value means what the flag
// already holds: the value is parsed as the flag's type, and the flag is
// left as it was.
func (o *options) agrees(f *pflag.Flag, envValue string) (bool, error) {
	before := f.Value.String()
	if before == envValue {
		return true, nil
	}
	if err := f.Value.Set(envValue); err != nil {
		return false, err
	}
	after := f.Value.String()
	if err := f.Value.Set(before); err != nil {
		return false, err
	}
	return after == before, nil
}

// doubleDashed rewrites etcd's single-dash long flags (-name n1,
// -initial-cluster=...; etcd's Go flag package takes both spellings) as
// pflag's --name. Only names of noded's flags are rewritten, so a value
// that starts with a dash is left alone, and everything after "--" too.
func (o *options) doubleDashed(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if f := o.fs.Lookup(name); f != nil && len(name) > 1 {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

// ignoredEnv are ETCD_* variables etcd's own tooling sets that are not
// flags (etcdctl's, the unit file's).
var ignoredEnv = map[string]bool{"ETCD_UNSUPPORTED_ARCH": true, "ETCD_DATA_DIR_OLD": true}

// loadConfigFile applies a YAML config file keyed by flag names, as etcd's
// --config-file: it replaces flags and environment entirely (they were
// parsed already and are reset to the defaults first). URL lists are
// comma strings; heartbeat-interval and election-timeout are integers of
// milliseconds; durations are integers of nanoseconds or Go durations.
func (o *options) loadConfigFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("error unmarshaling config file %s: %w", path, err)
	}
	fresh := newOptions()
	o.fs, o.values = fresh.fs, fresh.values
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := raw[k]
		if side, ok := securityMaps[k]; ok {
			if err := o.loadSecurityMap(path, k, side, v); err != nil {
				return err
			}
			continue
		}
		f := o.fs.Lookup(k)
		if f == nil || k == "config-file" || k == "version" || k == "help" {
			continue // etcd ignores keys it does not know
		}
		if v == nil {
			continue
		}
		s := yamlString(v)
		if n, ok := v.(int); ok && f.Value.Type() == "duration" {
			s = (time.Duration(n)).String()
		}
		if err := o.fs.Set(k, s); err != nil {
			return fmt.Errorf("config file %s: %s: %v", path, k, err)
		}
	}
	return nil
}

// yamlString renders a config file value as its flag would be written: a
// list comma-separated.
func yamlString(v any) string {
	switch tv := v.(type) {
	case []any:
		parts := make([]string, len(tv))
		for i, p := range tv {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	case int:
		return strconv.Itoa(tv)
	}
	return fmt.Sprint(v)
}

// securityMaps are the config file's TLS maps, each key of which sets a
// flag (etcd's securityConfig: cert-file, key-file, client-cert-file,
// client-key-file, client-cert-auth, trusted-ca-file, auto-tls, allowed-cn,
// allowed-hostname, skip-client-san-verification; noded also takes
// crl-file). The client side's allowed-cn has no flag.
var securityMaps = map[string]map[string]string{
	"client-transport-security": {
		"cert-file": "cert-file", "key-file": "key-file", "client-cert-file": "client-cert-file", "client-key-file": "client-key-file",
		"client-cert-auth": "client-cert-auth", "trusted-ca-file": "trusted-ca-file", "auto-tls": "auto-tls", "crl-file": "client-crl-file",
		"allowed-hostname": "client-cert-allowed-hostname", "allowed-cn": "", "skip-client-san-verification": "",
	},
	"peer-transport-security": {
		"cert-file": "peer-cert-file", "key-file": "peer-key-file", "client-cert-file": "peer-client-cert-file", "client-key-file": "peer-client-key-file",
		"client-cert-auth": "peer-client-cert-auth", "trusted-ca-file": "peer-trusted-ca-file", "auto-tls": "peer-auto-tls", "crl-file": "peer-crl-file",
		"allowed-cn": "peer-cert-allowed-cn", "allowed-hostname": "peer-cert-allowed-hostname", "skip-client-san-verification": "peer-skip-client-san-verification",
	},
}

// loadSecurityMap applies one of the config file's TLS maps.
func (o *options) loadSecurityMap(path, name string, flags map[string]string, v any) error {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("config file %s: %s must be a map", path, name)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		flag, known := flags[k]
		if !known || m[k] == nil {
			continue // etcd ignores keys it does not know
		}
		value := yamlString(m[k])
		switch {
		case name == "client-transport-security" && k == "allowed-cn":
			o.clientAllowedCNs = splitList(value)
		case flag == "":
			// skip-client-san-verification has no meaning on the client port.
		default:
			if err := o.fs.Set(flag, value); err != nil {
				return fmt.Errorf("config file %s: %s.%s: %v", path, name, k, err)
			}
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// tlsSettings builds the client and peer sides' TLS settings.
func (o *options) tlsSettings() (client, peer tlsconfig.Settings) {
	client = tlsconfig.Settings{
		CertFile:         o.str("cert-file"),
		KeyFile:          o.str("key-file"),
		ClientCertFile:   o.str("client-cert-file"),
		ClientKeyFile:    o.str("client-key-file"),
		TrustedCAFile:    o.str("trusted-ca-file"),
		ClientCertAuth:   o.boolean("client-cert-auth"),
		CRLFile:          o.str("client-crl-file"),
		AllowedCNs:       o.clientAllowedCNs,
		AllowedHostnames: o.list("client-cert-allowed-hostname"),
		AutoTLS:          o.boolean("auto-tls"),
	}
	peer = tlsconfig.Settings{
		CertFile:            o.str("peer-cert-file"),
		KeyFile:             o.str("peer-key-file"),
		ClientCertFile:      o.str("peer-client-cert-file"),
		ClientKeyFile:       o.str("peer-client-key-file"),
		TrustedCAFile:       o.str("peer-trusted-ca-file"),
		ClientCertAuth:      o.boolean("peer-client-cert-auth"),
		CRLFile:             o.str("peer-crl-file"),
		AllowedCNs:          o.list("peer-cert-allowed-cn"),
		AllowedHostnames:    o.list("peer-cert-allowed-hostname"),
		SkipClientSANVerify: o.boolean("peer-skip-client-san-verification") || o.boolean("experimental-peer-skip-client-san-verification"),
		AutoTLS:             o.boolean("peer-auto-tls"),
	}
	return client, peer
}

// toConfig checks the options and builds the member's configuration.
func (o *options) toConfig() (server.Config, []string, error) {
	var notes []string
	for _, d := range flagDefs {
		if !o.changed(d.name) {
			continue
		}
		f := o.fs.Lookup(d.name)
		switch {
		case d.refused != "" && f.Value.String() != d.def && f.Value.String() != "":
			return server.Config{}, nil, fmt.Errorf("--%s: %s", d.name, d.refused)
		case d.ignored != "":
			notes = append(notes, fmt.Sprintf("--%s is accepted and ignored: %s", d.name, d.ignored))
		}
	}
	if o.str("initial-cluster-state") != server.ClusterStateNew && o.str("initial-cluster-state") != server.ClusterStateExisting {
		return server.Config{}, nil, fmt.Errorf("unexpected clusterState %q", o.str("initial-cluster-state"))
	}
	cfg := server.DefaultConfig()
	cfg.Name = o.str("name")
	cfg.DataDir = o.str("data-dir")
	if !o.changed("data-dir") {
		cfg.DataDir = cfg.Name + ".etcd"
	}
	cfg.WALDir = o.str("wal-dir")
	var err error
	if cfg.ListenClientURLs, err = server.ParseURLs(o.str("listen-client-urls")); err != nil {
		return cfg, nil, fmt.Errorf("--listen-client-urls: %w", err)
	}
	if cfg.ListenPeerURLs, err = server.ParseURLs(o.str("listen-peer-urls")); err != nil {
		return cfg, nil, fmt.Errorf("--listen-peer-urls: %w", err)
	}
	if cfg.InitialAdvertisePeerURLs, err = server.ParseURLs(o.str("initial-advertise-peer-urls")); err != nil {
		return cfg, nil, fmt.Errorf("--initial-advertise-peer-urls: %w", err)
	}
	if cfg.ListenMetricsURLs, err = server.ParseURLs(o.str("listen-metrics-urls")); err != nil {
		return cfg, nil, fmt.Errorf("--listen-metrics-urls: %w", err)
	}
	if cfg.AdvertiseClientURLs, err = server.ParseURLs(o.str("advertise-client-urls")); err != nil {
		return cfg, nil, fmt.Errorf("--advertise-client-urls: %w", err)
	}
	if o.changed("listen-client-urls") && !o.changed("advertise-client-urls") {
		return cfg, nil, server.ErrUnsetAdvertiseClientURLsFlag
	}
	cfg.InitialCluster = o.str("initial-cluster")
	if !o.changed("initial-cluster") {
		// etcd's default initial cluster is the member itself under its
		// name and advertised peer URLs.
		var parts []string
		for _, u := range cfg.InitialAdvertisePeerURLs {
			parts = append(parts, cfg.Name+"="+u.String())
		}
		cfg.InitialCluster = strings.Join(parts, ",")
	}
	cfg.InitialClusterToken = o.str("initial-cluster-token")
	cfg.InitialClusterState = o.str("initial-cluster-state")
	cfg.HeartbeatMs = int64(o.uint("heartbeat-interval"))
	cfg.ElectionMs = int64(o.uint("election-timeout"))
	cfg.InitialElectionTickAdvance = o.boolean("initial-election-tick-advance")
	cfg.SnapshotCount = o.uint("snapshot-count")
	cfg.SnapshotCatchUpEntries = o.uint("snapshot-catchup-entries")
	if o.changed("experimental-snapshot-catchup-entries") {
		cfg.SnapshotCatchUpEntries = o.uint("experimental-snapshot-catchup-entries")
	}
	cfg.MaxSnapshots = int(o.uint("max-snapshots"))
	if cfg.MaxSnapshots == 0 {
		cfg.MaxSnapshots = 1 << 20 // etcd: 0 is unlimited
	}
	cfg.QuotaBackendBytes = o.int("quota-backend-bytes")
	if cfg.QuotaBackendBytes < 0 {
		return cfg, nil, errors.New("--quota-backend-bytes must not be negative")
	}
	if cfg.QuotaBackendBytes > 8<<30 {
		notes = append(notes, fmt.Sprintf("quota-backend-bytes %d exceeds the 8 GiB etcd recommends as a maximum", cfg.QuotaBackendBytes))
	}
	cfg.MaxTxnOps = int(o.uint("max-txn-ops"))
	cfg.MaxRequestBytes = int(o.uint("max-request-bytes"))
	cfg.MaxLearners = int(o.uint("max-learners"))
	if o.changed("experimental-max-learners") {
		cfg.MaxLearners = int(o.uint("experimental-max-learners"))
	}
	cfg.StrictReconfigCheck = o.boolean("strict-reconfig-check")
	cfg.AutoCompactionMode = o.str("auto-compaction-mode")
	cfg.AutoCompactionRetention = o.str("auto-compaction-retention")
	cfg.WatchProgressNotifyInterval = o.duration("watch-progress-notify-interval")
	if o.changed("experimental-watch-progress-notify-interval") {
		cfg.WatchProgressNotifyInterval = o.duration("experimental-watch-progress-notify-interval")
	}
	if cfg.WatchProgressNotifyInterval < 100*time.Millisecond {
		return cfg, nil, fmt.Errorf("--watch-progress-notify-interval %v is below the minimum of 100ms", cfg.WatchProgressNotifyInterval)
	}
	cfg.MaxWatchersPerStream = int(min(o.uint("max-watchers-per-stream"), 1<<40))
	if cfg.MaxWatchersPerStream == 0 {
		return cfg, nil, errors.New("--max-watchers-per-stream must be at least 1")
	}
	cfg.LeaseBasedReads = o.boolean("lease-based-reads")
	cfg.DisableGateway = !o.boolean("enable-grpc-gateway")
	cfg.EnablePprof = o.boolean("enable-pprof")
	cfg.AuthToken = o.str("auth-token")
	cfg.BcryptCost = int(o.uint("bcrypt-cost"))
	cfg.AuthTokenTTL = time.Duration(o.uint("auth-token-ttl")) * time.Second
	cfg.Metrics = o.str("metrics")
	// Corruption checks; the InitialCorruptCheck and CompactHashCheck
	// feature gates set the same fields.
	cfg.InitialCorruptCheck = o.boolean("experimental-initial-corrupt-check")
	cfg.CorruptCheckTime = o.duration("corrupt-check-time")
	if o.changed("experimental-corrupt-check-time") {
		cfg.CorruptCheckTime = o.duration("experimental-corrupt-check-time")
	}
	cfg.CompactHashCheck = o.boolean("experimental-compact-hash-check-enabled")
	cfg.CompactHashCheckTime = o.duration("compact-hash-check-time")
	if o.changed("experimental-compact-hash-check-time") {
		cfg.CompactHashCheckTime = o.duration("experimental-compact-hash-check-time")
	}
	cfg.ClientTLS, cfg.PeerTLS = o.tlsSettings()
	cfg.CipherSuites = o.list("cipher-suites")
	cfg.TLSMinVersion = o.str("tls-min-version")
	cfg.TLSMaxVersion = o.str("tls-max-version")
	cfg.SelfSignedCertValidity = uint(o.uint("self-signed-cert-validity"))
	if cfg.SelfSignedCertValidity == 0 {
		return cfg, nil, errors.New("--self-signed-cert-validity must be at least 1 (year)")
	}
	cfg.FeatureGates = o.gates("feature-gates")
	// etcd 3.6 and later: the gates turn the corruption checks on as the
	// experimental flags do.
	cfg.InitialCorruptCheck = cfg.InitialCorruptCheck || cfg.FeatureGates.Enabled(features.InitialCorruptCheck)
	cfg.CompactHashCheck = cfg.CompactHashCheck || cfg.FeatureGates.Enabled(features.CompactHashCheck)
	cfg.EnableV2 = o.boolean("enable-v2")
	if err := cfg.Validate(); err != nil {
		return cfg, nil, err
	}
	return cfg, notes, nil
}

// usage prints the help in etcd's layout, flags grouped as etcd groups
// them.
func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:

  noded [flags]
    Start a noded member (an etcd v3 compatible server).

  noded --version
    Show the version of noded.

  noded -h | --help
    Show the help information about noded.

  noded --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.

  noded snapshot restore|status <filename> [flags]
    Restore a snapshot file (etcd 3.4 to 3.7's, or noded's) into a new member's data directory, or print its status, as etcdutl does ('noded snapshot --help').

Every flag can also be set through its environment variable: --foo-bar as
ETCD_FOO_BAR (or NODED_FOO_BAR). Setting one both ways is an error.
`)
	groups := []string{groupMember, groupClustering, groupSecurity, groupAuth, groupProfiling, groupLogging, groupV2}
	for _, g := range groups {
		fmt.Fprintf(w, "\n%s:\n", g)
		for _, d := range flagDefs {
			if d.group != g {
				continue
			}
			fmt.Fprintf(w, "  --%s '%s'\n    %s\n", d.name, d.def, d.usage)
			switch {
			case d.ignored != "":
				fmt.Fprintf(w, "    (accepted and ignored by noded: %s)\n", d.ignored)
			case d.refused != "":
				fmt.Fprintf(w, "    (refused by noded when set: %s)\n", d.refused)
			}
		}
	}
}
