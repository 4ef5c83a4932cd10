// Package proxy runs nodes that hold no data and forward clients to a
// cluster: the member-less proxy of --proxy on|readonly (etcd 3.4's proxy
// mode, here for gRPC and HTTP on one port), and the L4 gateway of
// `noded gateway start`. Both pick among the cluster's client URLs, skip
// one that fails to answer for a while, and (the proxy) keep the list
// fresh from the members themselves, so that losing any one member goes
// unnoticed by their clients.
//
// proxy may import the standard library, the etcd API and gRPC modules
// and zap; it never imports package server.
package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// endpoints is the set of client addresses (host:port) a proxy forwards
// to, in round-robin order, each skipped for failureWait after it failed.
type endpoints struct {
	failureWait time.Duration
	mu          sync.Mutex
	addrs       []string
	failedAt    map[string]time.Time
	next        int
}

func newEndpoints(addrs []string, failureWait time.Duration) *endpoints {
	return &endpoints{addrs: slices.Clone(addrs), failureWait: failureWait, failedAt: map[string]time.Time{}}
}

// pick returns the endpoints to try, healthy ones first in round-robin
// order, then the ones that failed recently (better than nothing).
func (e *endpoints) pick() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.addrs)
	if n == 0 {
		return nil
	}
	start := e.next % n
	e.next++
	var healthy, failed []string
	now := time.Now()
	for i := 0; i < n; i++ {
		a := e.addrs[(start+i)%n]
		if t, ok := e.failedAt[a]; ok && now.Sub(t) < e.failureWait {
			failed = append(failed, a)
			continue
		}
		healthy = append(healthy, a)
	}
	return append(healthy, failed...)
}

func (e *endpoints) failed(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failedAt[addr] = time.Now()
}

func (e *endpoints) ok(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.failedAt, addr)
}

func (e *endpoints) set(addrs []string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	sorted := slices.Clone(addrs)
	slices.Sort(sorted)
	old := slices.Clone(e.addrs)
	slices.Sort(old)
	if slices.Equal(sorted, old) || len(addrs) == 0 {
		return false
	}
	e.addrs = slices.Clone(addrs)
	return true
}

func (e *endpoints) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.addrs)
}

// hostsOf turns client URLs into the addresses to dial.
func hostsOf(urls []string) []string {
	var out []string
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			continue
		}
		if !slices.Contains(out, u.Host) {
			out = append(out, u.Host)
		}
	}
	return out
}

// dial connects to the first endpoint that answers.
func (e *endpoints) dial(ctx context.Context, timeout time.Duration) (net.Conn, string, error) {
	var errs []string
	for _, a := range e.pick() {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			e.ok(a)
			return c, a, nil
		}
		e.failed(a)
		errs = append(errs, err.Error())
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("proxy: no endpoint to forward to")
	}
	return nil, "", fmt.Errorf("proxy: no endpoint answered: %s", strings.Join(errs, "; "))
}

// ClientURLsFromPeers asks members' peer URLs for the cluster (GET
// /members, which etcd and noded serve there) and returns its client URLs.
func ClientURLsFromPeers(ctx context.Context, peerURLs []string, timeout time.Duration) ([]string, error) {
	client := &http.Client{Timeout: timeout}
	var errs []string
	for _, p := range peerURLs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p, "/")+"/members", nil)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			errs = append(errs, fmt.Sprintf("%s/members: %s %v", p, resp.Status, err))
			continue
		}
		var members []struct {
			ClientURLs []string `json:"clientURLs"`
		}
		if err := json.Unmarshal(body, &members); err != nil {
			errs = append(errs, fmt.Sprintf("%s/members: %v", p, err))
			continue
		}
		var urls []string
		for _, m := range members {
			urls = append(urls, m.ClientURLs...)
		}
		if len(urls) > 0 {
			return urls, nil
		}
		errs = append(errs, fmt.Sprintf("%s/members: no member has client URLs yet", p))
	}
	return nil, fmt.Errorf("proxy: could not learn the cluster's client URLs from its peers: %s", strings.Join(errs, "; "))
}

// refresh asks the cluster for its members' client URLs (the v3
// MemberList of any endpoint that answers) and takes them as the
// endpoints.
func (e *endpoints) refresh(ctx context.Context, timeout time.Duration, lg *zap.Logger) {
	for _, a := range e.pick() {
		cc, err := grpc.NewClient("passthrough:///"+a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := pb.NewClusterClient(cc).MemberList(rctx, &pb.MemberListRequest{})
		cancel()
		cc.Close()
		if err != nil {
			e.failed(a)
			continue
		}
		var urls []string
		for _, m := range resp.GetMembers() {
			urls = append(urls, m.GetClientURLs()...)
		}
		if e.set(hostsOf(urls)) {
			lg.Info("proxy endpoints refreshed", zap.Strings("endpoints", e.list()))
		}
		return
	}
}
