// Package discovery bootstraps a member's initial cluster the ways etcd
// offers besides a static --initial-cluster: the v2 discovery protocol
// (--discovery: a discovery service, or any cluster's v2 keys API), the v3
// protocol (--discovery-token with --discovery-endpoints) and DNS SRV
// records (--discovery-srv). It runs before the member starts and returns
// the --initial-cluster string, or ErrFullCluster, on which the caller
// exits or becomes a proxy (--discovery-fallback).
//
// discovery may import the standard library, go.etcd.io/etcd/client/v3,
// zap and github.com/miekg/dns; it never imports package server.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// etcd's discovery errors, with its texts.
var (
	ErrInvalidURL           = errors.New("discovery: invalid URL")
	ErrBadSizeKey           = errors.New("discovery: size key is bad")
	ErrSizeNotFound         = errors.New("discovery: size key not found")
	ErrDuplicateID          = errors.New("discovery: found duplicate id")
	ErrDuplicateName        = errors.New("discovery: found duplicate name")
	ErrFullCluster          = errors.New("discovery: cluster is full")
	ErrTooManyRetries       = errors.New("discovery: too many retries")
	ErrBadDiscoveryEndpoint = errors.New("discovery: bad discovery endpoint")
)

// Self is the member being bootstrapped.
type Self struct {
	Name     string
	ID       uint64   // its member ID, as --initial-cluster-token and its peer URLs make it
	PeerURLs []string // its advertised peer URLs
}

// config is what the member registers: name=peerURL for each URL.
func (s Self) config() string {
	parts := make([]string, len(s.PeerURLs))
	for i, u := range s.PeerURLs {
		parts[i] = s.Name + "=" + u
	}
	return strings.Join(parts, ",")
}

// V2Config configures the v2 protocol.
type V2Config struct {
	URL   string // --discovery: <endpoint>/<token path>
	Proxy string // --discovery-proxy: an HTTP proxy for the discovery traffic
	Self  Self
	// Retries bounds how often an unreachable service is tried again, with
	// backoff doubling from RetryDelay (defaults: 5, 1s).
	Retries    int
	RetryDelay time.Duration
	// RequestTimeout bounds one request that does not wait (default 5s).
	RequestTimeout time.Duration
	Logger         *zap.Logger
}

// v2Node and v2Event are the parts of the v2 keys API's answers discovery
// reads.
type v2Node struct {
	Key           string    `json:"key"`
	Value         string    `json:"value"`
	Dir           bool      `json:"dir"`
	Nodes         []*v2Node `json:"nodes"`
	CreatedIndex  uint64    `json:"createdIndex"`
	ModifiedIndex uint64    `json:"modifiedIndex"`
}

type v2Event struct {
	Action string  `json:"action"`
	Node   *v2Node `json:"node"`
}

type v2Error struct {
	ErrorCode int    `json:"errorCode"`
	Message   string `json:"message"`
	Cause     string `json:"cause"`
}

func (e *v2Error) Error() string { return fmt.Sprintf("%d: %s (%s)", e.ErrorCode, e.Message, e.Cause) }

// unreachableError is a request that got no answer from the service.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

type v2Discovery struct {
	cfg      V2Config
	endpoint *url.URL
	cluster  string // the token's path on the service
	client   *http.Client
	lg       *zap.Logger
	retries  int
}

// JoinV2 registers the member under the discovery URL and waits until the
// token's size of members have registered; it returns their
// --initial-cluster. The first size members by registration order form
// the cluster: a later one gets ErrFullCluster.
func JoinV2(ctx context.Context, cfg V2Config) (string, error) {
	d, err := newV2Discovery(cfg)
	if err != nil {
		return "", err
	}
	// Fast path: a full cluster is told before registering.
	if _, _, _, err := d.checkCluster(ctx); err != nil {
		return "", err
	}
	index, err := d.createSelf(ctx)
	if err != nil {
		return "", err
	}
	if err := d.waitSelf(ctx, index); err != nil {
		return "", err
	}
	nodes, size, index, err := d.checkCluster(ctx)
	if err != nil {
		return "", err
	}
	all, err := d.waitNodes(ctx, nodes, size, index)
	if err != nil {
		return "", err
	}
	return nodesToCluster(all, size)
}

