package proxy_test

// The grpc-proxy against a real member in this process.

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/server"
	"github.com/noded/noded/server/proxy"
)

const waitMax = 30 * time.Second

// startMember starts a one-member cluster and returns its client address.
func startMember(t *testing.T) string {
	t.Helper()
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cu, _ := url.Parse("http://" + cl.Addr().String())
	pu, _ := url.Parse("http://" + pl.Addr().String())
	cfg := server.DefaultConfig()
	cfg.Name, cfg.DataDir = "p0", t.TempDir()
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = "p0=" + pu.String()
	cfg.HeartbeatMs, cfg.ElectionMs = 20, 200
	cfg.ClientListeners, cfg.PeerListeners = []net.Listener{cl}, []net.Listener{pl}
	m, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	select {
	case <-m.Ready():
	case <-time.After(waitMax):
		t.Fatal("member not ready")
	}
	return cl.Addr().String()
}

func startGRPCProxy(t *testing.T, endpoint, ns string) (*proxy.GRPCProxy, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.StartGRPCProxy(proxy.GRPCProxyConfig{Listener: l, Endpoints: []string{endpoint}, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p, l.Addr().String()
}

func client(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitMax)
	t.Cleanup(cancel)
	return c
}

func get(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) string {
	t.Helper()
	resp, err := cli.Get(ctx(t), key, opts...)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func TestGRPCProxyCache(t *testing.T) {
	member := startMember(t)
	_, addr := startGRPCProxy(t, member, "")
	viaProxy, direct := client(t, addr), client(t, member)
	if _, err := viaProxy.Put(ctx(t), "k", "v1"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, viaProxy, "k", clientv3.WithSerializable()); got != "v1" {
		t.Fatalf("serializable get through the proxy: %q", got)
	}
	// A write the proxy does not see: its serializable reads are served
	// from its cache (stale, as serializable reads may be), a
	// linearizable read goes upstream and refreshes the cache.
	if _, err := direct.Put(ctx(t), "k", "v2"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, viaProxy, "k", clientv3.WithSerializable()); got != "v1" {
		t.Fatalf("serializable get after a write elsewhere: %q, want the cached v1", got)
	}
	if got := get(t, viaProxy, "k"); got != "v2" {
		t.Fatalf("linearizable get: %q, want v2", got)
	}
	if got := get(t, viaProxy, "k", clientv3.WithSerializable()); got != "v2" {
		t.Fatalf("serializable get after the linearizable one: %q, want v2", got)
	}
	// A write through the proxy drops what it overlaps.
	if _, err := viaProxy.Put(ctx(t), "k", "v3"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, viaProxy, "k", clientv3.WithSerializable()); got != "v3" {
		t.Fatalf("serializable get after a write through the proxy: %q, want v3", got)
	}
	if _, err := viaProxy.Delete(ctx(t), "a", clientv3.WithRange("z")); err != nil {
		t.Fatal(err)
	}
	if got := get(t, viaProxy, "k", clientv3.WithSerializable()); got != "" {
		t.Fatalf("serializable get after a range delete through the proxy: %q, want nothing", got)
	}
}

func TestGRPCProxyNamespace(t *testing.T) {
	member := startMember(t)
	_, addr := startGRPCProxy(t, member, "tenant/")
	viaProxy, direct := client(t, addr), client(t, member)
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	wch := viaProxy.Watch(wctx, "", clientv3.WithPrefix())
	if _, err := viaProxy.Put(ctx(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, direct, "tenant/k"); got != "v" {
		t.Fatalf("the member holds %q under tenant/k, want v", got)
	}
	resp, err := viaProxy.Get(ctx(t), "", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != "k" {
		t.Fatalf("get everything through the proxy: %v %v, want just k", resp, err)
	}
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "k" {
			t.Fatalf("watch through the proxy: %+v", wr)
		}
	case <-time.After(waitMax):
		t.Fatal("no watch event through the proxy")
	}
	if _, err := direct.Put(ctx(t), "other", "x"); err != nil {
		t.Fatal(err)
	}
	resp, err = viaProxy.Get(ctx(t), "", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("keys outside the namespace show through the proxy: %v %v", resp, err)
	}
}

// TestGRPCProxyWatchShared: watchers of one range from now, on different
// client connections, share one upstream watch, and each sees the events.
func TestGRPCProxyWatchShared(t *testing.T) {
	member := startMember(t)
	p, addr := startGRPCProxy(t, member, "")
	var chans []clientv3.WatchChan
	for i := 0; i < 3; i++ {
		cli := client(t, addr)
		wctx, cancel := context.WithCancel(ctx(t))
		t.Cleanup(cancel)
		chans = append(chans, cli.Watch(wctx, "w", clientv3.WithPrefix(), clientv3.WithCreatedNotify()))
		select {
		case wr := <-chans[i]:
			if !wr.Created {
				t.Fatalf("watcher %d: first reply %+v, want created", i, wr)
			}
		case <-time.After(waitMax):
			t.Fatalf("watcher %d not created", i)
		}
	}
	if n := p.UpstreamWatches(); n != 1 {
		t.Fatalf("%d upstream watches for 3 watchers of one range, want 1", n)
	}
	if _, err := client(t, member).Put(ctx(t), "w1", "x"); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		select {
		case wr := <-ch:
			if len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "w1" {
				t.Fatalf("watcher %d: %+v", i, wr)
			}
		case <-time.After(waitMax):
			t.Fatalf("watcher %d saw no event", i)
		}
	}
}
