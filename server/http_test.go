package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	stdnet "net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/server/etcddata"
)

func httpDo(t *testing.T, method, url, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: waitMax}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// TestHTTPEndpoints checks the HTTP side of the client port: etcd's
// /health, /readyz, /livez, /version and /v2/members bodies and codes,
// and the /v3 JSON gateway (base64 keys and values, 64-bit integers as
// strings, proto field names, etcd's error body), /v3beta included.
func TestHTTPEndpoints(t *testing.T) {
	tms := startCluster(t, 1)
	base := tms[0].clientURL
	m := tms[0].m

	code, _, body := httpDo(t, "GET", base+"/health", "")
	if code != 200 || body != `{"health":"true","reason":""}` {
		t.Fatalf("/health: %d %q", code, body)
	}
	code, _, body = httpDo(t, "GET", base+"/health?serializable=true", "")
	if code != 200 || body != `{"health":"true","reason":""}` {
		t.Fatalf("/health?serializable=true: %d %q", code, body)
	}
	if code, _, _ = httpDo(t, "POST", base+"/health", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /health: %d, want 405", code)
	}
	for _, path := range []string{"/readyz", "/livez", "/readyz/linearizable_read"} {
		if code, _, body = httpDo(t, "GET", base+path, ""); code != 200 || body != "ok" {
			t.Fatalf("%s: %d %q", path, code, body)
		}
	}
	code, _, body = httpDo(t, "GET", base+"/readyz?verbose&exclude=non_learner", "")
	want := "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner excluded: ok\nreadyz check passed\n"
	if code != 200 || body != want {
		t.Fatalf("/readyz?verbose: %d %q, want %q", code, body, want)
	}
	code, hdr, body := httpDo(t, "GET", base+"/version", "")
	if code != 200 || body != fmt.Sprintf(`{"etcdserver":"%s","etcdcluster":"%s"}`, Version, ClusterVersion) || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/version: %d %q %q", code, body, hdr.Get("Content-Type"))
	}
	code, hdr, body = httpDo(t, "GET", base+"/v2/members", "")
	wantMembers := fmt.Sprintf(`{"members":[{"id":"%x","name":"m0","peerURLs":["%s"],"clientURLs":["%s"]}]}`+"\n", m.ID(), tms[0].peerURL, tms[0].clientURL)
	if code != 200 || body != wantMembers || hdr.Get("X-Etcd-Cluster-Id") != strconv.FormatUint(m.ClusterID(), 16) {
		t.Fatalf("/v2/members: %d %q (cluster %q), want %q", code, body, hdr.Get("X-Etcd-Cluster-Id"), wantMembers)
	}

	// The gateway: "foo"/"bar" in base64.
	code, _, body = httpDo(t, "POST", base+"/v3/kv/put", `{"key":"Zm9v","value":"YmFy"}`)
	wantPut := fmt.Sprintf(`{"header":{"cluster_id":"%d","member_id":"%d","revision":"2","raft_term":"2"}}`, m.ClusterID(), m.ID())
	if code != 200 || body != wantPut {
		t.Fatalf("/v3/kv/put: %d %q, want %q", code, body, wantPut)
	}
	code, _, body = httpDo(t, "POST", base+"/v3beta/kv/range", `{"key":"Zm9v"}`)
	wantRange := fmt.Sprintf(`{"header":{"cluster_id":"%d","member_id":"%d","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}`, m.ClusterID(), m.ID())
	if code != 200 || body != wantRange {
		t.Fatalf("/v3beta/kv/range: %d %q, want %q", code, body, wantRange)
	}
	code, _, body = httpDo(t, "POST", base+"/v3/kv/range", `{"key":""}`)
	if code != 400 || body != `{"error":"etcdserver: key is not provided","code":3,"message":"etcdserver: key is not provided"}` {
		t.Fatalf("/v3/kv/range with an empty key: %d %q", code, body)
	}
	if code, _, body = httpDo(t, "POST", base+"/v3/kv/nope", `{}`); code != 404 || body != "Not Found\n" {
		t.Fatalf("unknown gateway path: %d %q, want etcd's 404 Not Found", code, body)
	}
	if code, _, body = httpDo(t, "GET", base+"/v3/kv/range", ""); code != 405 || body != "Method Not Allowed\n" {
		t.Fatalf("GET on a POST gateway path: %d %q, want etcd's 405 Method Not Allowed", code, body)
	}
	code, _, body = httpDo(t, "POST", base+"/v3/maintenance/status", `{}`)
	var status struct {
		Version string `json:"version"`
		Leader  string `json:"leader"`
	}
	if err := json.Unmarshal([]byte(body), &status); code != 200 || err != nil || status.Version != Version || status.Leader != strconv.FormatUint(m.ID(), 10) {
		t.Fatalf("/v3/maintenance/status: %d %q", code, body)
	}
}