func newV2Discovery(cfg V2Config) (*v2Discovery, error) {
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q", ErrInvalidURL, cfg.URL)
	}
	cluster := strings.TrimSuffix(u.Path, "/")
	if cluster == "" {
		return nil, fmt.Errorf("%w: %q has no token path", ErrInvalidURL, cfg.URL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.Proxy != "" {
		pu, err := url.Parse(cfg.Proxy)
		if err != nil || pu.Host == "" {
			return nil, fmt.Errorf("--discovery-proxy %q: not a URL", cfg.Proxy)
		}
		tr.Proxy = http.ProxyURL(pu)
	} else {
		tr.Proxy = nil
	}
	endpoint := &url.URL{Scheme: u.Scheme, Host: u.Host}
	return &v2Discovery{cfg: cfg, endpoint: endpoint, cluster: cluster, client: &http.Client{Transport: tr}, lg: lg}, nil
}

func (d *v2Discovery) selfKey() string {
	return path.Join(d.cluster, strconv.FormatUint(d.cfg.Self.ID, 16))
}

// do sends one request to the service and decodes a v2 answer: the event
// and the X-Etcd-Index, or the v2 error.
func (d *v2Discovery) do(ctx context.Context, method, key string, query, form url.Values, wait bool) (*v2Event, uint64, error) {
	u := *d.endpoint
	u.Path = key
	u.RawQuery = query.Encode()
	if !wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.RequestTimeout)
		defer cancel()
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, 0, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() != nil && !wait {
			return nil, 0, &unreachableError{fmt.Errorf("%s %s: no answer in %v", method, u.String(), d.cfg.RequestTimeout)}
		}
		return nil, 0, &unreachableError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, &unreachableError{err}
	}
	index, _ := strconv.ParseUint(resp.Header.Get("X-Etcd-Index"), 10, 64)
	if resp.StatusCode >= 500 {
		return nil, 0, &unreachableError{fmt.Errorf("%s %s: %s: %s", method, u.String(), resp.Status, strings.TrimSpace(string(data)))}
	}
	if resp.StatusCode >= 400 {
		var e v2Error
		if json.Unmarshal(data, &e) != nil || e.ErrorCode == 0 {
			return nil, 0, fmt.Errorf("%w: %s %s: %s: %q", ErrBadDiscoveryEndpoint, method, u.String(), resp.Status, truncate(data))
		}
		return nil, index, &e
	}
	var ev v2Event
	if err := json.Unmarshal(data, &ev); err != nil || ev.Node == nil {
		return nil, 0, fmt.Errorf("%w: %s %s: %q is not a v2 keys answer", ErrBadDiscoveryEndpoint, method, u.String(), truncate(data))
	}
	return &ev, index, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// retry waits out the backoff after the service did not answer, or gives
// up with ErrTooManyRetries.
func (d *v2Discovery) retry(ctx context.Context, what string, err error) error {
	if d.retries >= d.cfg.Retries {
		return fmt.Errorf("%w: %s at %s: %v", ErrTooManyRetries, what, d.endpoint, err)
	}
	delay := d.cfg.RetryDelay << d.retries
	d.retries++
	d.lg.Warn("discovery service did not answer; retrying",
		zap.String("what", what), zap.String("url", d.endpoint.String()), zap.Error(err),
		zap.Int("retry", d.retries), zap.Duration("backoff", delay))
	select {
	case <-time.After(delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkCluster reads the token's size and its registered members, in
// registration order; ErrFullCluster when size members registered before
// this one.
func (d *v2Discovery) checkCluster(ctx context.Context) ([]*v2Node, int, uint64, error) {
	for {
		nodes, size, index, err := d.readCluster(ctx)
		var unreachable *unreachableError
		if errors.As(err, &unreachable) {
			if rerr := d.retry(ctx, "cluster status check", err); rerr != nil {
				return nil, 0, 0, rerr
			}
			continue
		}
		return nodes, size, index, err
	}
}

func (d *v2Discovery) readCluster(ctx context.Context) ([]*v2Node, int, uint64, error) {
	configKey := path.Join(d.cluster, "_config")
	ev, _, err := d.do(ctx, http.MethodGet, path.Join(configKey, "size"), nil, nil, false)
	if err != nil {
		var ve *v2Error
		if errors.As(err, &ve) && ve.ErrorCode == 100 {
			return nil, 0, 0, ErrSizeNotFound
		}
		return nil, 0, 0, err
	}
	size, err := strconv.Atoi(ev.Node.Value)
	if err != nil || size <= 0 {
		return nil, 0, 0, fmt.Errorf("%w: %q is not a positive number", ErrBadSizeKey, ev.Node.Value)
	}
	ev, index, err := d.do(ctx, http.MethodGet, d.cluster, nil, nil, false)
	if err != nil {
		return nil, 0, 0, err
	}
	var nodes []*v2Node
	for _, n := range ev.Node.Nodes {
		if path.Base(n.Key) != "_config" {
			nodes = append(nodes, n)
		}
	}
	sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].CreatedIndex < nodes[j].CreatedIndex })
	self := path.Base(d.selfKey())
	for i := range nodes {
		if path.Base(nodes[i].Key) == self {
			break
		}
		if i >= size-1 {
			return nodes[:size], size, index, ErrFullCluster
		}
	}
	return nodes, size, index, nil
}

