package v2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Member is a member as etcd's v2 members API shows it.
type Member struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
}

func memberOf(m *pb.Member) Member {
	return Member{ID: strconv.FormatUint(m.GetID(), 16), Name: m.GetName(), PeerURLs: nonNil(m.GetPeerURLs()), ClientURLs: nonNil(m.GetClientURLs())}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (h *Handler) memberList(ctx context.Context) ([]*pb.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.RequestTimeout)
	defer cancel()
	resp, err := h.cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: false})
	if err != nil {
		return nil, err
	}
	return resp.GetMembers(), nil
}

// serveMembers is GET (list) and POST (add) /v2/members.
func (h *Handler) serveMembers(w http.ResponseWriter, r *http.Request) {
	methods := []string{http.MethodGet, http.MethodHead}
	if h.cfg.EnableKeys {
		methods = append(methods, http.MethodPost)
	}
	if !allowMethod(w, r, methods...) {
		return
	}
	h.clusterHeader(w)
	if r.Method == http.MethodPost {
		h.addMember(w, r)
		return
	}
	members, err := h.memberList(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	out := make([]Member, 0, len(members))
	for _, m := range members {
		out = append(out, memberOf(m))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Members []Member `json:"members"`
	}{out})
}

type peerURLsRequest struct {
	PeerURLs []string `json:"peerURLs"`
}

// validURLs checks peer URLs as etcd's members API does, with its message.
func validURLs(urls []string) error {
	if len(urls) == 0 {
		return errors.New("peerURLs must not be empty")
	}
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return err
		}
		if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs" {
			return fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", s)
		}
		if !strings.Contains(u.Host, ":") {
			return fmt.Errorf(`URL address does not have the form "host:port": %s`, s)
		}
		if u.Path != "" {
			return fmt.Errorf("URL must not contain a path: %s", s)
		}
	}
	return nil
}

// readPeerURLs reads a members request's {"peerURLs":[...]}, or answers
// it with etcd's error.
func readPeerURLs(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	var req peerURLsRequest
	if !readJSON(w, r, &req) {
		return nil, false
	}
	if err := validURLs(req.PeerURLs); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return req.PeerURLs, true
}

