package proxy

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
)

// leaseProxy serves Lease. Keepalives are coalesced: while one for a
// lease is on its way upstream, more for the same lease (from any
// client) wait for its answer instead of sending their own.
type leaseProxy struct {
	pb.UnimplementedLeaseServer
	ctx   context.Context
	lease pb.LeaseClient
	ns    namespace
	lg    *zap.Logger

	mu       sync.Mutex
	upstream pb.Lease_LeaseKeepAliveClient
	cancelUp context.CancelFunc
	waiters  map[int64][]chan *pb.LeaseKeepAliveResponse
	sent     uint64 // keepalives sent upstream (tests)
}

// keepAliveTimeout bounds the wait for an upstream keepalive's answer.
const keepAliveTimeout = 10 * time.Second

func newLeaseProxy(ctx context.Context, lease pb.LeaseClient, ns namespace, lg *zap.Logger) *leaseProxy {
	return &leaseProxy{ctx: ctx, lease: lease, ns: ns, lg: lg, waiters: map[int64][]chan *pb.LeaseKeepAliveResponse{}}
}

func (p *leaseProxy) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return p.lease.LeaseGrant(forward(ctx), r)
}

func (p *leaseProxy) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return p.lease.LeaseRevoke(forward(ctx), r)
}

func (p *leaseProxy) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	return p.lease.LeaseLeases(forward(ctx), r)
}

func (p *leaseProxy) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp, err := p.lease.LeaseTimeToLive(forward(ctx), r)
	if err == nil {
		resp.Keys = p.ns.leaseKeys(resp.Keys)
	}
	return resp, err
}

func (p *leaseProxy) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := p.keepAliveOnce(stream.Context(), req.GetID())
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

var errKeepAliveLost = errors.New("grpc-proxy: the upstream keepalive stream broke; keep alive again")

// keepAliveOnce renews lease id upstream, or joins a renewal already on
// its way.
func (p *leaseProxy) keepAliveOnce(ctx context.Context, id int64) (*pb.LeaseKeepAliveResponse, error) {
	ch := make(chan *pb.LeaseKeepAliveResponse, 1)
	p.mu.Lock()
	first := len(p.waiters[id]) == 0
	p.waiters[id] = append(p.waiters[id], ch)
	if first {
		if err := p.sendLocked(id); err != nil {
			p.failLocked(id)
			p.mu.Unlock()
			return nil, err
		}
	}
	p.mu.Unlock()
	timer := time.NewTimer(keepAliveTimeout)
	defer timer.Stop()
	select {
	case resp := <-ch:
		if resp == nil {
			return nil, errKeepAliveLost
		}
		return resp, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, errKeepAliveLost
	}
}

// sendLocked sends a keepalive upstream, opening the stream if needed.
func (p *leaseProxy) sendLocked(id int64) error {
	if p.upstream == nil {
		ctx, cancel := context.WithCancel(p.ctx)
		up, err := p.lease.LeaseKeepAlive(ctx)
		if err != nil {
			cancel()
			return err
		}
		p.upstream, p.cancelUp = up, cancel
		go p.receive(up)
	}
	p.sent++
	if err := p.upstream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
		p.dropUpstreamLocked()
		return err
	}
	return nil
}

// failLocked answers id's waiters with nothing (they fail).
func (p *leaseProxy) failLocked(id int64) {
	for _, ch := range p.waiters[id] {
		ch <- nil
	}
	delete(p.waiters, id)
}

func (p *leaseProxy) dropUpstreamLocked() {
	if p.cancelUp != nil {
		p.cancelUp()
	}
	p.upstream, p.cancelUp = nil, nil
}

// receive hands each upstream answer to the waiters for its lease.
func (p *leaseProxy) receive(up pb.Lease_LeaseKeepAliveClient) {
	for {
		resp, err := up.Recv()
		p.mu.Lock()
		if err != nil {
			if p.upstream == up {
				p.dropUpstreamLocked()
				for id := range p.waiters {
					p.failLocked(id)
				}
			}
			p.mu.Unlock()
			return
		}
		for _, ch := range p.waiters[resp.GetID()] {
			ch <- resp
		}
		delete(p.waiters, resp.GetID())
		p.mu.Unlock()
	}
}