// createSelf registers the member: <token>/<id> = name=peerURL,...
// created only if absent. It returns the index it was created at.
func (d *v2Discovery) createSelf(ctx context.Context) (uint64, error) {
	for {
		ev, _, err := d.do(ctx, http.MethodPut, d.selfKey(), url.Values{"prevExist": {"false"}}, url.Values{"value": {d.cfg.Self.config()}}, false)
		var unreachable *unreachableError
		switch {
		case errors.As(err, &unreachable):
			if rerr := d.retry(ctx, "registration", err); rerr != nil {
				return 0, rerr
			}
			continue
		case err != nil:
			var ve *v2Error
			if errors.As(err, &ve) && ve.ErrorCode == 105 {
				return 0, ErrDuplicateID
			}
			return 0, err
		}
		return ev.Node.CreatedIndex, nil
	}
}

// waitSelf waits until the server it talks to shows the registration
// (a discovery service may spread requests over several members).
func (d *v2Discovery) waitSelf(ctx context.Context, index uint64) error {
	_, _, err := d.do(ctx, http.MethodGet, d.selfKey(), url.Values{"wait": {"true"}, "waitIndex": {strconv.FormatUint(index, 10)}}, nil, true)
	return err
}

// waitNodes waits for the members still missing, from the index after the
// read that found the others.
func (d *v2Discovery) waitNodes(ctx context.Context, nodes []*v2Node, size int, index uint64) ([]*v2Node, error) {
	if len(nodes) > size {
		nodes = nodes[:size]
	}
	all := append([]*v2Node(nil), nodes...)
	for _, n := range all {
		d.lg.Info("found peer from discovery server", zap.String("peer", n.Value))
	}
	next := index + 1
	for len(all) < size {
		ev, _, err := d.do(ctx, http.MethodGet, d.cluster, url.Values{"wait": {"true"}, "recursive": {"true"}, "waitIndex": {strconv.FormatUint(next, 10)}}, nil, true)
		var unreachable *unreachableError
		if errors.As(err, &unreachable) {
			if rerr := d.retry(ctx, "waiting for peers", err); rerr != nil {
				return nil, rerr
			}
			// Read again: registrations may have happened meanwhile.
			nodes, size2, index2, err := d.checkCluster(ctx)
			if err != nil {
				return nil, err
			}
			all, size, next = append([]*v2Node(nil), nodes...), size2, index2+1
			continue
		}
		if err != nil {
			return nil, err
		}
		next = ev.Node.ModifiedIndex + 1
		// A registration: a new file right below the token (the service's
		// keys are its own, not the URL's path, so only the depth and the
		// name say so).
		if ev.Action != "create" && ev.Action != "set" || ev.Node.Dir || strings.HasPrefix(path.Base(ev.Node.Key), "_") ||
			registered(all, path.Base(ev.Node.Key)) {
			continue
		}
		d.lg.Info("found peer from discovery server", zap.String("peer", ev.Node.Value))
		all = append(all, ev.Node)
	}
	return all, nil
}

func registered(nodes []*v2Node, name string) bool {
	for _, n := range nodes {
		if path.Base(n.Key) == name {
			return true
		}
	}
	return false
}

// nodesToCluster joins the registrations into an --initial-cluster; a
// name registered twice is etcd's ErrDuplicateName.
func nodesToCluster(nodes []*v2Node, size int) (string, error) {
	values := make([]string, len(nodes))
	names := map[string]bool{}
	for i, n := range nodes {
		values[i] = n.Value
		for _, part := range strings.Split(n.Value, ",") {
			name, u, ok := strings.Cut(part, "=")
			if !ok || name == "" {
				return "", fmt.Errorf("%w: registration %q", ErrInvalidURL, n.Value)
			}
			if _, err := url.Parse(u); err != nil {
				return "", fmt.Errorf("%w: registration %q", ErrInvalidURL, n.Value)
			}
			names[name] = true
		}
	}
	if len(names) != size {
		return strings.Join(values, ","), ErrDuplicateName
	}
	return strings.Join(values, ","), nil
}

// ClusterPeersV2 reads the peer URLs of the members a full token chose
// (the first size registrations): a member that discovery turned away
// proxies to them.
func ClusterPeersV2(ctx context.Context, cfg V2Config) ([]string, error) {
	d, err := newV2Discovery(cfg)
	if err != nil {
		return nil, err
	}
	nodes, size, _, err := d.checkCluster(ctx)
	if err != nil && !errors.Is(err, ErrFullCluster) {
		return nil, err
	}
	if len(nodes) > size {
		nodes = nodes[:size]
	}
	var peers []string
	for _, n := range nodes {
		for _, part := range strings.Split(n.Value, ",") {
			if _, u, ok := strings.Cut(part, "="); ok {
				peers = append(peers, u)
			}
		}
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("discovery: %s lists no member to proxy to", cfg.URL)
	}
	return peers, nil
}
