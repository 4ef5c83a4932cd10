package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/noded/noded/server"
	"github.com/noded/noded/server/discovery"
	"github.com/noded/noded/server/proxy"
)

// proxyPeersTimeout bounds how long a starting proxy tries to learn the
// cluster's client URLs from its peers.
const proxyPeersTimeout = 60 * time.Second

// runProxyMode runs a member-less proxy node (--proxy on|readonly, or a
// member that discovery turned away): it learns the cluster's client URLs
// from the peers (peers, or --discovery, or --initial-cluster) and serves
// --listen-client-urls by forwarding to them.
func runProxyMode(o *options, cfg server.Config, peers []string, lg *zap.Logger, signals <-chan os.Signal) int {
	mode := o.str("proxy")
	if mode == proxy.ModeOff {
		mode = proxy.ModeOn // a discovery fallback
	}
	ctx, cancel := context.WithTimeout(context.Background(), proxyPeersTimeout)
	defer cancel()
	if peers == nil {
		if durl := o.str("discovery"); durl != "" {
			var err error
			peers, err = discovery.ClusterPeersV2(ctx, discovery.V2Config{URL: durl, Proxy: o.str("discovery-proxy"), Logger: lg.Named("discovery")})
			if err != nil {
				lg.Error("proxy: discovery failed", zap.Error(err))
				return 1
			}
		} else {
			// The peers of --initial-cluster (etcd's proxies take it so).
			peers = peerURLsOf(cfg.InitialCluster)
		}
	}
	var clientURLs []string
	for {
		var err error
		clientURLs, err = proxy.ClientURLsFromPeers(ctx, peers, 5*time.Second)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			lg.Error("proxy: cannot start", zap.Error(err))
			return 1
		}
		lg.Warn("proxy: waiting for the cluster", zap.Error(err))
		select {
		case <-time.After(time.Second):
		case sig := <-signals:
			lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
			return 0
		}
	}
	var listeners []net.Listener
	for _, u := range cfg.ListenClientURLs {
		l, err := net.Listen("tcp", u.Host)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			lg.Error("proxy: cannot listen", zap.String("url", u.String()), zap.Error(err))
			return 1
		}
		listeners = append(listeners, l)
	}
	ms := func(name string) time.Duration { return time.Duration(o.uint(name)) * time.Millisecond }
	p, err := proxy.Start(proxy.Config{
		Mode: mode, Listeners: listeners, Endpoints: clientURLs,
		FailureWait: ms("proxy-failure-wait"), RefreshInterval: ms("proxy-refresh-interval"), DialTimeout: ms("proxy-dial-timeout"),
		ReadTimeout: ms("proxy-read-timeout"), WriteTimeout: ms("proxy-write-timeout"),
		Logger: lg.Named("proxy"),
	})
	if err != nil {
		lg.Error("proxy: cannot start", zap.Error(err))
		return 1
	}
	lg.Info("serving as a proxy", zap.String("mode", mode), zap.Strings("listen-client-urls", server.URLStrings(cfg.ListenClientURLs)), zap.Strings("endpoints", clientURLs))
	sig := <-signals
	lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
	p.Stop()
	return 0
}

// runFallbackProxy is the proxy a member becomes when its discovery token
// is full and --discovery-fallback is proxy.
func runFallbackProxy(o *options, cfg server.Config, plan bootstrapPlan, lg *zap.Logger, signals <-chan os.Signal) int {
	return runProxyMode(o, cfg, plan.proxyPeers, lg, signals)
}

// runGateway is `noded gateway start`: etcd's L4 gateway, forwarding each
// TCP connection to one of the endpoints (given, or found through DNS
// SRV), skipping one that failed for --retry-delay.
func runGateway(args []string, stdout, stderr io.Writer, signals <-chan os.Signal) int {
	if len(args) == 0 || args[0] != "start" {
		fmt.Fprintln(stderr, "Usage: noded gateway start [flags]")
		return 2
	}
	fs := pflag.NewFlagSet("gateway start", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listenAddr := fs.String("listen-addr", "127.0.0.1:23790", "listen address")
	endpoints := fs.StringSlice("endpoints", []string{"127.0.0.1:2379"}, "comma separated etcd cluster endpoints")
	srvDomain := fs.String("discovery-srv", "", "DNS domain used to bootstrap initial cluster")
	srvName := fs.String("discovery-srv-name", "", "service name to query when using DNS discovery")
	fs.Bool("insecure-discovery", false, "accept insecure SRV records")
	fs.String("trusted-ca-file", "", "path to the client server TLS CA file for verifying the discovered endpoints when discovery-srv is provided.")
	retryDelay := fs.Duration("retry-delay", time.Minute, "duration of delay before retrying failed endpoints")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	lg, err := newLogger(logConfig{logger: "zap", level: "info", format: "json", outputs: "default"}, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "noded: %v\n", err)
		return 1
	}
	eps, l, ok := forwarderSetup(lg, "gateway", *endpoints, *srvDomain, *srvName, *listenAddr)
	if !ok {
		return 1
	}
	var urls []string
	for _, e := range eps {
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		urls = append(urls, e)
	}
	p, err := proxy.Start(proxy.Config{Mode: proxy.ModeGateway, Listeners: []net.Listener{l}, Endpoints: urls, FailureWait: *retryDelay, Logger: lg.Named("gateway")})
	if err != nil {
		lg.Error("gateway: cannot start", zap.Error(err))
		return 1
	}
	lg.Info("gateway started", zap.String("listen-addr", l.Addr().String()), zap.Strings("endpoints", eps))
	sig := <-signals
	lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
	p.Stop()
	return 0
}

