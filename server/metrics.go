package server

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/noded/noded/kvsm"
)

// Metrics levels, etcd's --metrics.
const (
	MetricsBasic     = "basic"
	MetricsExtensive = "extensive" // adds grpc_server_handling_seconds
)

// metrics are what /metrics exposes, under etcd's names and help texts so
// that etcd's Grafana dashboard and alert rules work unchanged. Each member
// has a registry of its own (tests run several members in one process).
//
// Counters the loop and the gRPC goroutines bump are atomics read at
// scrape time; gauges the node already knows (leader, indexes, sizes) are
// read from the published state at scrape time, so the hot paths never
// take a lock for metrics.
type metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	proposalsPending atomic.Int64
	proposalsFailed  atomic.Uint64
	leaderChanges    atomic.Uint64
	inboundDropped   atomic.Uint64
	watchersDropped  atomic.Uint64
	healthSuccess    atomic.Uint64
	healthFailure    atomic.Uint64
	clientSentBytes  atomic.Uint64
	clientRecvBytes  atomic.Uint64
	corruptChecks    atomic.Uint64 // hash comparisons with peers that found nothing wrong

	walFsync     *histogram
	snapshotSave *histogram
	backendSave  *histogram // etcd_disk_backend_commit_duration_seconds: noded's snapshot commit
	hashDuration *histogram

	// etcd_mvcc_{range,put,delete,txn}_total: the requests of each kind
	// this member served (etcd counts them in its store; noded counts them
	// where they arrive).
	kvRanges, kvPuts, kvDeletes, kvTxns atomic.Uint64

	peerRTT *prometheus.HistogramVec

	rttMu       sync.Mutex
	heartbeatAt map[uint64]time.Time // peer -> first unanswered heartbeat's send time
}

// histogram is a Prometheus histogram that also counts its observations
// for tests that wait on them.
type histogram struct {
	prometheus.Histogram
	count atomic.Uint64
}

func (h *histogram) observe(seconds float64) {
	h.Observe(seconds)
	h.count.Add(1)
}

// etcdDurationBuckets are etcd's disk buckets: 1 ms doubling to about 8 s.
var etcdDurationBuckets = prometheus.ExponentialBuckets(0.001, 2, 14)

func newHistogram(subsystem, name, help string, buckets []float64) *histogram {
	return &histogram{Histogram: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "etcd", Subsystem: subsystem, Name: name, Help: help, Buckets: buckets,
	})}
}

func newMetrics(level string) *metrics {
	mt := &metrics{
		reg:          prometheus.NewRegistry(),
		walFsync:     newHistogram("disk", "wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", etcdDurationBuckets),
		backendSave:  newHistogram("disk", "backend_commit_duration_seconds", "The latency distributions of commit called by backend.", etcdDurationBuckets),
		snapshotSave: newHistogram("debugging", "snap_save_total_duration_seconds", "The total latency distributions of save called by snapshot.", etcdDurationBuckets),
		hashDuration: newHistogram("mvcc", "hash_rev_duration_seconds", "The latency distribution of storage hash by revision operation.", prometheus.ExponentialBuckets(.01, 2, 15)),
		peerRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "network", Name: "peer_round_trip_time_seconds",
			Help:    "Round-Trip-Time histogram between peers",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"To"}),
		heartbeatAt: map[uint64]time.Time{},
	}
	var grpcOpts []grpcprom.ServerMetricsOption
	if level == MetricsExtensive {
		grpcOpts = append(grpcOpts, grpcprom.WithServerHandlingTimeHistogram())
	}
	mt.grpc = grpcprom.NewServerMetrics(grpcOpts...)
	mt.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		mt.grpc,
		mt.walFsync, mt.backendSave, mt.snapshotSave, mt.hashDuration, mt.peerRTT,
	)
	return mt
}

