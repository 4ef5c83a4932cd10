package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

func TestOverlaps(t *testing.T) {
	for _, tc := range []struct {
		k1, e1, k2, e2 string
		want           bool
	}{
		{"a", "", "a", "", true},
		{"a", "", "b", "", false},
		{"a", "c", "b", "", true},
		{"a", "c", "c", "", false},
		{"a", "c", "b", "z", true},
		{"x", "\x00", "b", "", false},
		{"x", "\x00", "y", "", true},
		{"a", "b", "b", "c", false},
	} {
		if got := overlaps([]byte(tc.k1), []byte(tc.e1), []byte(tc.k2), []byte(tc.e2)); got != tc.want {
			t.Errorf("overlaps([%q,%q), [%q,%q)) = %v, want %v", tc.k1, tc.e1, tc.k2, tc.e2, got, tc.want)
		}
	}
}

func TestRangeCacheBound(t *testing.T) {
	c := newRangeCache(2)
	for _, k := range []string{"a", "b", "c"} {
		c.add(&pb.RangeRequest{Key: []byte(k)}, &pb.RangeResponse{Count: 1})
	}
	if c.get(&pb.RangeRequest{Key: []byte("a")}) != nil || c.get(&pb.RangeRequest{Key: []byte("c"), Serializable: true}) == nil {
		t.Fatal("the cache kept the oldest entry or lost the newest")
	}
	c.invalidate([]byte("b"), []byte("d"))
	if c.get(&pb.RangeRequest{Key: []byte("b")}) != nil || c.get(&pb.RangeRequest{Key: []byte("c")}) != nil {
		t.Fatal("a write over b..d left cached entries in it")
	}
}

// fakeLease answers keepalives only when told, counting what it was sent.
type fakeLease struct {
	pb.LeaseClient
	mu      sync.Mutex
	sent    []int64
	answers chan *pb.LeaseKeepAliveResponse
}

type fakeKeepAliveStream struct {
	grpc.ClientStream
	l   *fakeLease
	ctx context.Context
}

func (f *fakeLease) LeaseKeepAlive(ctx context.Context, _ ...grpc.CallOption) (pb.Lease_LeaseKeepAliveClient, error) {
	return &fakeKeepAliveStream{l: f, ctx: ctx}, nil
}

func (s *fakeKeepAliveStream) Send(r *pb.LeaseKeepAliveRequest) error {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	s.l.sent = append(s.l.sent, r.GetID())
	return nil
}

func (s *fakeKeepAliveStream) Recv() (*pb.LeaseKeepAliveResponse, error) {
	select {
	case r := <-s.l.answers:
		return r, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// TestKeepAlivesCoalesced: clients keeping one lease alive at once send
// one keepalive upstream, and every one of them gets its answer.
func TestKeepAlivesCoalesced(t *testing.T) {
	up := &fakeLease{answers: make(chan *pb.LeaseKeepAliveResponse)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newLeaseProxy(ctx, up, nil, nil)
	const clients = 8
	results := make(chan *pb.LeaseKeepAliveResponse, clients)
	for i := 0; i < clients; i++ {
		go func() {
			resp, err := p.keepAliveOnce(ctx, 7)
			if err != nil {
				t.Error(err)
			}
			results <- resp
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.waiters[7])
		p.mu.Unlock()
		if n == clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d keepalives are waiting", n, clients)
		}
		time.Sleep(time.Millisecond)
	}
	up.answers <- &pb.LeaseKeepAliveResponse{ID: 7, TTL: 5}
	for i := 0; i < clients; i++ {
		if r := <-results; r.GetTTL() != 5 {
			t.Fatalf("answer %v", r)
		}
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.sent) != 1 {
		t.Fatalf("%d keepalives went upstream for %d clients at once, want 1", len(up.sent), clients)
	}
}
