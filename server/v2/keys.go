// Package v2 serves etcd 3.4's v2 HTTP API on a client port: the keys API
// (/v2/keys), the members API (/v2/members), /v2/machines and /v2/stats.
// It holds no state: keys requests are translated by package v2store into
// v3 requests sent over a gRPC connection (to the member's own gRPC server
// in a member, to the cluster in a proxy), members requests become the
// Cluster service's calls, and what only a member knows (its stats, its
// raft index) comes through the Local interface.
//
// v2 may import the standard library, the etcd API and gRPC modules, zap,
// and server/v2/v2store; it never imports package server, which wires it.
package v2

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/server/v2/v2store"
)

// Local is what a member tells about itself; a proxy has none.
type Local interface {
	ClusterID() uint64
	// RaftIndex is the member's committed raft index (X-Raft-Index).
	RaftIndex() uint64
	SelfStats() SelfStats
	// LeaderStats is the leader's view of its followers; ok is false on a
	// member that does not lead.
	LeaderStats() (stats LeaderStats, ok bool)
	// Removed reports whether the member ID was removed from the cluster
	// (IDs are never reused).
	Removed(ctx context.Context, id uint64) bool
}

// Config configures a Handler.
type Config struct {
	// Conn reaches the etcd v3 gRPC services the API is translated to.
	Conn grpc.ClientConnInterface
	// Local is the serving member (nil in a proxy).
	Local Local
	// EnableKeys serves /v2/keys and the rest of the v2 API (etcd's
	// --enable-v2); without it only GET /v2/members is served.
	EnableKeys bool
	Logger     *zap.Logger
	// Now is the wall clock for TTLs (time.Now when nil).
	Now func() time.Time
	// RequestTimeout bounds one non-waiting request (5s when zero, etcd's
	// v2 request timeout).
	RequestTimeout time.Duration
}

// Handler serves the v2 API.
type Handler struct {
	cfg     Config
	kv      pb.KVClient
	lease   pb.LeaseClient
	watch   pb.WatchClient
	cluster pb.ClusterClient
	stats   storeStats
	mux     *http.ServeMux
}

const defaultRequestTimeout = 5 * time.Second

// NewHandler returns the v2 API handler.
func NewHandler(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	h := &Handler{
		cfg:     cfg,
		kv:      pb.NewKVClient(cfg.Conn),
		lease:   pb.NewLeaseClient(cfg.Conn),
		watch:   pb.NewWatchClient(cfg.Conn),
		cluster: pb.NewClusterClient(cfg.Conn),
		mux:     http.NewServeMux(),
	}
	h.mux.HandleFunc("/v2/members", h.serveMembers)
	if cfg.EnableKeys {
		h.mux.HandleFunc("/v2/keys", h.serveKeys)
		h.mux.HandleFunc("/v2/keys/", h.serveKeys)
		h.mux.HandleFunc("/v2/members/", h.serveMember)
		h.mux.HandleFunc("/v2/machines", h.serveMachines)
		h.mux.HandleFunc("/v2/stats/self", h.serveSelfStats)
		h.mux.HandleFunc("/v2/stats/leader", h.serveLeaderStats)
		h.mux.HandleFunc("/v2/stats/store", h.serveStoreStats)
	}
	return h
}

// Register puts the handler's paths on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("/v2/", h)
	mux.Handle("/v2/members", h)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// etcd's v2 API answers browsers' cross-origin requests.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
	w.Header().Set("Access-Control-Allow-Headers", "accept, content-type, authorization")
	if r.Method == http.MethodOptions {
		return
	}
	h.mux.ServeHTTP(w, r)
}

func allowMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ","))
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	return false
}

func (h *Handler) clusterHeader(w http.ResponseWriter) {
	if h.cfg.Local != nil {
		w.Header().Set("X-Etcd-Cluster-ID", strconv.FormatUint(h.cfg.Local.ClusterID(), 16))
	}
}

