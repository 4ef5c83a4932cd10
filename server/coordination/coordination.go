// Package coordination serves etcd's Lock and Election gRPC services
// (v3lockpb.Lock, v3electionpb.Election) for clients that take locks and
// elect leaders through the server rather than through the client-side
// recipe: clients in other languages, the /v3/lock and /v3/election JSON
// paths, `etcdctl lock` and `elect` over the gateway.
//
// Each call runs go.etcd.io/etcd/client/v3/concurrency's Mutex and Election
// on the caller's lease, through a client connected to the member itself.
// The keys, values and revisions are therefore exactly those of the
// client-side recipe (`<name>/<lease hex>`, owner = lowest create revision
// under the prefix), so a holder through the service and a holder through
// client/v3/concurrency see and wait for each other. A lock is held as long
// as its lease lives: the caller keeps the lease alive, and when it stops
// (a crashed holder), the lease expires, the key goes, and the next waiter
// in create-revision order gets the lock. The lock key's create revision
// is the fencing token a guarded write compares.
//
// coordination may import client/v3 (and its concurrency package), the
// v3lockpb and v3electionpb API packages, gRPC and the standard library.
package coordination

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ErrMissingLeaderKey is etcd's answer to a Proclaim or Resign without its
// leader key.
var ErrMissingLeaderKey = status.Error(codes.Unknown, `"leader" field must be provided`)

// keepAliveTimeout is the in-process lease client's keepalive timeout; the
// services never keep a lease alive themselves (sessions are orphaned), so
// it only bounds a stray keepalive stream.
const keepAliveTimeout = time.Second

// Services are the Lock and Election servers over one in-process client.
type Services struct {
	c *clientv3.Client
}

// New builds the services on conn, a connection to the member's own gRPC
// server. The client lives until ctx ends.
func New(ctx context.Context, conn grpc.ClientConnInterface, lg *zap.Logger) *Services {
	c := clientv3.NewCtxClient(ctx, clientv3.WithZapLogger(lg))
	c.KV = clientv3.NewKVFromKVClient(pb.NewKVClient(conn), c)
	c.Watcher = clientv3.NewWatchFromWatchClient(pb.NewWatchClient(conn), c)
	c.Lease = clientv3.NewLeaseFromLeaseClient(pb.NewLeaseClient(conn), c, keepAliveTimeout)
	return &Services{c: c}
}

// Register adds both services to a gRPC server.
func (s *Services) Register(srv *grpc.Server) {
	v3lockpb.RegisterLockServer(srv, lockServer{s: s})
	v3electionpb.RegisterElectionServer(srv, electionServer{s: s})
}

// Close stops the in-process client's watches and streams.
func (s *Services) Close() error { return s.c.Close() }

// forward carries the caller's credentials (etcd's "token" metadata) to
// the requests made on its behalf, so that they are checked as the
// caller's own.
func forward(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	if tok := md.Get(rpctypes.TokenFieldNameGRPC); len(tok) > 0 {
		return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, tok[0])
	}
	return ctx
}

