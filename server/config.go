package server

import (
	"errors"
	"fmt"
	stdnet "net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/node"
	"github.com/noded/noded/server/auth"
	"github.com/noded/noded/server/features"
	"github.com/noded/noded/server/tlsconfig"
)

// Version is the etcd server version noded claims everywhere a version is
// shown (Status, /version, /metrics, --version). etcd clients and etcdctl
// 3.4 to 3.7 accept a 3.5 server, and noded implements what 3.5 serves.
const (
	Version        = "3.5.17"
	ClusterVersion = "3.5.0"
	APIVersion     = "3.5"
)

// Cluster states, etcd's --initial-cluster-state.
const (
	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"
)

// Auto-compaction modes, etcd's --auto-compaction-mode.
const (
	CompactionModePeriodic = "periodic"
	CompactionModeRevision = "revision"
)

// Config is one member's configuration: etcd's member and clustering flags
// after parsing. cmd/noded fills it from flags, ETCD_* variables or a
// config file; tests fill it directly.
type Config struct {
	Name    string
	DataDir string // holds member/wal and member/snap
	WALDir  string // a dedicated WAL directory; "" means DataDir/member/wal

	ListenClientURLs         []url.URL
	AdvertiseClientURLs      []url.URL
	ListenPeerURLs           []url.URL
	InitialAdvertisePeerURLs []url.URL
	ListenMetricsURLs        []url.URL // etcd's --listen-metrics-urls: /metrics and the health endpoints only

	InitialCluster      string // name=peerURL,... (a name repeats for several URLs)
	InitialClusterToken string
	InitialClusterState string // ClusterStateNew or ClusterStateExisting

	HeartbeatMs                int64 // etcd's --heartbeat-interval: one node tick
	ElectionMs                 int64 // etcd's --election-timeout
	InitialElectionTickAdvance bool  // campaign sooner on boot, as etcd's --initial-election-tick-advance

	SnapshotCount          uint64
	SnapshotCatchUpEntries uint64
	MaxSnapshots           int // snapshot files kept (etcd's --max-snapshots)

	// IdleMemoryRelease, when above 0, has the member collect the Go
	// heap's garbage and return free pages to the system once it has
	// applied nothing for this long after it last did (memory.go). The
	// setting is process-wide in effect; cmd/noded turns it on.
	IdleMemoryRelease time.Duration
	// PauseGCWhileLoading turns the Go collector off while the member loads
	// its data directory and applies the log it recovered (memory.go): a
	// process-wide setting; cmd/noded turns it on.
	PauseGCWhileLoading bool

	QuotaBackendBytes   int64
	MaxRequestBytes     int
	MaxTxnOps           int
	MaxLearners         int
	StrictReconfigCheck bool

	AutoCompactionMode      string // "", CompactionModePeriodic or CompactionModeRevision
	AutoCompactionRetention string // periodic: a duration or a bare number of hours; revision: a count
	// RevisionCompactionInterval is how often revision-mode compaction
	// runs (etcd: 5 minutes). Tests shorten it.
	RevisionCompactionInterval time.Duration

	WatchProgressNotifyInterval time.Duration // 0: etcd's 10 minutes
	// MaxWatchersPerStream bounds the watchers of one watch stream (noded's
	// --max-watchers-per-stream; etcd has no such bound). A create beyond
	// it is refused with created and canceled set and a reason.
	MaxWatchersPerStream int
	// LeaseBasedReads answers linearizable reads on the leader without a
	// heartbeat round to a quorum (noded's --lease-based-reads; raft's
	// ReadOnlyLeaseBased): correct only while clocks drift less than the
	// election timeout allows. Off, reads are ReadIndex, as etcd's.
	LeaseBasedReads bool

	// Auth: etcd's --auth-token ("simple", or "jwt,..."), --bcrypt-cost and
	// --auth-token-ttl (simple tokens' lifetime from their last use).
	AuthToken    string
	BcryptCost   int
	AuthTokenTTL time.Duration
	authSpec     auth.TokenSpec // AuthToken parsed (and its key files read) by Validate

	DisableGateway bool   // etcd's --enable-grpc-gateway=false: no /v3 JSON gateway
	EnablePprof    bool   // etcd's --enable-pprof: Go's profiles at /debug/pprof/ on the client URLs
	EnableV2       bool   // etcd's --enable-v2: the v2 keys, members and stats API on the client URLs
	Metrics        string // etcd's --metrics: MetricsBasic (""), or MetricsExtensive for gRPC latency histograms

	// ClientTLS and PeerTLS are the client and peer ports' TLS settings
	// (etcd's --cert-file ... and --peer-cert-file ..., or the config
	// file's client-transport-security and peer-transport-security). They
	// serve the https URLs among the listen URLs and the connections the
	// member dials: peers, the leader it forwards to, a cluster it joins.
	// ClientTLS.ClientCertAuth (--client-cert-auth) also makes a client
	// certificate's CN the user of a call that sends no token.
	ClientTLS tlsconfig.Settings
	PeerTLS   tlsconfig.Settings
	// CipherSuites, TLSMinVersion and TLSMaxVersion apply to both sides
	// (etcd's --cipher-suites, --tls-min-version, --tls-max-version).
	CipherSuites  []string
	TLSMinVersion string
	TLSMaxVersion string
	// SelfSignedCertValidity is the lifetime in years of the certificates
	// --auto-tls and --peer-auto-tls generate (0: one year).
	SelfSignedCertValidity uint

	// FeatureGates are etcd's --feature-gates. InitialCorruptCheck and
	// CompactHashCheck are for the corruption checks; the member logs, once,
	// the gates set that change nothing in noded.
	FeatureGates features.Gates

	// ConnectionsMax and ConnectionsPerSourceMax bound the connections
	// open at once on each client, peer and metrics port, in all and from
	// one IP address; past either, the oldest idle connection is closed
	// to make room (package connmux). 0: three quarters of the process's
	// file descriptor limit, and no per-source bound below it.
	ConnectionsMax          int
	ConnectionsPerSourceMax int

	// ClientListeners and PeerListeners, when set, are used instead of
	// listening on ListenClientURLs and ListenPeerURLs (tests pass :0
	// listeners so that ports never collide). The member closes them.
	ClientListeners  []stdnet.Listener
	PeerListeners    []stdnet.Listener
	MetricsListeners []stdnet.Listener

	// Corruption checks (etcd's InitialCorruptCheck and CompactHashCheck
	// feature gates, --corrupt-check-time, --compact-hash-check-time).
	InitialCorruptCheck  bool          // compare hashes with peers before serving clients; refuse to start on a mismatch
	CorruptCheckTime     time.Duration // the leader compares every member's hash this often; 0: never
	CompactHashCheck     bool          // the leader compares hashes at each new compact revision
	CompactHashCheckTime time.Duration // how often it looks for a new compact revision; 0: DefaultCompactHashCheckTime

	Logger *zap.Logger // nil: no logging

	// FS, when set, holds the data directory instead of the operating
	// system's files (rooted at "/"; tests wrap it to inject disk faults).
	FS disk.FS
}

