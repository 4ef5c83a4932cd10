package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/noded/noded/kvsm"
)

// metrics are the counters /metrics exposes in Prometheus text format,
// under etcd's names where noded measures the same thing. Gauges that the
// node already knows (leader, indexes, sizes) are read from the published
// state at scrape time.
type metrics struct {
	proposalsPending atomic.Int64
	proposalsFailed  atomic.Uint64
	leaderChanges    atomic.Uint64
	inboundDropped   atomic.Uint64
	watchersDropped  atomic.Uint64
	healthSuccess    atomic.Uint64
	healthFailure    atomic.Uint64

	walFsync     *histogram
	snapshotSave *histogram

	grpcMu      sync.Mutex
	grpcStarted map[grpcMethod]uint64
	grpcHandled map[grpcOutcome]uint64 // bounded: methods are etcd's, codes are gRPC's 17
}

type grpcMethod struct{ service, method, kind string }

type grpcOutcome struct {
	grpcMethod
	code string
}

func newMetrics() *metrics {
	// etcd's buckets: 1 ms doubling to about 8 s.
	buckets := make([]float64, 14)
	for i := range buckets {
		buckets[i] = 0.001 * float64(uint64(1)<<i)
	}
	return &metrics{
		walFsync:     newHistogram(buckets),
		snapshotSave: newHistogram(buckets),
		grpcStarted:  map[grpcMethod]uint64{},
		grpcHandled:  map[grpcOutcome]uint64{},
	}
}

type histogram struct {
	mu      sync.Mutex
	buckets []float64
	counts  []uint64 // per bucket, not cumulative
	count   uint64
	sum     float64
}

func newHistogram(buckets []float64) *histogram {
	return &histogram{buckets: buckets, counts: make([]uint64, len(buckets))}
}

func (h *histogram) observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i, _ := slices.BinarySearch(h.buckets, v); i < len(h.buckets) {
		h.counts[i]++
	}
	h.count++
	h.sum += v
}

func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cumulative uint64
	for i, b := range h.buckets {
		cumulative += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", name, strconv.FormatFloat(b, 'g', -1, 64), cumulative)
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n", name, h.count)
	fmt.Fprintf(w, "%s_sum %s\n", name, strconv.FormatFloat(h.sum, 'g', -1, 64))
	fmt.Fprintf(w, "%s_count %d\n", name, h.count)
}

func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	service, method, _ = strings.Cut(full, "/")
	return service, method
}

func (mt *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	service, method := splitMethod(info.FullMethod)
	key := grpcMethod{service, method, "unary"}
	mt.grpcMu.Lock()
	mt.grpcStarted[key]++
	mt.grpcMu.Unlock()
	resp, err := handler(ctx, req)
	mt.grpcMu.Lock()
	mt.grpcHandled[grpcOutcome{key, status.Code(err).String()}]++
	mt.grpcMu.Unlock()
	return resp, err
}

func (mt *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	kind := "bidi_stream"
	switch {
	case info.IsClientStream && !info.IsServerStream:
		kind = "client_stream"
	case info.IsServerStream && !info.IsClientStream:
		kind = "server_stream"
	}
	service, method := splitMethod(info.FullMethod)
	key := grpcMethod{service, method, kind}
	mt.grpcMu.Lock()
	mt.grpcStarted[key]++
	mt.grpcMu.Unlock()
	err := handler(srv, ss)
	mt.grpcMu.Lock()
	mt.grpcHandled[grpcOutcome{key, status.Code(err).String()}]++
	mt.grpcMu.Unlock()
	return err
}

func gauge(w io.Writer, name, help string, v float64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'g', -1, 64))
}

