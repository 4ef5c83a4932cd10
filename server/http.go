package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	stdnet "net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	electiongw "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb/gw"
	lockgw "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	v2 "github.com/noded/noded/server/v2"
)

// healthTimeout bounds the read /health and /readyz make (etcd: its
// request timeout).
const healthTimeout = 5 * time.Second

// dialInProcess connects to the member's own gRPC server through the
// in-memory listener; the connection closes when ctx ends.
func dialInProcess(ctx context.Context, gatewayConn *bufconn.Listener) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///noded-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (stdnet.Conn, error) { return gatewayConn.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1), grpc.MaxCallSendMsgSize(1<<31-1)),
	)
	if err != nil {
		return nil, err
	}
	go func() { <-ctx.Done(); conn.Close() }()
	return conn, nil
}

func newHTTPHandler(ctx context.Context, m *Member, gatewayConn *bufconn.Listener) (http.Handler, error) {
	conn, err := dialInProcess(ctx, gatewayConn)
	if err != nil {
		return nil, err
	}
	gwmux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &compactJSONPb{&runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}}),
		runtime.WithErrorHandler(gatewayError),
		runtime.WithRoutingErrorHandler(gatewayRoutingError),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterKVHandler, gw.RegisterWatchHandler, gw.RegisterLeaseHandler,
		gw.RegisterClusterHandler, gw.RegisterMaintenanceHandler, gw.RegisterAuthHandler,
		lockgw.RegisterLockHandler, electiongw.RegisterElectionHandler,
	} {
		if err := register(ctx, gwmux, conn); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	m.handleMetrics(mux)
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) { writeVersion(w) })
	v2.NewHandler(v2.Config{Conn: conn, Local: v2Local{m}, EnableKeys: m.cfg.EnableV2, Logger: m.lg.Named("v2")}).Register(mux)
	if m.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if m.cfg.DisableGateway {
		return mux, nil
	}
	mux.Handle("/v3/", gwmux)
	mux.HandleFunc("/v3beta/", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/v3/" + strings.TrimPrefix(r.URL.Path, "/v3beta/")
		r2.URL.RawPath = ""
		gwmux.ServeHTTP(w, r2)
	})
	return mux, nil
}

// metricsHandler serves --listen-metrics-urls: /metrics and the health
// endpoints, as etcd does there.
func (m *Member) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	m.handleMetrics(mux)
	return mux
}

// handleMetrics registers /metrics and the health endpoints on mux.
func (m *Member) handleMetrics(mux *http.ServeMux) {
	mux.Handle("/metrics", m.metricsEndpoint())
	mux.HandleFunc("/health", m.serveHealth)
	mux.HandleFunc("/livez", m.serveChecks("livez", m.livezChecks()))
	mux.HandleFunc("/livez/", m.serveChecks("livez", m.livezChecks()))
	mux.HandleFunc("/readyz", m.serveChecks("readyz", m.readyzChecks()))
	mux.HandleFunc("/readyz/", m.serveChecks("readyz", m.readyzChecks()))
}

// compactJSONPb is the gateway's JSON marshaler without the whitespace
// protojson inserts at random (it does so on purpose, so that nobody
// relies on its output bytes); etcd's gateway output has none.
type compactJSONPb struct{ *runtime.JSONPb }

func (c *compactJSONPb) Marshal(v any) ([]byte, error) {
	b, err := c.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b, nil
	}
	return out.Bytes(), nil
}

// gatewayError writes an error as etcd 3.5's gateway did:
// {"error":..,"code":..,"message":..} with the HTTP status of the code.
func gatewayError(ctx context.Context, mux *runtime.ServeMux, marshaler runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	s := status.Convert(err)
	body, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}{s.Message(), int32(s.Code()), s.Message()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(s.Code()))
	w.Write(body)
}

// gatewayRoutingError answers an unknown /v3 path or method as etcd's
// gateway does: plain-text 404 Not Found or 405 Method Not Allowed.
func gatewayRoutingError(ctx context.Context, mux *runtime.ServeMux, marshaler runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus == http.StatusNotImplemented {
		httpStatus = http.StatusMethodNotAllowed
	}
	http.Error(w, http.StatusText(httpStatus), httpStatus)
}