// Default limits and timings, etcd 3.5's defaults.
const (
	DefaultName                       = "default"
	DefaultHeartbeatMs                = 100
	DefaultElectionMs                 = 1000
	DefaultSnapshotCount              = 100000
	DefaultMaxSnapshots               = 5
	DefaultInitialClusterToken        = "etcd-cluster"
	DefaultRevisionCompactionInterval = 5 * time.Minute
	DefaultWatchProgressNotify        = 10 * time.Minute
	DefaultAuthTokenTTL               = 300 * time.Second
	// DefaultMaxWatchersPerStream leaves the headroom etcd (which has no
	// bound) gives: an API server that multiplexes every watch of its
	// clients onto one stream holds tens of thousands; a stream's watchers
	// cost about a kilobyte each here.
	DefaultMaxWatchersPerStream = 1 << 20
	// maxElectionMs is etcd's upper bound on --election-timeout.
	maxElectionMs = 50000
	// grpcOverheadBytes is what etcd adds to --max-request-bytes for the
	// gRPC receive limit, so that RequestTooLarge (not a transport error)
	// answers a request just over the limit.
	grpcOverheadBytes = 512 * 1024
)

// DefaultConfig returns etcd's defaults: one member named default, clients
// on localhost:2379 and peers on localhost:2380.
func DefaultConfig() Config {
	return Config{
		Name:                        DefaultName,
		ListenClientURLs:            mustParseURLs("http://localhost:2379"),
		AdvertiseClientURLs:         mustParseURLs("http://localhost:2379"),
		ListenPeerURLs:              mustParseURLs("http://localhost:2380"),
		InitialAdvertisePeerURLs:    mustParseURLs("http://localhost:2380"),
		InitialCluster:              DefaultName + "=http://localhost:2380",
		InitialClusterToken:         DefaultInitialClusterToken,
		InitialClusterState:         ClusterStateNew,
		HeartbeatMs:                 DefaultHeartbeatMs,
		ElectionMs:                  DefaultElectionMs,
		InitialElectionTickAdvance:  true,
		SnapshotCount:               DefaultSnapshotCount,
		SnapshotCatchUpEntries:      node.DefaultSnapshotCatchUpEntries,
		MaxSnapshots:                DefaultMaxSnapshots,
		MaxRequestBytes:             node.DefaultMaxRequestBytes,
		MaxTxnOps:                   node.DefaultMaxTxnOps,
		MaxLearners:                 node.DefaultMaxLearners,
		StrictReconfigCheck:         true,
		AutoCompactionMode:          CompactionModePeriodic,
		AutoCompactionRetention:     "0",
		RevisionCompactionInterval:  DefaultRevisionCompactionInterval,
		WatchProgressNotifyInterval: DefaultWatchProgressNotify,
		MaxWatchersPerStream:        DefaultMaxWatchersPerStream,
		AuthToken:                   string(auth.TokenSimple),
		BcryptCost:                  auth.BcryptCostDefault,
		AuthTokenTTL:                DefaultAuthTokenTTL,
	}
}