func counter(w io.Writer, name, help string, v uint64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Member) serveMetrics(w http.ResponseWriter, r *http.Request) {
	st := m.state.Load()
	mt := m.metrics
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	var b strings.Builder
	gauge(&b, "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", boolGauge(st.hasLeader()))
	gauge(&b, "etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", boolGauge(st.status.State == raft.StateLeader))
	gauge(&b, "etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", boolGauge(st.status.IsLearner))
	counter(&b, "etcd_server_leader_changes_seen_total", "The number of leader changes seen.", mt.leaderChanges.Load())
	gauge(&b, "etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", float64(st.status.CommitIndex))
	gauge(&b, "etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", float64(st.status.AppliedIndex))
	gauge(&b, "etcd_server_proposals_pending", "The current number of pending proposals to commit.", float64(mt.proposalsPending.Load()))
	counter(&b, "etcd_server_proposals_failed_total", "The total number of failed proposals seen.", mt.proposalsFailed.Load())
	counter(&b, "etcd_server_health_success", "The total number of successful health checks", mt.healthSuccess.Load())
	counter(&b, "etcd_server_health_failures", "The total number of failed health checks", mt.healthFailure.Load())
	gauge(&b, "etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.", float64(m.quotaBytes()))
	fmt.Fprintf(&b, "# HELP etcd_server_version Which version is running. 1 for 'server_version' label with current version.\n# TYPE etcd_server_version gauge\netcd_server_version{server_version=%q} 1\n", Version)
	fmt.Fprintf(&b, "# HELP etcd_cluster_version Which version is running. 1 for 'cluster_version' label with current cluster version\n# TYPE etcd_cluster_version gauge\netcd_cluster_version{cluster_version=%q} 1\n", APIVersion)
	fmt.Fprintf(&b, "# HELP etcd_server_id Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.\n# TYPE etcd_server_id gauge\netcd_server_id{server_id=%q} 1\n", strconv.FormatUint(m.id, 16))
	gauge(&b, "etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", float64(st.dbSize))
	gauge(&b, "etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", float64(st.dbSize))
	gauge(&b, "etcd_debugging_mvcc_current_revision", "The current revision of store.", float64(st.status.Revision))
	gauge(&b, "etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.", float64(st.status.CompactRevision))
	if keys, ok := countKeys(st.view); ok {
		gauge(&b, "etcd_debugging_mvcc_keys_total", "Total number of keys.", float64(keys))
	}
	mt.walFsync.write(&b, "etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.")
	mt.snapshotSave.write(&b, "etcd_debugging_snap_save_total_duration_seconds", "The total latency distributions of save called by snapshot.")

	stats := m.peers.Stats()
	b.WriteString("# HELP etcd_network_peer_sent_bytes_total The total number of bytes sent to peers.\n# TYPE etcd_network_peer_sent_bytes_total counter\n")
	for _, p := range stats.Peers {
		fmt.Fprintf(&b, "etcd_network_peer_sent_bytes_total{To=%q} %d\n", strconv.FormatUint(p.ID, 16), p.BytesSent)
	}
	b.WriteString("# HELP etcd_network_peer_received_bytes_total The total number of bytes received from peers.\n# TYPE etcd_network_peer_received_bytes_total counter\n")
	for _, p := range stats.Peers {
		fmt.Fprintf(&b, "etcd_network_peer_received_bytes_total{From=%q} %d\n", strconv.FormatUint(p.ID, 16), p.BytesReceived)
	}
	b.WriteString("# HELP etcd_network_peer_sent_failures_total The total number of send failures from peers.\n# TYPE etcd_network_peer_sent_failures_total counter\n")
	for _, p := range stats.Peers {
		fmt.Fprintf(&b, "etcd_network_peer_sent_failures_total{To=%q} %d\n", strconv.FormatUint(p.ID, 16), p.MessagesDropped)
	}
	counter(&b, "noded_peer_inbound_dropped_total", "Raft messages from peers dropped because the member loop's queue was full.", mt.inboundDropped.Load())
	counter(&b, "noded_watchers_paused_total", "Watchers paused because their stream's client read too slowly (each resumes from history).", mt.watchersDropped.Load())
	gauge(&b, "go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))

	mt.grpcMu.Lock()
	started := make([]grpcMethod, 0, len(mt.grpcStarted))
	for k := range mt.grpcStarted {
		started = append(started, k)
	}
	handled := make([]grpcOutcome, 0, len(mt.grpcHandled))
	for k := range mt.grpcHandled {
		handled = append(handled, k)
	}
	slices.SortFunc(started, func(a, b grpcMethod) int { return strings.Compare(a.service+a.method, b.service+b.method) })
	slices.SortFunc(handled, func(a, b grpcOutcome) int {
		return strings.Compare(a.service+a.method+a.code, b.service+b.method+b.code)
	})
	b.WriteString("# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter\n")
	for _, k := range started {
		fmt.Fprintf(&b, "grpc_server_started_total{grpc_method=%q,grpc_service=%q,grpc_type=%q} %d\n", k.method, k.service, k.kind, mt.grpcStarted[k])
	}
	b.WriteString("# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter\n")
	for _, k := range handled {
		fmt.Fprintf(&b, "grpc_server_handled_total{grpc_code=%q,grpc_method=%q,grpc_service=%q,grpc_type=%q} %d\n", k.code, k.method, k.service, k.kind, mt.grpcHandled[k])
	}
	mt.grpcMu.Unlock()
	io.WriteString(w, b.String())
}

// countKeys counts the live keys on the frozen view the loop published,
// walked here, off the loop.
func countKeys(view *kvsm.View) (int64, bool) {
	resp, err := view.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	if err != nil {
		return 0, false
	}
	return resp.GetCount(), true
}

func (m *Member) quotaBytes() int64 {
	if m.cfg.QuotaBackendBytes > 0 {
		return m.cfg.QuotaBackendBytes
	}
	return 2 << 30
}