// runGRPCProxy is `noded grpc-proxy start`: etcd's L7 gRPC proxy, with
// a cache of serializable ranges, shared upstream watches and coalesced
// lease keepalives, optionally confined to --namespace.
func runGRPCProxy(args []string, stdout, stderr io.Writer, signals <-chan os.Signal) int {
	if len(args) == 0 || args[0] != "start" {
		fmt.Fprintln(stderr, "Usage: noded grpc-proxy start [flags]")
		return 2
	}
	fs := pflag.NewFlagSet("grpc-proxy start", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listenAddr := fs.String("listen-addr", "127.0.0.1:23790", "listen address")
	endpoints := fs.StringSlice("endpoints", []string{"127.0.0.1:2379"}, "comma separated etcd cluster endpoints")
	namespace := fs.String("namespace", "", "string to prefix to all keys for namespacing requests")
	srvDomain := fs.String("discovery-srv", "", "domain name to query for SRV records describing cluster endpoints")
	srvName := fs.String("discovery-srv-name", "", "service name to query when using DNS discovery")
	keepAliveTime := fs.Duration("dial-keepalive-time", 0, "keepalive time for client(grpc-proxy) connections (default 0, disable).")
	keepAliveTimeout := fs.Duration("dial-keepalive-timeout", 0, "keepalive timeout for client(grpc-proxy) connections (default 0, disable).")
	refused := map[string]string{}
	for _, name := range []string{"cert", "key", "cacert", "cert-file", "key-file", "trusted-ca-file", "auto-tls"} {
		fs.String(name, "", "TLS (refused by noded when set: TLS is not supported yet)")
		refused[name] = "TLS is not supported yet"
	}
	for _, name := range []string{"advertise-client-url", "resolver-prefix"} {
		fs.String(name, "", "self-registration (refused by noded when set: not supported)")
		refused[name] = "self-registration of proxies is not supported"
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	lg, err := newLogger(logConfig{logger: "zap", level: "info", format: "json", outputs: "default"}, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "noded: %v\n", err)
		return 1
	}
	for name, why := range refused {
		if f := fs.Lookup(name); f.Changed && f.Value.String() != "" {
			lg.Error(fmt.Sprintf("--%s: %s", name, why))
			return 1
		}
	}
	eps, l, ok := forwarderSetup(lg, "grpc-proxy", *endpoints, *srvDomain, *srvName, *listenAddr)
	if !ok {
		return 1
	}
	p, err := proxy.StartGRPCProxy(proxy.GRPCProxyConfig{Listener: l, Endpoints: eps, Namespace: *namespace,
		KeepAliveTime: *keepAliveTime, KeepAliveTimeout: *keepAliveTimeout, Logger: lg.Named("grpc-proxy")})
	if err != nil {
		l.Close()
		lg.Error("grpc-proxy: cannot start", zap.Error(err))
		return 1
	}
	sig := <-signals
	lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
	p.Stop()
	return 0
}

// forwarderSetup is what the gateway and the grpc-proxy do first: the
// endpoints (given, or from the _etcd-client SRV records of srvDomain)
// and the listener.
func forwarderSetup(lg *zap.Logger, what string, endpoints []string, srvDomain, srvName, listenAddr string) ([]string, net.Listener, bool) {
	eps := endpoints
	if srvDomain != "" {
		found, err := discovery.ClientEndpointsSRV(srvDomain, srvName)
		if err != nil {
			lg.Error(what+": DNS discovery failed", zap.Error(err))
			return nil, nil, false
		}
		eps = found
	}
	l, err := net.Listen("tcp", listenAddr)
	if err != nil {
		lg.Error(what+": cannot listen", zap.String("listen-addr", listenAddr), zap.Error(err))
		return nil, nil, false
	}
	return eps, l, true
}