// register adds the metrics that read the member's published state.
func (m *Member) registerMetrics() {
	mt := m.metrics
	state := func() *memberState { return m.state.Load() }
	gauge := func(subsystem, name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: subsystem, Name: name, Help: help}, f)
	}
	counter := func(subsystem, name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "etcd", Subsystem: subsystem, Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	label := func(name, help, labelName, value string) prometheus.Collector {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{labelName})
		g.WithLabelValues(value).Set(1)
		return g
	}
	mt.reg.MustRegister(
		gauge("server", "has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", func() float64 { return boolGauge(state().hasLeader()) }),
		gauge("server", "is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", func() float64 { return boolGauge(state().status.State == raft.StateLeader) }),
		gauge("server", "is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", func() float64 { return boolGauge(state().status.IsLearner) }),
		counter("server", "leader_changes_seen_total", "The number of leader changes seen.", &mt.leaderChanges),
		gauge("server", "proposals_committed_total", "The total number of consensus proposals committed.", func() float64 { return float64(state().status.CommitIndex) }),
		gauge("server", "proposals_applied_total", "The total number of consensus proposals applied.", func() float64 { return float64(state().status.AppliedIndex) }),
		gauge("server", "proposals_pending", "The current number of pending proposals to commit.", func() float64 { return float64(mt.proposalsPending.Load()) }),
		counter("server", "proposals_failed_total", "The total number of failed proposals seen.", &mt.proposalsFailed),
		counter("server", "health_success", "The total number of successful health checks", &mt.healthSuccess),
		counter("server", "health_failures", "The total number of failed health checks", &mt.healthFailure),
		gauge("server", "quota_backend_bytes", "Current backend storage quota size in bytes.", func() float64 { return float64(m.quotaBytes()) }),
		label("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.", "server_version", Version),
		label("etcd_server_go_version", "Which Go version server is running with. 1 for 'server_go_version' label with current version.", "server_go_version", runtime.Version()),
		label("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version", "cluster_version", APIVersion),
		label("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", "server_id", strconv.FormatUint(m.id, 16)),
		gauge("mvcc", "db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", func() float64 { return float64(state().dbSize) }),
		gauge("mvcc", "db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", func() float64 { return float64(state().dbSize) }),
		gauge("debugging", "mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", func() float64 { return float64(state().dbSize) }),
		gauge("debugging", "mvcc_current_revision", "The current revision of store.", func() float64 { return float64(state().status.Revision) }),
		gauge("debugging", "mvcc_compact_revision", "The revision of the last compaction in store.", func() float64 { return float64(state().status.CompactRevision) }),
		gauge("debugging", "mvcc_keys_total", "Total number of keys.", func() float64 { return float64(countKeys(state().view)) }),
		counter("network", "client_grpc_sent_bytes_total", "The total number of bytes sent to grpc clients.", &mt.clientSentBytes),
		counter("network", "client_grpc_received_bytes_total", "The total number of bytes received from grpc clients.", &mt.clientRecvBytes),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "noded_peer_inbound_dropped_total",
			Help: "Raft messages from peers dropped because the member loop's queue was full."},
			func() float64 { return float64(mt.inboundDropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "noded_watchers_paused_total",
			Help: "Watchers paused because their stream's client read too slowly (each resumes from history)."},
			func() float64 { return float64(mt.watchersDropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "noded_corrupt_checks_passed_total",
			Help: "Hash comparisons with other members that found the same state at the same revision."},
			func() float64 { return float64(mt.corruptChecks.Load()) }),
		counter("mvcc", "range_total", "Total number of ranges seen by this member.", &mt.kvRanges),
		counter("mvcc", "put_total", "Total number of puts seen by this member.", &mt.kvPuts),
		counter("mvcc", "delete_total", "Total number of deletes seen by this member.", &mt.kvDeletes),
		counter("mvcc", "txn_total", "Total number of txns seen by this member.", &mt.kvTxns),
		peerCounters{m},
	)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// peerCounters reads the transport's per-peer traffic at scrape time.
type peerCounters struct{ m *Member }

var (
	peerSentDesc     = prometheus.NewDesc("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", []string{"To"}, nil)
	peerReceivedDesc = prometheus.NewDesc("etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.", []string{"From"}, nil)
	peerFailuresDesc = prometheus.NewDesc("etcd_network_peer_sent_failures_total", "The total number of send failures from peers.", []string{"To"}, nil)
	activePeersDesc  = prometheus.NewDesc("etcd_network_active_peers", "The current number of active peer connections.", []string{"Local", "Remote"}, nil)
)

func (c peerCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerSentDesc
	ch <- peerReceivedDesc
	ch <- peerFailuresDesc
	ch <- activePeersDesc
}