// promLine is one sample line of the Prometheus text format.
var promLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$`)

// parseMetrics parses Prometheus text: every line a comment (# HELP, #
// TYPE) or a sample, every sample's family typed before it. It returns
// the samples by name with labels.
func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	typed := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || !regexp.MustCompile(`^(counter|gauge|histogram|summary|untyped)$`).MatchString(f[1]) {
				t.Fatalf("bad TYPE line %q", line)
			}
			typed[f[0]] = f[1]
			continue
		}
		mm := promLine.FindStringSubmatch(line)
		if mm == nil {
			t.Fatalf("not a Prometheus sample line: %q", line)
		}
		family := mm[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(family, suffix); ok && (typed[base] == "histogram" || typed[base] == "summary") {
				family = base
			}
		}
		if typed[family] == "" {
			t.Fatalf("sample %q before its TYPE line", line)
		}
		v, err := strconv.ParseFloat(mm[4], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		out[mm[1]+mm[2]] = v
	}
	return out
}

// TestMetrics scrapes /metrics after some traffic and checks it parses as
// Prometheus text and says what happened.
func TestMetrics(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	for i := range 5 {
		if _, err := c.Put(ctx, fmt.Sprint("m", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Get(ctx, ""); err == nil {
		t.Fatal("empty key accepted")
	}
	code, hdr, body := httpDo(t, "GET", tms[0].clientURL+"/metrics", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %q", code, hdr.Get("Content-Type"))
	}
	samples := parseMetrics(t, body)
	for name, check := range map[string]func(float64) bool{
		"etcd_server_has_leader":                                func(v float64) bool { return v == 1 },
		"etcd_server_is_leader":                                 func(v float64) bool { return v == 1 },
		"etcd_server_leader_changes_seen_total":                 func(v float64) bool { return v >= 1 },
		"etcd_server_proposals_committed_total":                 func(v float64) bool { return v >= 6 },
		"etcd_server_proposals_applied_total":                   func(v float64) bool { return v >= 6 },
		"etcd_server_proposals_pending":                         func(v float64) bool { return v == 0 },
		"etcd_mvcc_db_total_size_in_bytes":                      func(v float64) bool { return v > 0 },
		"etcd_disk_wal_fsync_duration_seconds_count":            func(v float64) bool { return v >= 5 },
		`etcd_server_version{server_version="` + Version + `"}`: func(v float64) bool { return v == 1 },
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}`:                func(v float64) bool { return v == 5 },
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}`: func(v float64) bool { return v == 1 },
	} {
		v, ok := samples[name]
		if !ok || !check(v) {
			t.Errorf("metric %s = %v (present %t)", name, v, ok)
		}
	}
	if samples[`etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}`] != samples["etcd_disk_wal_fsync_duration_seconds_count"] {
		t.Errorf("the +Inf bucket does not hold every observation")
	}
}

// TestQuotaNoSpace fills a small --quota-backend-bytes: writes fail with
// etcd's NOSPACE error, the alarm is raised, /health reports it (unless
// excluded), reads and deletes go on.
func TestQuotaNoSpace(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.QuotaBackendBytes = 64 * 1024
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Put(ctx, fmt.Sprint("q", i), strings.Repeat("x", 4096))
	}
	if err != rpctypes.ErrNoSpace {
		t.Fatalf("writing past the quota: %v, want %v", err, rpctypes.ErrNoSpace)
	}
	waitFor(t, "the NOSPACE alarm", func() bool {
		alarms, err := c.AlarmList(ctx)
		return err == nil && len(alarms.Alarms) == 1 && alarms.Alarms[0].Alarm.String() == "NOSPACE"
	})
	code, _, body := httpDo(t, "GET", tms[0].clientURL+"/health", "")
	if code != 503 || body != `{"health":"false","reason":"ALARM NOSPACE"}` {
		t.Fatalf("/health under NOSPACE: %d %q", code, body)
	}
	if code, _, body = httpDo(t, "GET", tms[0].clientURL+"/health?exclude=NOSPACE", ""); code != 200 {
		t.Fatalf("/health?exclude=NOSPACE: %d %q", code, body)
	}
	if _, err := c.Get(ctx, "q", clientv3.WithPrefix()); err != nil {
		t.Fatalf("read under NOSPACE: %v", err)
	}
	if _, err := c.Delete(ctx, "q", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete under NOSPACE: %v", err)
	}
}

// TestSnapshotStream reads Maintenance.Snapshot through the etcd client:
// its size passes the client's check (whole 512-byte pages plus a sha256),
// the last 32 bytes are the sha256 of the rest, and the rest is etcd's
// database holding every key.
func TestSnapshotStream(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	for i := range 100 {
		if _, err := c.Put(ctx, fmt.Sprint("s", i), strings.Repeat("y", 1000)); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%512 != sha256.Size || len(data) < 100*1000 {
		t.Fatalf("snapshot of %d bytes: want whole 512-byte pages plus 32, holding 100 KB of values", len(data))
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); string(got[:]) != string(sum) {
		t.Fatal("the snapshot's trailing sha256 does not match its contents")
	}
	// It is etcd's database: read back, it holds every key.
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, store, err := etcddata.ReadSnapshot(path, etcdformat.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Format != "etcd" || st.Status.TotalKey != 100 || store.Rev() != 101 || len(st.Members) != 1 {
		t.Fatalf("snapshot read back as %s with %d keys at revision %d and %d members, want etcd's format, 100 keys at 101, 1 member",
			st.Format, st.Status.TotalKey, store.Rev(), len(st.Members))
	}
}

// TestAutoCompactionRevision runs revision-mode auto compaction with a
// short interval: the leader compacts to the current revision minus the
// retention.
func TestAutoCompactionRevision(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.AutoCompactionMode = CompactionModeRevision
	tms[0].cfg.AutoCompactionRetention = "5"
	tms[0].cfg.RevisionCompactionInterval = 50 * time.Millisecond
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	var last int64
	for i := range 30 {
		put, err := c.Put(ctx, "ac", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = put.Header.Revision
	}
	waitFor(t, "auto compaction to current-5", func() bool {
		return tms[0].m.state.Load().status.CompactRevision == last-5
	})
	if _, err := c.Get(ctx, "ac", clientv3.WithRev(last-6)); err != rpctypes.ErrCompacted {
		t.Fatalf("read below the auto compaction: %v, want %v", err, rpctypes.ErrCompacted)
	}
}

// TestLeases grants, attaches, keeps alive, lists, revokes and lets a
// lease expire.
func TestLeases(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	short, err := c.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "expiring", "v", clientv3.WithLease(short.ID)); err != nil {
		t.Fatal(err)
	}
	kept, err := c.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "kept", "v", clientv3.WithLease(kept.ID)); err != nil {
		t.Fatal(err)
	}
	kaCh, err := c.KeepAlive(ctx, kept.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unrenewed lease to expire and take its key", func() bool {
		get, err := c.Get(ctx, "expiring")
		return err == nil && len(get.Kvs) == 0
	})
	start := time.Now()
	for time.Since(start) < 3*time.Second { // past the kept lease's TTL
		select {
		case ka, ok := <-kaCh:
			if !ok {
				t.Fatal("keepalive channel closed")
			}
			if ka.TTL != 2 {
				t.Fatalf("keepalive TTL %d, want 2", ka.TTL)
			}
		case <-time.After(waitMax):
			t.Fatal("no keepalive response")
		}
	}
	if get, err := c.Get(ctx, "kept"); err != nil || len(get.Kvs) != 1 {
		t.Fatalf("kept-alive lease's key: %v %v", get, err)
	}
	leases, err := c.Leases(ctx)
	if err != nil || len(leases.Leases) != 1 || leases.Leases[0].ID != kept.ID {
		t.Fatalf("leases: %v %v, want only %x", leases, err, kept.ID)
	}
	ttl, err := c.TimeToLive(ctx, kept.ID, clientv3.WithAttachedKeys())
	if err != nil || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "kept" {
		t.Fatalf("time-to-live with keys: %v %v", ttl, err)
	}
	if _, err := c.Revoke(ctx, kept.ID); err != nil {
		t.Fatal(err)
	}
	if get, err := c.Get(ctx, "kept"); err != nil || len(get.Kvs) != 0 {
		t.Fatalf("revoked lease's key: %v %v", get, err)
	}
	if _, err := c.Revoke(ctx, kept.ID); err != rpctypes.ErrLeaseNotFound {
		t.Fatalf("revoking again: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if ttl, err := c.TimeToLive(ctx, kept.ID); err != nil || ttl.TTL != -1 {
		t.Fatalf("time-to-live of a revoked lease: %v %v, want TTL -1", ttl, err)
	}
}

// TestAutoCompactionPeriodic runs periodic auto compaction with a short
// retention: the leader compacts to a revision the store had at least the
// retention ago, and never past what was current then.
func TestAutoCompactionPeriodic(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.AutoCompactionMode = CompactionModePeriodic
	tms[0].cfg.AutoCompactionRetention = "300ms"
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	type written struct {
		at  time.Time
		rev int64
	}
	var history []written
	waitFor(t, "a periodic compaction", func() bool {
		put, err := c.Put(ctx, "pc", time.Now().String())
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, written{time.Now(), put.Header.Revision})
		return tms[0].m.state.Load().status.CompactRevision > 0
	})
	compacted := tms[0].m.state.Load().status.CompactRevision
	// Revisions written well within the retention before the compaction
	// was observed must still be readable (100 ms of margin for the time
	// between the compaction and this test seeing it).
	last := history[len(history)-1]
	for _, w := range history {
		if last.at.Sub(w.at) < 200*time.Millisecond && w.rev < compacted {
			t.Fatalf("compacted to %d, past revision %d written %v before the last write (retention 300ms)", compacted, w.rev, last.at.Sub(w.at))
		}
	}
}

// TestGatewayWatch streams a watch through the JSON gateway: newline
// separated {"result":..} objects, the created reply first, then events.
func TestGatewayWatch(t *testing.T) {
	tms := startCluster(t, 1)
	ctx := testContext(t)
	req, err := http.NewRequestWithContext(ctx, "POST", tms[0].clientURL+"/v3/watch", strings.NewReader(`{"create_request":{"key":"Zm9v"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"created":true`) || !strings.HasPrefix(lines.Text(), `{"result":{"header":`) {
		t.Fatalf("first line of a gateway watch: %q %v", lines.Text(), lines.Err())
	}
	if _, err := newClient(t, tms[0]).Put(ctx, "foo", "bar"); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || !strings.Contains(lines.Text(), `"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}]`) {
		t.Fatalf("event line of a gateway watch: %q %v", lines.Text(), lines.Err())
	}
}

// TestMetricsListener: --listen-metrics-urls serves /metrics and the
// health endpoints, and nothing else.
func TestMetricsListener(t *testing.T) {
	tms := newTestConfigs(t, 1)
	ml := listenLoopback(t)
	tms[0].cfg.MetricsListeners = []stdnet.Listener{ml}
	tms[0].start(t)
	waitLeader(t, tms)
	base := "http://" + ml.Addr().String()
	if code, _, body := httpDo(t, "GET", base+"/health", ""); code != 200 || body != `{"health":"true","reason":""}` {
		t.Fatalf("/health on the metrics URL: %d %q", code, body)
	}
	code, _, body := httpDo(t, "GET", base+"/metrics", "")
	if code != 200 || parseMetrics(t, body)["etcd_server_has_leader"] != 1 {
		t.Fatalf("/metrics on the metrics URL: %d", code)
	}
	if code, _, _ := httpDo(t, "POST", base+"/v3/kv/range", `{"key":"Zm9v"}`); code != 404 {
		t.Fatalf("the gateway on the metrics URL: %d, want 404", code)
	}
}

// --enable-pprof serves Go's profiles on the client URL, as etcd does; off
// by default.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		tms := newTestConfigs(t, 1)
		tms[0].cfg.EnablePprof = enabled
		tms[0].start(t)
		waitLeader(t, tms)
		resp, err := http.Get(tms[0].clientURL + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.StatusCode == http.StatusOK, enabled; got != want {
			t.Errorf("--enable-pprof=%t: GET /debug/pprof/ answered %d", enabled, resp.StatusCode)
		}
		tms[0].m.Stop()
	}
}
