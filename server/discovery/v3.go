package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// V3Config configures the v3 protocol: a token on an etcd (or noded)
// cluster reached with the v3 client.
type V3Config struct {
	Token     string   // --discovery-token
	Endpoints []string // --discovery-endpoints
	Self      Self

	DialTimeout      time.Duration // --discovery-dial-timeout (2s)
	RequestTimeout   time.Duration // --discovery-request-timeout (5s)
	KeepAliveTime    time.Duration // --discovery-keepalive-time (2s)
	KeepAliveTimeout time.Duration // --discovery-keepalive-timeout (6s)
	Username         string        // --discovery-user
	Password         string        // --discovery-password
	// Retries bounds how often an unreachable cluster is tried again,
	// with backoff doubling from RetryDelay (defaults: 5, 1s).
	Retries    int
	RetryDelay time.Duration
	Logger     *zap.Logger
}

// The v3 layout: /_etcd/registry/<token>/_config/size holds the size in
// decimal; each member puts /_etcd/registry/<token>/members/<id hex> =
// name=peerURL[,name=peerURL...].
func sizeKey(token string) string       { return "/_etcd/registry/" + token + "/_config/size" }
func membersPrefix(token string) string { return "/_etcd/registry/" + token + "/members/" }

type v3Member struct {
	id        string
	value     string
	createRev int64
}

// JoinV3 registers the member under the token and waits until size
// members have; the first size by registration (create revision) form the
// cluster, as etcd 3.6's v3 discovery decides.
func JoinV3(ctx context.Context, cfg V3Config) (string, error) {
	if cfg.Token == "" || len(cfg.Endpoints) == 0 {
		return "", errors.New("--discovery-token and --discovery-endpoints must be set together")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout,
		DialKeepAliveTime: cfg.KeepAliveTime, DialKeepAliveTimeout: cfg.KeepAliveTimeout,
		Username: cfg.Username, Password: cfg.Password, Logger: zap.NewNop(),
	})
	if err != nil {
		return "", fmt.Errorf("discovery: client for %v: %w", cfg.Endpoints, err)
	}
	defer cli.Close()
	d := &v3Discovery{cfg: cfg, cli: cli, lg: lg}
	if _, _, _, err := d.checkCluster(ctx); err != nil {
		return "", err
	}
	if err := d.retrying(ctx, "registration", func(ctx context.Context) error {
		_, err := cli.Put(ctx, membersPrefix(cfg.Token)+strconv.FormatUint(cfg.Self.ID, 16), cfg.Self.config())
		return err
	}); err != nil {
		return "", err
	}
	members, size, rev, err := d.checkCluster(ctx)
	if err != nil {
		return "", err
	}
	members, err = d.waitPeers(ctx, members, size, rev)
	if err != nil {
		return "", err
	}
	nodes := make([]*v2Node, len(members))
	for i, m := range members {
		nodes[i] = &v2Node{Key: m.id, Value: m.value}
	}
	return nodesToCluster(nodes, size)
}

type v3Discovery struct {
	cfg     V3Config
	cli     *clientv3.Client
	lg      *zap.Logger
	retries int
}

// retrying runs f with a request timeout, again with backoff while the
// cluster does not answer.
func (d *v3Discovery) retrying(ctx context.Context, what string, f func(context.Context) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		err := f(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var permanent permanentError
		if errors.As(err, &permanent) {
			return permanent.err
		}
		if err := d.backoff(ctx, what, err); err != nil {
			return err
		}
	}
}

// backoff waits before the next try after err, or gives up.
func (d *v3Discovery) backoff(ctx context.Context, what string, err error) error {
	if d.retries >= d.cfg.Retries {
		return fmt.Errorf("%w: %s at %v: %v", ErrTooManyRetries, what, d.cfg.Endpoints, err)
	}
	delay := d.cfg.RetryDelay << d.retries
	d.retries++
	d.lg.Warn("discovery cluster did not answer; retrying", zap.String("what", what), zap.Strings("endpoints", d.cfg.Endpoints),
		zap.Error(err), zap.Int("retry", d.retries), zap.Duration("backoff", delay))
	select {
	case <-time.After(delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// permanentError ends retrying: the cluster answered, and the answer is
// the error.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }

func (d *v3Discovery) checkCluster(ctx context.Context) ([]v3Member, int, int64, error) {
	var members []v3Member
	var size int
	var rev int64
	err := d.retrying(ctx, "cluster status check", func(ctx context.Context) error {
		resp, err := d.cli.Get(ctx, sizeKey(d.cfg.Token))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return permanentError{ErrSizeNotFound}
		}
		n, perr := strconv.ParseInt(strings.TrimSpace(string(resp.Kvs[0].Value)), 10, 0)
		if perr != nil || n <= 0 {
			return permanentError{fmt.Errorf("%w: %q is not a positive number", ErrBadSizeKey, resp.Kvs[0].Value)}
		}
		size = int(n)
		mresp, err := d.cli.Get(ctx, membersPrefix(d.cfg.Token), clientv3.WithPrefix())
		if err != nil {
			return err
		}
		members = members[:0]
		for _, kv := range mresp.Kvs {
			members = append(members, v3Member{id: strings.TrimPrefix(string(kv.Key), membersPrefix(d.cfg.Token)),
				value: strings.TrimSpace(string(kv.Value)), createRev: kv.CreateRevision})
		}
		rev = mresp.Header.Revision
		return nil
	})
	if err != nil {
		return nil, 0, 0, err
	}
	sort.SliceStable(members, func(i, j int) bool { return members[i].createRev < members[j].createRev })
	self := strconv.FormatUint(d.cfg.Self.ID, 16)
	for i := range members {
		if members[i].id == self {
			break
		}
		if i >= size-1 {
			return members[:size], size, rev, ErrFullCluster
		}
	}
	return members, size, rev, nil
}

// waitPeers watches the members prefix from the revision after the read
// until size members have registered.
func (d *v3Discovery) waitPeers(ctx context.Context, members []v3Member, size int, rev int64) ([]v3Member, error) {
	if len(members) > size {
		members = members[:size]
	}
	for _, m := range members {
		d.lg.Info("found peer from discovery server", zap.String("peer", m.value))
	}
	for len(members) < size {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := d.cli.Watch(wctx, membersPrefix(d.cfg.Token), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if err := resp.Err(); err != nil {
				cancel()
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if err := d.backoff(ctx, "waiting for peers", err); err != nil {
					return nil, err
				}
				break
			}
			for _, ev := range resp.Events {
				rev = ev.Kv.ModRevision
				id := strings.TrimPrefix(string(ev.Kv.Key), membersPrefix(d.cfg.Token))
				if ev.Type != clientv3.EventTypePut || ev.Kv.CreateRevision != ev.Kv.ModRevision || len(members) >= size {
					continue
				}
				d.lg.Info("found peer from discovery server", zap.String("peer", string(ev.Kv.Value)))
				members = append(members, v3Member{id: id, value: strings.TrimSpace(string(ev.Kv.Value)), createRev: ev.Kv.CreateRevision})
			}
			if len(members) >= size {
				break
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return members, nil
}