// wireError turns the client library's error back into the status the
// member answered with, so that the caller sees etcd's code and text.
func wireError(err error) error {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return status.Error(ee.Code(), ee.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// session is a concurrency session on the caller's lease that never keeps
// it alive (the caller does): lease 0 grants a fresh one, as etcd does.
func (s *Services) session(ctx context.Context, lease int64) (*concurrency.Session, error) {
	sess, err := concurrency.NewSession(s.c, concurrency.WithLease(clientv3.LeaseID(lease)), concurrency.WithContext(ctx))
	if err != nil {
		return nil, wireError(err)
	}
	sess.Orphan()
	return sess, nil
}

type lockServer struct {
	v3lockpb.UnimplementedLockServer
	s *Services
}

// Lock waits until the caller holds the lock name on its lease, and
// answers with the key that holds it (`name/<lease hex>`), whose
// create revision (in the header's revision on acquisition or through a
// Range) orders the holders.
func (l lockServer) Lock(ctx context.Context, req *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	ctx = forward(ctx)
	sess, err := l.s.session(ctx, req.GetLease())
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(sess, string(req.GetName()))
	if err := m.Lock(ctx); err != nil {
		return nil, wireError(err)
	}
	return &v3lockpb.LockResponse{Header: m.Header(), Key: []byte(m.Key())}, nil
}

// Unlock deletes the lock's key; the next waiter in line takes it.
func (l lockServer) Unlock(ctx context.Context, req *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	resp, err := l.s.c.Delete(forward(ctx), string(req.GetKey()))
	if err != nil {
		return nil, wireError(err)
	}
	return &v3lockpb.UnlockResponse{Header: resp.Header}, nil
}

type electionServer struct {
	v3electionpb.UnimplementedElectionServer
	s *Services
}

func (e electionServer) Campaign(ctx context.Context, req *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	ctx = forward(ctx)
	sess, err := e.s.session(ctx, req.GetLease())
	if err != nil {
		return nil, err
	}
	el := concurrency.NewElection(sess, string(req.GetName()))
	if err := el.Campaign(ctx, string(req.GetValue())); err != nil {
		return nil, wireError(err)
	}
	return &v3electionpb.CampaignResponse{
		Header: el.Header(),
		Leader: &v3electionpb.LeaderKey{Name: req.GetName(), Key: []byte(el.Key()), Rev: el.Rev(), Lease: int64(sess.Lease())},
	}, nil
}

// resume is the election a leader key names, for Proclaim and Resign.
func (e electionServer) resume(ctx context.Context, leader *v3electionpb.LeaderKey) (*concurrency.Election, error) {
	if leader == nil {
		return nil, ErrMissingLeaderKey
	}
	sess, err := e.s.session(ctx, leader.GetLease())
	if err != nil {
		return nil, err
	}
	return concurrency.ResumeElection(sess, string(leader.GetName()), string(leader.GetKey()), leader.GetRev()), nil
}

func (e electionServer) Proclaim(ctx context.Context, req *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	ctx = forward(ctx)
	el, err := e.resume(ctx, req.GetLeader())
	if err != nil {
		return nil, err
	}
	if err := el.Proclaim(ctx, string(req.GetValue())); err != nil {
		return nil, wireError(err)
	}
	return &v3electionpb.ProclaimResponse{Header: el.Header()}, nil
}

func (e electionServer) Resign(ctx context.Context, req *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	ctx = forward(ctx)
	el, err := e.resume(ctx, req.GetLeader())
	if err != nil {
		return nil, err
	}
	if err := el.Resign(ctx); err != nil {
		return nil, wireError(err)
	}
	return &v3electionpb.ResignResponse{Header: el.Header()}, nil
}

// observer is a session that grants nothing: Leader and Observe only read.
func (e electionServer) observer(ctx context.Context, name []byte) (*concurrency.Election, error) {
	sess, err := e.s.session(ctx, -1)
	if err != nil {
		return nil, err
	}
	return concurrency.NewElection(sess, string(name)), nil
}

func (e electionServer) Leader(ctx context.Context, req *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	ctx = forward(ctx)
	el, err := e.observer(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	resp, err := el.Leader(ctx)
	if err != nil {
		return nil, wireError(err)
	}
	return &v3electionpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}, nil
}

// Observe streams the leader's key-value as it is proclaimed and as
// leadership passes, until the caller goes away.
func (e electionServer) Observe(req *v3electionpb.LeaderRequest, stream v3electionpb.Election_ObserveServer) error {
	ctx := forward(stream.Context())
	el, err := e.observer(ctx, req.GetName())
	if err != nil {
		return err
	}
	ch := el.Observe(ctx)
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case resp, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return status.FromContextError(ctx.Err()).Err()
				}
				return nil
			}
			if err := stream.Send(&v3electionpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}); err != nil {
				return err
			}
		}
	}
}