// serveKeys is /v2/keys.
func (h *Handler) serveKeys(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete) {
		return
	}
	h.clusterHeader(w)
	if err := r.ParseForm(); err != nil {
		writeV2Error(w, v2store.NewError(v2store.EcodeInvalidForm, err.Error(), 0))
		return
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	req, perr := v2store.ParseRequest(method, strings.TrimPrefix(r.URL.Path, "/v2/keys"), r.Form)
	if perr != nil {
		writeV2Error(w, perr)
		return
	}
	if req.Wait {
		h.serveWait(w, r, req)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	res := h.run(ctx, req)
	h.stats.count(req, res)
	if res.Err != nil {
		if res.Err.Index == 0 {
			res.Err.Index = res.Index
		}
		writeV2Error(w, res.Err)
		return
	}
	ev := res.Event
	if req.NoValueOnSuccess && ev.Action != v2store.ActionGet && ev.Action != v2store.ActionDelete && ev.Action != v2store.ActionCompareAndDelete {
		ev = &v2store.Event{Action: ev.Action}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Etcd-Index", strconv.FormatUint(res.Index, 10))
	h.raftHeaders(w, res.Term)
	if res.Event.IsCreated() {
		w.WriteHeader(http.StatusCreated)
	}
	if r.Method == http.MethodHead {
		return
	}
	json.NewEncoder(w).Encode(ev)
}

func (h *Handler) raftHeaders(w http.ResponseWriter, term uint64) {
	if h.cfg.Local != nil {
		w.Header().Set("X-Raft-Index", strconv.FormatUint(h.cfg.Local.RaftIndex(), 10))
	}
	w.Header().Set("X-Raft-Term", strconv.FormatUint(term, 10))
}

// run drives an Op to its result.
func (h *Handler) run(ctx context.Context, req *v2store.Request) *v2store.Result {
	op := v2store.NewOp(req)
	next, res := op.Start()
	for res == nil {
		resp, err := h.send(ctx, next)
		next, res = op.Step(resp, err, h.cfg.Now())
	}
	return res
}

func (h *Handler) send(ctx context.Context, req proto.Message) (proto.Message, error) {
	switch r := req.(type) {
	case *pb.TxnRequest:
		return h.kv.Txn(ctx, r)
	case *pb.LeaseGrantRequest:
		return h.lease.LeaseGrant(ctx, r)
	}
	return nil, fmt.Errorf("v2: cannot send %T", req)
}

// serveWait is a GET with wait=true: a long poll answered with the first
// event the request selects (every one, with stream=true).
func (h *Handler) serveWait(w http.ResponseWriter, r *http.Request, req *v2store.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	watcher := v2store.NewWatcher(req)
	stream, err := h.watch.Watch(ctx)
	if err == nil {
		err = stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: watcher.CreateRequest()}})
	}
	var created *pb.WatchResponse
	if err == nil {
		created, err = stream.Recv()
	}
	if err != nil {
		writeV2Error(w, v2store.FromV3Error(err))
		return
	}
	start, werr := watcher.Created(created)
	if werr != nil {
		writeV2Error(w, werr)
		return
	}
	h.stats.watchers.Add(1)
	defer h.stats.watchers.Add(-1)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Etcd-Index", strconv.FormatUint(start, 10))
	h.raftHeaders(w, created.GetHeader().GetRaftTerm())
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		// Headers go out at once, as etcd's long poll does.
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return // the client left, or the member stopped: the poll ends
		}
		evs, werr := watcher.Events(resp, h.cfg.Now())
		if werr != nil {
			// Headers are out: etcd ends the poll with no event.
			return
		}
		for _, ev := range evs {
			if enc.Encode(ev) != nil {
				return
			}
			if !req.Stream {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

func writeV2Error(w http.ResponseWriter, e *v2store.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("X-Etcd-Index", strconv.FormatUint(e.Index, 10))
	w.WriteHeader(e.StatusCode())
	b, _ := json.Marshal(e)
	w.Write(append(b, '\n'))
}

// httpError is etcd's {"message": ...} error of the members and stats API.
func httpError(w http.ResponseWriter, code int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{message})
	w.Write(b)
}

// storeStats are /v2/stats/store's counters: the v2 requests this member
// served, by outcome.
type storeStats struct {
	getsSuccess, getsFail                         atomic.Uint64
	setsSuccess, setsFail                         atomic.Uint64
	deleteSuccess, deleteFail                     atomic.Uint64
	updateSuccess, updateFail                     atomic.Uint64
	createSuccess, createFail                     atomic.Uint64
	compareAndSwapSuccess, compareAndSwapFail     atomic.Uint64
	compareAndDeleteSuccess, compareAndDeleteFail atomic.Uint64
	watchers                                      atomic.Int64
}

func (s *storeStats) count(req *v2store.Request, res *v2store.Result) {
	ok := res.Err == nil
	pick := func(success, fail *atomic.Uint64) {
		if ok {
			success.Add(1)
		} else {
			fail.Add(1)
		}
	}
	switch {
	case req.Method == v2store.MethodGet:
		pick(&s.getsSuccess, &s.getsFail)
	case req.Method == v2store.MethodPost || (req.PrevExist != nil && !*req.PrevExist):
		pick(&s.createSuccess, &s.createFail)
	case req.Method == v2store.MethodDelete && (req.PrevIndex > 0 || req.PrevValue != ""):
		pick(&s.compareAndDeleteSuccess, &s.compareAndDeleteFail)
	case req.Method == v2store.MethodDelete:
		pick(&s.deleteSuccess, &s.deleteFail)
	case req.PrevIndex > 0 || req.PrevValue != "":
		pick(&s.compareAndSwapSuccess, &s.compareAndSwapFail)
	case req.PrevExist != nil:
		pick(&s.updateSuccess, &s.updateFail)
	default:
		pick(&s.setsSuccess, &s.setsFail)
	}
}

func (h *Handler) serveStoreStats(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	s := &h.stats
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		GetsSuccess             uint64 `json:"getsSuccess"`
		GetsFail                uint64 `json:"getsFail"`
		SetsSuccess             uint64 `json:"setsSuccess"`
		SetsFail                uint64 `json:"setsFail"`
		DeleteSuccess           uint64 `json:"deleteSuccess"`
		DeleteFail              uint64 `json:"deleteFail"`
		UpdateSuccess           uint64 `json:"updateSuccess"`
		UpdateFail              uint64 `json:"updateFail"`
		CreateSuccess           uint64 `json:"createSuccess"`
		CreateFail              uint64 `json:"createFail"`
		CompareAndSwapSuccess   uint64 `json:"compareAndSwapSuccess"`
		CompareAndSwapFail      uint64 `json:"compareAndSwapFail"`
		CompareAndDeleteSuccess uint64 `json:"compareAndDeleteSuccess"`
		CompareAndDeleteFail    uint64 `json:"compareAndDeleteFail"`
		Watchers                int64  `json:"watchers"`
	}{
		s.getsSuccess.Load(), s.getsFail.Load(), s.setsSuccess.Load(), s.setsFail.Load(),
		s.deleteSuccess.Load(), s.deleteFail.Load(), s.updateSuccess.Load(), s.updateFail.Load(),
		s.createSuccess.Load(), s.createFail.Load(), s.compareAndSwapSuccess.Load(), s.compareAndSwapFail.Load(),
		s.compareAndDeleteSuccess.Load(), s.compareAndDeleteFail.Load(), s.watchers.Load(),
	})
}

// readJSON decodes a members request body as etcd does: JSON only.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		httpError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Bad Content-Type %s, accept application/json", ct))
		return false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}
