package server

import (
	"context"
	"errors"
	"io"
	"net/url"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/node"
	"github.com/noded/noded/server/auth"
)

// The gRPC services adapt etcd's API to the member loop: each unary call
// is one request handed to the node (Member.do); the node validates it
// with etcd's rules and answers with etcd's errors.

type kvServer struct {
	pb.UnimplementedKVServer
	m *Member
}

func doTyped[T proto.Message](ctx context.Context, m *Member, op proto.Message) (T, error) {
	var zero T
	resp, err := m.do(ctx, op)
	if err != nil {
		return zero, err
	}
	typed, ok := resp.(T)
	if !ok {
		return zero, rpctypes.ErrGRPCCorrupt
	}
	return typed, nil
}

func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if len(r.GetKey()) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	if r.GetSerializable() {
		// A serializable read is served from the member's own applied
		// state: the view the loop published, without a trip through it.
		ai, err := s.m.identity(ctx)
		if err != nil {
			return nil, err
		}
		st := s.m.state.Load()
		if st.status.Removed {
			return nil, rpctypes.ErrGRPCStopped
		}
		if err := st.view.CheckRange(ai, r.GetKey(), r.GetRangeEnd()); err != nil {
			return nil, err
		}
		resp, err := st.view.Range(r)
		if err != nil {
			return nil, err
		}
		resp.Header.ClusterId, resp.Header.MemberId, resp.Header.RaftTerm = s.m.clusterID, s.m.id, st.status.Term
		return resp, nil
	}
	return doTyped[*pb.RangeResponse](ctx, s.m, r)
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	return doTyped[*pb.PutResponse](ctx, s.m, r)
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return doTyped[*pb.DeleteRangeResponse](ctx, s.m, r)
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	return doTyped[*pb.TxnResponse](ctx, s.m, r)
}

func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	return doTyped[*pb.CompactionResponse](ctx, s.m, r)
}

// Forwarding: lease keepalive and time-to-live, and learner promotion,
// are served by the leader only; a follower forwards them to the leader's
// client URLs (etcd forwards over its peer HTTP API; noded has none). A
// forwarded request is marked so that it is never forwarded twice.
const forwardedKey = "noded-forwarded"

func isForwarded(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, forwardedKey)) > 0
}

type forwarder struct {
	m     *Member
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by target; one per leader address
}

// forwardConnsMax bounds the cached connections to leaders.
const forwardConnsMax = 16

func newForwarder(m *Member) *forwarder {
	return &forwarder{m: m, conns: map[string]*grpc.ClientConn{}}
}

// conn returns a connection to the leader's first client URL.
func (f *forwarder) conn(leader uint64) (*grpc.ClientConn, error) {
	st := f.m.state.Load()
	var target string
	creds := insecure.NewCredentials()
	for _, mem := range st.status.Members {
		if mem.ID == leader && len(mem.ClientURLs) > 0 {
			if u, err := url.Parse(mem.ClientURLs[0]); err == nil {
				target = u.Host
				if u.Scheme == "https" {
					creds = credentials.NewTLS(f.m.clientDialTLS)
				}
			}
		}
	}
	if target == "" {
		// The leader has not published its client URLs yet.
		return nil, rpctypes.ErrGRPCNoLeader
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[target]; ok {
		return c, nil
	}
	if len(f.conns) >= forwardConnsMax {
		f.closeAllLocked()
	}
	c, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	f.conns[target] = c
	return c, nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closeAllLocked()
}

// closeAllLocked closes and forgets every cached connection; f.mu is held.
func (f *forwarder) closeAllLocked() {
	for t, c := range f.conns {
		c.Close()
		delete(f.conns, t)
	}
}

// forwardContext marks a call forwarded and carries the caller's token to
// the leader, which resolves it again.
func forwardContext(ctx context.Context) context.Context {
	if token, ok := auth.TokenFromContext(ctx); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, "token", token)
	}
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

// forwardTarget is the leader to forward a request to: err says another
// member leads, the leader is known, and the request was not forwarded
// already.
func forwardTarget(err error, forwarded bool) (uint64, bool) {
	var nl *node.NotLeaderError
	if err == nil || !errors.As(err, &nl) || nl.Leader == 0 || forwarded {
		return 0, false
	}
	return nl.Leader, true
}

// leaderOnly runs op on the loop and, when the node says another member
// leads, runs call against the leader instead.
func leaderOnly[T proto.Message](ctx context.Context, m *Member, op proto.Message, call func(*grpc.ClientConn) (T, error)) (T, error) {
	resp, err := doTyped[T](ctx, m, op)
	if err == nil {
		return resp, nil
	}
	leader, ok := forwardTarget(err, isForwarded(ctx))
	if !ok {
		return resp, err
	}
	conn, cerr := m.forwarder.conn(leader)
	if cerr != nil {
		return resp, cerr
	}
	return call(conn)
}