func (c peerCounters) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	if m.peers == nil {
		return
	}
	local := strconv.FormatUint(m.id, 16)
	for _, p := range m.peers.Stats().Peers {
		id := strconv.FormatUint(p.ID, 16)
		ch <- prometheus.MustNewConstMetric(peerSentDesc, prometheus.CounterValue, float64(p.BytesSent), id)
		ch <- prometheus.MustNewConstMetric(peerReceivedDesc, prometheus.CounterValue, float64(p.BytesReceived), id)
		ch <- prometheus.MustNewConstMetric(peerFailuresDesc, prometheus.CounterValue, float64(p.MessagesDropped), id)
	}
	for _, id := range m.peers.ActivePeers() {
		ch <- prometheus.MustNewConstMetric(activePeersDesc, prometheus.GaugeValue, 1, local, strconv.FormatUint(id, 16))
	}
}

// serverOptions are the gRPC server options that feed grpc_server_* and
// etcd_network_client_grpc_*_bytes_total.
func (mt *metrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(byteCounter{mt})}
}

func (mt *metrics) unaryInterceptor() grpc.UnaryServerInterceptor {
	inner := mt.grpc.UnaryServerInterceptor()
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch req.(type) {
		case *pb.RangeRequest:
			mt.kvRanges.Add(1)
		case *pb.PutRequest:
			mt.kvPuts.Add(1)
		case *pb.DeleteRangeRequest:
			mt.kvDeletes.Add(1)
		case *pb.TxnRequest:
			mt.kvTxns.Add(1)
		}
		return inner(ctx, req, info, handler)
	}
}

func (mt *metrics) streamInterceptor() grpc.StreamServerInterceptor {
	return mt.grpc.StreamServerInterceptor()
}

// byteCounter counts the bytes of client gRPC messages on the wire.
type byteCounter struct{ mt *metrics }

func (b byteCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (b byteCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (b byteCounter) HandleConn(context.Context, stats.ConnStats) {}
func (b byteCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch p := s.(type) {
	case *stats.InPayload:
		b.mt.clientRecvBytes.Add(uint64(p.WireLength))
	case *stats.OutPayload:
		b.mt.clientSentBytes.Add(uint64(p.WireLength))
	}
}

// Heartbeat round trips measure etcd_network_peer_round_trip_time_seconds:
// the time from the leader sending a peer a heartbeat to its answer
// arriving. Only the first unanswered heartbeat per peer is timed, so a
// peer that stops answering is not charged for every beat it missed.
const rttPeersMax = 1024

func (mt *metrics) heartbeatsSent(msgs []*raftpb.Message, now time.Time) {
	var locked bool
	for _, msg := range msgs {
		if msg.GetType() != raftpb.MessageType_MsgHeartbeat {
			continue
		}
		if !locked {
			mt.rttMu.Lock()
			defer mt.rttMu.Unlock()
			locked = true
		}
		if _, waiting := mt.heartbeatAt[msg.GetTo()]; !waiting && len(mt.heartbeatAt) < rttPeersMax {
			mt.heartbeatAt[msg.GetTo()] = now
		}
	}
}

func (mt *metrics) heartbeatAnswered(msg *raftpb.Message, now time.Time) {
	if msg.GetType() != raftpb.MessageType_MsgHeartbeatResp {
		return
	}
	mt.rttMu.Lock()
	sent, ok := mt.heartbeatAt[msg.GetFrom()]
	delete(mt.heartbeatAt, msg.GetFrom())
	mt.rttMu.Unlock()
	if ok {
		mt.peerRTT.WithLabelValues(strconv.FormatUint(msg.GetFrom(), 16)).Observe(now.Sub(sent).Seconds())
	}
}

// handleMetricsEndpoint serves the registry in Prometheus text format.
func (m *Member) metricsEndpoint() http.Handler {
	return promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{})
}

// countKeys counts the live keys on the frozen view the loop published,
// walked here, off the loop.
func countKeys(view *kvsm.View) int64 {
	if view == nil {
		return 0
	}
	resp, err := view.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	if err != nil {
		return 0
	}
	return resp.GetCount()
}

func (m *Member) quotaBytes() int64 {
	if m.cfg.QuotaBackendBytes > 0 {
		return m.cfg.QuotaBackendBytes
	}
	return 2 << 30
}