func mustParseURLs(s string) []url.URL {
	us, err := ParseURLs(s)
	if err != nil {
		panic(err)
	}
	return us
}

// ParseURLs parses a comma-separated URL list as etcd's flags take it.
func ParseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs" {
			return nil, fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", part)
		}
		if _, _, err := stdnet.SplitHostPort(u.Host); err != nil {
			return nil, fmt.Errorf(`URL address does not have the form "host:port": %s`, part)
		}
		if u.Path != "" {
			return nil, fmt.Errorf("URL must not contain a path: %s", part)
		}
		out = append(out, *u)
	}
	return out, nil
}

// URLStrings renders URLs as strings.
func URLStrings(us []url.URL) []string {
	out := make([]string, len(us))
	for i := range us {
		out[i] = us[i].String()
	}
	return out
}

// Errors with etcd's texts.
var (
	ErrUnsetAdvertiseClientURLsFlag      = errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")
	ErrConflictBootstrapFlags            = errors.New("multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"")
	ErrMissingClientTLSInfoForMetricsURL = errors.New("client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url")
)

// Validate checks the configuration as etcd's embed.Config.Validate does,
// with etcd's messages.
func (c *Config) Validate() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.InitialClusterState != ClusterStateNew && c.InitialClusterState != ClusterStateExisting {
		return fmt.Errorf("unexpected clusterState %q", c.InitialClusterState)
	}
	if c.HeartbeatMs <= 0 {
		return fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", c.HeartbeatMs)
	}
	if c.ElectionMs <= 0 {
		return fmt.Errorf("--election-timeout must be >0 (set to %dms)", c.ElectionMs)
	}
	if 5*c.HeartbeatMs > c.ElectionMs {
		return fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", c.ElectionMs, c.HeartbeatMs)
	}
	if c.ElectionMs > maxElectionMs {
		return fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", c.ElectionMs, maxElectionMs)
	}
	for _, group := range []struct {
		flag string
		urls []url.URL
	}{{"--listen-client-urls", c.ListenClientURLs}, {"--listen-peer-urls", c.ListenPeerURLs}, {"--listen-metrics-urls", c.ListenMetricsURLs}} {
		for _, u := range group.urls {
			host, _, _ := stdnet.SplitHostPort(u.Host)
			if host != "" && host != "localhost" && stdnet.ParseIP(host) == nil {
				return fmt.Errorf("expected IP in URL for binding (%s)", u.String())
			}
			if u.Scheme != "http" && u.Scheme != "https" {
				return fmt.Errorf("%s %s: noded listens on http and https URLs only (not on unix sockets)", group.flag, u.String())
			}
		}
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if len(c.ListenClientURLs) > 0 && len(c.AdvertiseClientURLs) == 0 {
		return ErrUnsetAdvertiseClientURLsFlag
	}
	if len(c.InitialAdvertisePeerURLs) == 0 {
		return errors.New("--initial-advertise-peer-urls is empty")
	}
	switch c.Metrics {
	case "", MetricsBasic, MetricsExtensive:
	default:
		return fmt.Errorf("unknown metrics level %q: want %s or %s", c.Metrics, MetricsBasic, MetricsExtensive)
	}
	switch c.AutoCompactionMode {
	case "", CompactionModePeriodic, CompactionModeRevision:
	default:
		return fmt.Errorf("unknown auto-compaction-mode %q", c.AutoCompactionMode)
	}
	if _, err := c.compactionRetention(); err != nil {
		return err
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = node.DefaultMaxRequestBytes
	}
	if c.AuthToken == "" {
		c.AuthToken = string(auth.TokenSimple)
	}
	spec, err := auth.ParseTokenSpec(c.AuthToken, os.ReadFile)
	if err != nil {
		return fmt.Errorf("--auth-token %q: %w", c.AuthToken, err)
	}
	c.authSpec = spec
	if c.AuthTokenTTL <= 0 {
		c.AuthTokenTTL = DefaultAuthTokenTTL
	}
	if c.MaxTxnOps <= 0 {
		c.MaxTxnOps = node.DefaultMaxTxnOps
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = node.DefaultSnapshotCatchUpEntries
	}
	if c.MaxLearners <= 0 {
		c.MaxLearners = node.DefaultMaxLearners
	}
	if c.RevisionCompactionInterval <= 0 {
		c.RevisionCompactionInterval = DefaultRevisionCompactionInterval
	}
	if c.CompactHashCheckTime <= 0 {
		c.CompactHashCheckTime = DefaultCompactHashCheckTime
	}
	if c.CorruptCheckTime < 0 {
		return fmt.Errorf("--corrupt-check-time must not be negative (set to %v)", c.CorruptCheckTime)
	}
	if c.WatchProgressNotifyInterval <= 0 {
		c.WatchProgressNotifyInterval = DefaultWatchProgressNotify
	}
	if c.MaxWatchersPerStream <= 0 {
		c.MaxWatchersPerStream = DefaultMaxWatchersPerStream
	}
	if c.InitialClusterToken == "" {
		c.InitialClusterToken = DefaultInitialClusterToken
	}
	if c.DataDir == "" {
		c.DataDir = c.Name + ".etcd"
	}
	return nil
}

// validateTLS checks that every https listen URL has a certificate to
// serve, with etcd's messages. The files themselves are read when the
// member starts, before it listens (package tlsconfig).
func (c *Config) validateTLS() error {
	minVersion, _, err := tlsconfig.ParseVersions(c.TLSMinVersion, c.TLSMaxVersion)
	if err != nil {
		return err
	}
	if _, err := tlsconfig.ParseCipherSuites(c.CipherSuites, minVersion); err != nil {
		return err
	}
	for _, u := range c.ListenClientURLs {
		if u.Scheme == "https" && c.ClientTLS.Empty() {
			return fmt.Errorf("TLS key/cert (--cert-file, --key-file) must be provided for client url %s with HTTPS scheme", u.String())
		}
	}
	for _, u := range c.ListenMetricsURLs {
		if u.Scheme == "https" && c.ClientTLS.Empty() {
			return ErrMissingClientTLSInfoForMetricsURL
		}
	}
	for _, u := range c.ListenPeerURLs {
		if u.Scheme == "https" && c.PeerTLS.Empty() {
			return fmt.Errorf("cannot listen on TLS for %s: KeyFile and CertFile are not presented (--peer-cert-file, --peer-key-file or --peer-auto-tls)", u.Host)
		}
	}
	return nil
}

// compactionRetention parses --auto-compaction-retention for the mode: a
// duration for periodic (a bare number means hours), a revision count for
// revision mode. Zero turns auto compaction off.
func (c *Config) compactionRetention() (int64, error) {
	r := strings.TrimSpace(c.AutoCompactionRetention)
	if r == "" {
		r = "0"
	}
	switch c.AutoCompactionMode {
	case CompactionModeRevision:
		var n int64
		if _, err := fmt.Sscanf(r, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != r {
			return 0, fmt.Errorf("invalid auto-compaction-retention %q for revision mode: want a non-negative integer", r)
		}
		return n, nil
	default:
		var hours int64
		if _, err := fmt.Sscanf(r, "%d", &hours); err == nil && fmt.Sprint(hours) == r {
			if hours < 0 {
				return 0, fmt.Errorf("invalid auto-compaction-retention %q", r)
			}
			return int64(time.Duration(hours) * time.Hour), nil
		}
		d, err := time.ParseDuration(r)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("invalid auto-compaction-retention %q: want a duration (1h, 30m) or a number of hours", r)
		}
		return int64(d), nil
	}
}

// initialMember is one entry of --initial-cluster.
type initialMember struct {
	name     string
	peerURLs []string
}

// parseInitialCluster parses name=url,name=url; a name may repeat to give
// a member several URLs. Names keep their first appearance's order.
func parseInitialCluster(s string) ([]initialMember, error) {
	var out []initialMember
	index := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, rawURL, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("--initial-cluster: %q is not name=url", part)
		}
		us, err := ParseURLs(rawURL)
		if err != nil || len(us) != 1 {
			return nil, fmt.Errorf("--initial-cluster: %q: bad URL: %v", part, err)
		}
		i, seen := index[name]
		if !seen {
			i = len(out)
			index[name] = i
			out = append(out, initialMember{name: name})
		}
		out[i].peerURLs = append(out[i].peerURLs, us[0].String())
	}
	for _, m := range out {
		slices.Sort(m.peerURLs)
	}
	return out, nil
}