func (h *Handler) addMember(w http.ResponseWriter, r *http.Request) {
	peerURLs, ok := readPeerURLs(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	resp, err := h.cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: peerURLs})
	if err != nil {
		h.memberError(w, err, "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(memberOf(resp.GetMember()))
}

// memberError answers a failed members call as etcd 3.4 does.
func (h *Handler) memberError(w http.ResponseWriter, err error, id string) {
	switch {
	case errors.Is(err, rpctypes.ErrGRPCPeerURLExist) || rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCPeerURLExist.Error():
		httpError(w, http.StatusConflict, "membership: peerURL exists")
	case errors.Is(err, rpctypes.ErrGRPCMemberNotFound) || rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCMemberNotFound.Error():
		httpError(w, http.StatusNotFound, "No such member: "+id)
	case errors.Is(err, rpctypes.ErrGRPCMemberExist) || rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCMemberExist.Error():
		httpError(w, http.StatusConflict, "membership: ID exists")
	default:
		h.cfg.Logger.Warn("v2 members request failed: " + err.Error())
		httpError(w, http.StatusInternalServerError, "Internal Server Error")
	}
}

// serveMember is /v2/members/<id> (DELETE, PUT) and /v2/members/leader.
func (h *Handler) serveMember(w http.ResponseWriter, r *http.Request) {
	idText := strings.TrimPrefix(r.URL.Path, "/v2/members/")
	if idText == "leader" {
		if !allowMethod(w, r, http.MethodGet) {
			return
		}
		h.clusterHeader(w)
		h.serveLeader(w, r)
		return
	}
	if !allowMethod(w, r, http.MethodDelete, http.MethodPut) {
		return
	}
	h.clusterHeader(w)
	id, err := strconv.ParseUint(idText, 16, 64)
	if err != nil {
		httpError(w, http.StatusNotFound, "No such member: "+idText)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	removed := func(err error) bool {
		if h.cfg.Local != nil && (errors.Is(err, rpctypes.ErrGRPCMemberNotFound) || rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCMemberNotFound.Error()) &&
			h.cfg.Local.Removed(ctx, id) {
			httpError(w, http.StatusGone, "Member permanently removed: "+strconv.FormatUint(id, 16))
			return true
		}
		return false
	}
	if r.Method == http.MethodDelete {
		if _, err := h.cluster.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: id}); err != nil {
			if !removed(err) {
				h.memberError(w, err, idText)
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	peerURLs, ok := readPeerURLs(w, r)
	if !ok {
		return
	}
	if _, err := h.cluster.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: id, PeerURLs: peerURLs}); err != nil {
		if !removed(err) {
			h.memberError(w, err, idText)
		}
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveLeader is GET /v2/members/leader: the leader as a member.
func (h *Handler) serveLeader(w http.ResponseWriter, r *http.Request) {
	members, err := h.memberList(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	var leader uint64
	if h.cfg.Local != nil {
		leader = h.cfg.Local.SelfStats().LeaderInfo.leaderID
	}
	for _, m := range members {
		if leader != 0 && m.GetID() == leader {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(memberOf(m))
			return
		}
	}
	httpError(w, http.StatusServiceUnavailable, "During election")
}

// serveMachines is /v2/machines: every member's client URLs.
func (h *Handler) serveMachines(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	members, err := h.memberList(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	var urls []string
	for _, m := range members {
		urls = append(urls, m.GetClientURLs()...)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(strings.Join(urls, ", ")))
}

// SelfStats is /v2/stats/self.
type SelfStats struct {
	Name       string     `json:"name"`
	ID         string     `json:"id"`
	State      string     `json:"state"`
	StartTime  time.Time  `json:"startTime"`
	LeaderInfo LeaderInfo `json:"leaderInfo"`

	RecvAppendRequestCnt uint64 `json:"recvAppendRequestCnt"`
	SendAppendRequestCnt uint64 `json:"sendAppendRequestCnt"`
}

// LeaderInfo is the leader as a member sees it.
type LeaderInfo struct {
	Leader    string    `json:"leader"`
	Uptime    string    `json:"uptime"`
	StartTime time.Time `json:"startTime"`
	leaderID  uint64
}

// NewLeaderInfo describes leader (0: none), known since since.
func NewLeaderInfo(leader uint64, since, now time.Time) LeaderInfo {
	li := LeaderInfo{leaderID: leader}
	if leader != 0 {
		li.Leader = strconv.FormatUint(leader, 16)
		li.StartTime = since
		li.Uptime = now.Sub(since).String()
	}
	return li
}

// LeaderStats is /v2/stats/leader.
type LeaderStats struct {
	Leader    string                    `json:"leader"`
	Followers map[string]*FollowerStats `json:"followers"`
}

// FollowerStats is one follower as the leader sees it.
type FollowerStats struct {
	Latency LatencyStats `json:"latency"`
	Counts  CountsStats  `json:"counts"`
}

// LatencyStats are a follower's round trips, in milliseconds.
type LatencyStats struct {
	Current           float64 `json:"current"`
	Average           float64 `json:"average"`
	StandardDeviation float64 `json:"standardDeviation"`
	Minimum           float64 `json:"minimum"`
	Maximum           float64 `json:"maximum"`
}

// CountsStats count a follower's answers to appends.
type CountsStats struct {
	Fail    uint64 `json:"fail"`
	Success uint64 `json:"success"`
}

func (h *Handler) serveSelfStats(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if h.cfg.Local == nil {
		httpError(w, http.StatusNotFound, "a proxy has no member stats")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(h.cfg.Local.SelfStats())
	w.Write(b)
}

func (h *Handler) serveLeaderStats(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if h.cfg.Local == nil {
		httpError(w, http.StatusNotFound, "a proxy has no member stats")
		return
	}
	stats, ok := h.cfg.Local.LeaderStats()
	if !ok {
		httpError(w, http.StatusForbidden, "not current leader")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(stats)
	w.Write(b)
}
