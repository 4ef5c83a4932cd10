package discovery

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Resolver is the DNS the SRV lookups use: net.DefaultResolver (the
// system's), or a *net.Resolver pointed elsewhere (tests).
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// dnsTimeout bounds one DNS lookup.
const dnsTimeout = 10 * time.Second

// SRVConfig configures DNS discovery of a member's cluster.
type SRVConfig struct {
	Domain      string // --discovery-srv
	ServiceName string // --discovery-srv-name: _etcd-server-<name>._tcp
	Self        Self
	Resolver    Resolver // nil: the system's
}

func serviceSuffix(name string) string {
	if name == "" {
		return ""
	}
	return "-" + name
}

// ClusterFromSRV builds the --initial-cluster from the SRV records of
// _etcd-server-ssl._tcp.<domain> (https) and _etcd-server._tcp.<domain>
// (http), as etcd does: the record whose address is one of this member's
// advertised peer URLs takes its name; the others are named by number.
func ClusterFromSRV(ctx context.Context, cfg SRVConfig) (string, error) {
	r := cfg.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	// This member's advertised peer addresses, resolved, to find its record.
	self := map[string]*url.URL{}
	for _, s := range cfg.Self.PeerURLs {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("discovery-srv: advertised peer URL %q: %v", s, err)
		}
		for _, a := range resolveAddrs(ctx, r, u.Host) {
			self[a] = u
		}
	}
	var parts []string
	selfFound := false
	unnamed := 0
	var errs []string
	for _, svc := range []struct{ service, scheme string }{
		{"etcd-server-ssl" + serviceSuffix(cfg.ServiceName), "https"},
		{"etcd-server" + serviceSuffix(cfg.ServiceName), "http"},
	} {
		lctx, cancel := context.WithTimeout(ctx, dnsTimeout)
		_, srvs, err := r.LookupSRV(lctx, svc.service, "tcp", cfg.Domain)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("_%s._tcp.%s: %v", svc.service, cfg.Domain, err))
			continue
		}
		for _, srv := range srvs {
			host := strings.TrimSuffix(srv.Target, ".")
			hostPort := net.JoinHostPort(host, strconv.Itoa(int(srv.Port)))
			name := ""
			for _, a := range resolveAddrs(ctx, r, net.JoinHostPort(srv.Target, strconv.Itoa(int(srv.Port)))) {
				if u, ok := self[a]; ok {
					if u.Scheme != svc.scheme {
						return "", fmt.Errorf("bootstrap at %s from DNS for %s has scheme mismatch with expected peer %s", svc.scheme+"://"+hostPort, svc.service, u.String())
					}
					name = cfg.Self.Name
					selfFound = true
				}
			}
			if name == "" {
				name = strconv.Itoa(unnamed)
				unnamed++
			}
			parts = append(parts, fmt.Sprintf("%s=%s://%s", name, svc.scheme, hostPort))
		}
	}
	if len(parts) > 0 && !selfFound {
		return "", fmt.Errorf("cannot find local etcd member %q in SRV records", cfg.Self.Name)
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("error querying DNS SRV records for _etcd-server-ssl%s and _etcd-server%s under %s: %s",
			serviceSuffix(cfg.ServiceName), serviceSuffix(cfg.ServiceName), cfg.Domain, strings.Join(errs, "; "))
	}
	return strings.Join(parts, ","), nil
}

// resolveAddrs resolves host:port to ip:port strings (a literal IP as is).
func resolveAddrs(ctx context.Context, r Resolver, hostPort string) []string {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil
	}
	host = strings.TrimSuffix(host, ".")
	if ip := net.ParseIP(host); ip != nil {
		return []string{net.JoinHostPort(ip.String(), port)}
	}
	lctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	ips, err := r.LookupHost(lctx, host)
	if err != nil {
		return nil
	}
	var out []string
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, port))
	}
	return out
}

// ClientEndpointsSRV finds a cluster's client URLs from the SRV records
// of _etcd-client-ssl._tcp.<domain> and _etcd-client._tcp.<domain> (the
// gateway's and etcdctl's --discovery-srv).
func ClientEndpointsSRV(domain, serviceName string) ([]string, error) {
	return clientEndpointsSRV(context.Background(), net.DefaultResolver, domain, serviceName)
}

func clientEndpointsSRV(ctx context.Context, r Resolver, domain, serviceName string) ([]string, error) {
	var urls, errs []string
	for _, svc := range []struct{ service, scheme string }{
		{"etcd-client-ssl" + serviceSuffix(serviceName), "https"},
		{"etcd-client" + serviceSuffix(serviceName), "http"},
	} {
		lctx, cancel := context.WithTimeout(ctx, dnsTimeout)
		_, srvs, err := r.LookupSRV(lctx, svc.service, "tcp", domain)
		cancel()
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, srv := range srvs {
			urls = append(urls, svc.scheme+"://"+net.JoinHostPort(strings.TrimSuffix(srv.Target, "."), strconv.Itoa(int(srv.Port))))
		}
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("error querying DNS SRV records for _etcd-client %s", strings.Join(errs, "; "))
	}
	return urls, nil
}