func writeVersion(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"etcdserver":%q,"etcdcluster":%q}`, Version, ClusterVersion)
}

// serveHealth is etcd's /health: {"health":"true","reason":""}, or
// "false" with the reason and status 503 when an alarm is raised (unless
// excluded), there is no leader, or a read fails.
func (m *Member) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	excluded := map[string]bool{}
	for _, a := range r.URL.Query()["exclude"] {
		excluded[strings.ToUpper(a)] = true
	}
	serializable := r.URL.Query().Get("serializable") == "true"
	healthy, reason := m.checkHealth(r.Context(), excluded, serializable)
	if healthy {
		m.metrics.healthSuccess.Add(1)
	} else {
		m.metrics.healthFailure.Add(1)
	}
	body, _ := json.Marshal(struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}{strconv.FormatBool(healthy), reason})
	if !healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(body)
}

func (m *Member) checkHealth(ctx context.Context, excludedAlarms map[string]bool, serializable bool) (bool, string) {
	st := m.state.Load()
	for _, a := range st.alarms {
		name := a.GetAlarm().String()
		if !excludedAlarms[name] {
			return false, "ALARM " + name
		}
	}
	if !serializable && !st.hasLeader() {
		return false, "RAFT NO LEADER"
	}
	if err := m.probeRead(ctx, serializable); err != nil {
		return false, "RANGE ERROR:" + err.Error()
	}
	return true, ""
}

func (m *Member) probeRead(ctx context.Context, serializable bool) error {
	ctx, cancel := context.WithTimeout(internalCall(ctx), healthTimeout)
	defer cancel()
	_, err := m.do(ctx, &pb.RangeRequest{Key: []byte("health"), KeysOnly: true, Limit: 1, Serializable: serializable})
	if err != nil {
		return fmt.Errorf("%s", status.Convert(err).Message())
	}
	return nil
}

// healthCheck is one named check of /livez or /readyz.
type healthCheck struct {
	name  string
	check func(ctx context.Context) error
}

func (m *Member) livezChecks() []healthCheck {
	return []healthCheck{{"serializable_read", func(ctx context.Context) error { return m.probeRead(ctx, true) }}}
}

func (m *Member) readyzChecks() []healthCheck {
	return []healthCheck{
		{"data_corruption", func(context.Context) error {
			for _, a := range m.state.Load().alarms {
				if a.GetAlarm() == pb.AlarmType_CORRUPT {
					return fmt.Errorf("alarm CORRUPT raised by member %x", a.GetMemberID())
				}
			}
			return nil
		}},
		{"serializable_read", func(ctx context.Context) error { return m.probeRead(ctx, true) }},
		{"linearizable_read", func(ctx context.Context) error { return m.probeRead(ctx, false) }},
		{"non_learner", func(context.Context) error {
			if m.state.Load().status.IsLearner {
				return fmt.Errorf("member is a learner")
			}
			return nil
		}},
	}
}

// serveChecks answers /livez and /readyz as etcd 3.6 does (the Kubernetes
// healthz format): "ok", or with ?verbose one line per check; 503 and
// "[-]name failed: reason" when any check fails. /readyz/<name> runs one
// check; ?exclude=<name> skips one.
func (m *Member) serveChecks(path string, checks []healthCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		if one := strings.TrimPrefix(r.URL.Path, "/"+path+"/"); one != r.URL.Path && one != "" {
			i := slices.IndexFunc(checks, func(c healthCheck) bool { return c.name == one })
			if i < 0 {
				http.NotFound(w, r)
				return
			}
			if err := checks[i].check(r.Context()); err != nil {
				http.Error(w, fmt.Sprintf("[-]%s failed: %v", one, err), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "ok")
			return
		}
		q := r.URL.Query()
		_, verbose := q["verbose"]
		excluded := q["exclude"]
		var out strings.Builder
		failed := false
		for _, c := range checks {
			if slices.Contains(excluded, c.name) {
				fmt.Fprintf(&out, "[+]%s excluded: ok\n", c.name)
				continue
			}
			if err := c.check(r.Context()); err != nil {
				failed = true
				fmt.Fprintf(&out, "[-]%s failed: %v\n", c.name, err)
				continue
			}
			fmt.Fprintf(&out, "[+]%s ok\n", c.name)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		switch {
		case failed:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "%s%s check failed\n", out.String(), path)
		case verbose:
			fmt.Fprintf(w, "%s%s check passed\n", out.String(), path)
		default:
			fmt.Fprint(w, "ok")
		}
	}
}
