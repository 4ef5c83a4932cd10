package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/noded/noded/server"
	"github.com/noded/noded/server/discovery"
)

// Discovery fallbacks, etcd's --discovery-fallback.
const (
	fallbackExit  = "exit"
	fallbackProxy = "proxy"
)

// bootstrapPlan is what discovery decided before the member starts.
type bootstrapPlan struct {
	// proxyPeers is set when the member becomes a proxy instead (its
	// discovery token was full and --discovery-fallback is proxy): the
	// cluster's peer URLs, to learn its client URLs from.
	proxyPeers []string
}

// discoveryFlagsSet counts the bootstrap methods given, as etcd does: at
// most one of --initial-cluster, --discovery, --discovery-srv and
// --discovery-token.
func (o *options) discoveryMethods() []string {
	var set []string
	for _, name := range []string{"initial-cluster", "discovery", "discovery-srv", "discovery-token"} {
		if o.fs.Lookup(name) == nil {
			continue
		}
		if name == "initial-cluster" && !o.changed(name) {
			continue
		}
		if o.fs.Lookup(name).Value.String() != "" {
			set = append(set, name)
		}
	}
	return set
}

// checkBootstrapFlags refuses conflicting bootstrap flags with etcd's
// error, and a --discovery-fallback or --proxy etcd would not take.
func (o *options) checkBootstrapFlags() error {
	switch p := o.str("proxy"); p {
	case "off", "on", "readonly":
	default:
		return fmt.Errorf("invalid value %q for flag -proxy: valid values are \"off\", \"readonly\" and \"on\"", p)
	}
	if len(o.discoveryMethods()) > 1 {
		return server.ErrConflictBootstrapFlags
	}
	if (o.str("discovery-token") == "") != (o.str("discovery-endpoints") == "") {
		return errors.New("--discovery-token and --discovery-endpoints must be set together")
	}
	switch f := o.str("discovery-fallback"); f {
	case fallbackExit, fallbackProxy:
	default:
		return fmt.Errorf("invalid value %q for flag -discovery-fallback: valid values are %q and %q", f, fallbackExit, fallbackProxy)
	}
	return nil
}

// discover resolves cfg.InitialCluster through the discovery flag given,
// unless the data directory already holds a member (then the flags are
// ignored, as etcd ignores them).
func (o *options) discover(ctx context.Context, cfg *server.Config, lg *zap.Logger) (bootstrapPlan, error) {
	methods := o.discoveryMethods()
	if len(methods) == 0 || methods[0] == "initial-cluster" {
		return bootstrapPlan{}, nil
	}
	if cfg.Initialized() {
		lg.Info("data directory holds a member; discovery flags are ignored", zap.String("data-dir", cfg.DataDir), zap.Strings("flags", methods))
		return bootstrapPlan{}, nil
	}
	self := discovery.Self{Name: cfg.Name, ID: cfg.LocalMemberID(), PeerURLs: server.URLStrings(cfg.InitialAdvertisePeerURLs)}
	var initialCluster string
	var err error
	switch methods[0] {
	case "discovery":
		durl := o.str("discovery")
		lg.Info("bootstrapping through v2 discovery", zap.String("discovery-url", durl), zap.String("member-id", fmt.Sprintf("%x", self.ID)))
		initialCluster, err = discovery.JoinV2(ctx, discovery.V2Config{URL: durl, Proxy: o.str("discovery-proxy"), Self: self, Logger: lg.Named("discovery")})
		if errors.Is(err, discovery.ErrFullCluster) && o.str("discovery-fallback") == fallbackProxy {
			peers, gerr := discovery.ClusterPeersV2(ctx, discovery.V2Config{URL: durl, Proxy: o.str("discovery-proxy"), Self: self, Logger: lg.Named("discovery")})
			if gerr != nil {
				return bootstrapPlan{}, gerr
			}
			lg.Warn("discovery cluster is full; becoming a proxy (--discovery-fallback=proxy)", zap.Strings("peers", peers))
			return bootstrapPlan{proxyPeers: peers}, nil
		}
	case "discovery-token":
		var endpoints []string
		for _, e := range strings.Split(o.str("discovery-endpoints"), ",") {
			if e = strings.TrimSpace(e); e != "" {
				_, hostPort, found := strings.Cut(e, "://")
				if !found {
					hostPort = e
				}
				endpoints = append(endpoints, hostPort)
			}
		}
		user, password, _ := strings.Cut(o.str("discovery-user"), ":")
		if p := o.str("discovery-password"); p != "" {
			password = p
		}
		lg.Info("bootstrapping through v3 discovery", zap.String("discovery-token", o.str("discovery-token")), zap.Strings("discovery-endpoints", endpoints))
		initialCluster, err = discovery.JoinV3(ctx, discovery.V3Config{
			Token: o.str("discovery-token"), Endpoints: endpoints, Self: self,
			DialTimeout: o.duration("discovery-dial-timeout"), RequestTimeout: o.duration("discovery-request-timeout"),
			KeepAliveTime: o.duration("discovery-keepalive-time"), KeepAliveTimeout: o.duration("discovery-keepalive-timeout"),
			Username: user, Password: password, Logger: lg.Named("discovery"),
		})
	case "discovery-srv":
		domain := o.str("discovery-srv")
		lg.Info("bootstrapping through DNS SRV records", zap.String("discovery-srv", domain), zap.String("discovery-srv-name", o.str("discovery-srv-name")))
		initialCluster, err = discovery.ClusterFromSRV(ctx, discovery.SRVConfig{Domain: domain, ServiceName: o.str("discovery-srv-name"), Self: self})
	default:
		return bootstrapPlan{}, fmt.Errorf("--%s is not supported yet", methods[0])
	}
	if err != nil {
		return bootstrapPlan{}, err
	}
	lg.Info("discovered the initial cluster", zap.String("initial-cluster", initialCluster))
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterState = server.ClusterStateNew
	return bootstrapPlan{}, nil
}

// peerURLsOf lists the URLs of an --initial-cluster string.
func peerURLsOf(initialCluster string) []string {
	var out []string
	for _, part := range strings.Split(initialCluster, ",") {
		if _, u, ok := strings.Cut(part, "="); ok {
			out = append(out, u)
		}
	}
	return out
}