// bootstrapMembers resolves --initial-cluster into node members with etcd's
// IDs, checks that this member is among them with its advertised peer
// URLs, and returns them with this member's ID and the cluster ID.
func (c *Config) bootstrapMembers() (members []node.Member, self, clusterID uint64, err error) {
	initial, err := parseInitialCluster(c.InitialCluster)
	if err != nil {
		return nil, 0, 0, err
	}
	advertised := URLStrings(c.InitialAdvertisePeerURLs)
	slices.Sort(advertised)
	found := false
	var ids []uint64
	for _, im := range initial {
		id := node.MemberID(im.peerURLs, c.InitialClusterToken, nil)
		if im.name == c.Name {
			found = true
			if !slices.Equal(im.peerURLs, advertised) && !resolvedEqual(im.peerURLs, advertised) {
				return nil, 0, 0, fmt.Errorf("--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s (%s)",
					strings.Join(im.peerURLs, ","), strings.Join(advertised, ","), "resolved urls do not match")
			}
			self = id
		}
		for _, m := range members {
			if m.ID == id {
				return nil, 0, 0, fmt.Errorf("--initial-cluster: members %q and another share peer URLs %s", im.name, strings.Join(im.peerURLs, ","))
			}
		}
		ids = append(ids, id)
		members = append(members, node.Member{ID: id, Name: im.name, PeerURLs: im.peerURLs})
	}
	if !found {
		return nil, 0, 0, fmt.Errorf("couldn't find local name %q in the initial cluster configuration", c.Name)
	}
	return members, self, node.ClusterID(ids), nil
}