type leaseServer struct {
	pb.UnimplementedLeaseServer
	m *Member
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return doTyped[*pb.LeaseGrantResponse](ctx, s.m, r)
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return doTyped[*pb.LeaseRevokeResponse](ctx, s.m, r)
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return leaderOnly(ctx, s.m, r, func(c *grpc.ClientConn) (*pb.LeaseTimeToLiveResponse, error) {
		return pb.NewLeaseClient(c).LeaseTimeToLive(forwardContext(ctx), r)
	})
}

func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	return doTyped[*pb.LeaseLeasesResponse](ctx, s.m, r)
}

func (s *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	m := s.m
	ctx := stream.Context()
	forwarded := isForwarded(ctx)
	var (
		upstream       pb.Lease_LeaseKeepAliveClient
		upstreamLeader uint64
		upstreamCancel context.CancelFunc = func() {}
	)
	defer func() { upstreamCancel() }()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := doTyped[*pb.LeaseKeepAliveResponse](ctx, m, req)
		if leader, ok := forwardTarget(err, forwarded); ok {
			if upstream == nil || upstreamLeader != leader {
				upstreamCancel()
				conn, cerr := m.forwarder.conn(leader)
				if cerr != nil {
					return cerr
				}
				uctx, cancel := context.WithCancel(forwardContext(ctx))
				upstream, err = pb.NewLeaseClient(conn).LeaseKeepAlive(uctx)
				if err != nil {
					cancel()
					return err
				}
				upstreamLeader, upstreamCancel = leader, cancel
			}
			if err = upstream.Send(req); err == nil {
				resp, err = upstream.Recv()
			}
			if err != nil {
				upstream = nil
				upstreamCancel()
			}
		}
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

type clusterServer struct {
	pb.UnimplementedClusterServer
	m *Member
}

func validPeerURLs(urls []string) bool {
	if len(urls) == 0 {
		return false
	}
	for _, u := range urls {
		parsed, err := ParseURLs(u)
		if err != nil || len(parsed) != 1 {
			return false
		}
	}
	return true
}

func (s *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if !validPeerURLs(r.GetPeerURLs()) {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	return doTyped[*pb.MemberAddResponse](ctx, s.m, r)
}

func (s *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return doTyped[*pb.MemberRemoveResponse](ctx, s.m, r)
}

func (s *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if !validPeerURLs(r.GetPeerURLs()) {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	return doTyped[*pb.MemberUpdateResponse](ctx, s.m, r)
}

func (s *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return doTyped[*pb.MemberListResponse](ctx, s.m, r)
}

func (s *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return leaderOnly(ctx, s.m, r, func(c *grpc.ClientConn) (*pb.MemberPromoteResponse, error) {
		return pb.NewClusterClient(c).MemberPromote(forwardContext(ctx), r)
	})
}

type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	m *Member
}

func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return doTyped[*pb.AlarmResponse](ctx, s.m, r)
}

func (s *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	return doTyped[*pb.StatusResponse](ctx, s.m, r)
}

// Defragment succeeds at once: the store is in memory and the WAL and
// snapshots have nothing to defragment. etcd clears NOSPACE only after a
// defragment frees space; here compaction alone frees it.
func (s *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := s.m.adminOnly(ctx); err != nil {
		return nil, err
	}
	st := s.m.state.Load()
	return &pb.DefragmentResponse{Header: s.m.stateHeader(st)}, nil
}

// Hash is etcd's whole-backend hash, meant for tests; noded answers with
// the HashKV hash of the current revision, which covers the same keys.
func (s *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := s.m.adminOnly(ctx); err != nil {
		return nil, err
	}
	resp, err := doTyped[*pb.HashKVResponse](ctx, s.m, &pb.HashKVRequest{})
	if err != nil {
		return nil, err
	}
	return &pb.HashResponse{Header: resp.GetHeader(), Hash: resp.GetHash()}, nil
}

func (s *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	resp, err := doTyped[*pb.HashKVResponse](ctx, s.m, r)
	if err == nil && resp.CompactRevision == 0 {
		resp.CompactRevision = -1 // etcd's "never compacted"
	}
	return resp, err
}

func (s *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return doTyped[*pb.MoveLeaderResponse](ctx, s.m, r)
}

// Snapshot streams the member's applied state as etcd's bbolt database
// with its sha256 trailer (etcdfiles.go).
func (s *maintenanceServer) Snapshot(r *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	if err := s.m.adminOnly(stream.Context()); err != nil {
		return err
	}
	return s.m.streamSnapshot(stream)
}

// stateHeader is a response header from published state (for answers made
// off the loop).
func (m *Member) stateHeader(st *memberState) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: m.clusterID, MemberId: m.id, Revision: st.status.Revision, RaftTerm: st.status.Term}
}
