package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/noded/noded/server/discovery/dnstest"
)

func sortedParts(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		// A record that is not this member's is named by its place.
		if name, u, ok := strings.Cut(p, "="); ok && name != "me" {
			parts[i] = "#=" + u
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func TestClusterFromSRV(t *testing.T) {
	dnsSrv, err := dnstest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dnsSrv.Close()
	dnsSrv.AddA("m0.example.test", "127.0.0.1")
	dnsSrv.AddA("m1.example.test", "127.0.0.2")
	dnsSrv.AddSRV("_etcd-server._tcp.example.test", "m0.example.test", 2380)
	dnsSrv.AddSRV("_etcd-server._tcp.example.test", "m1.example.test", 2380)
	dnsSrv.AddSRV("_etcd-server-ssl._tcp.tls.test", "m0.example.test", 2380)
	dnsSrv.AddSRV("_etcd-server-blue._tcp.named.test", "m1.example.test", 2381)
	dnsSrv.AddSRV("_etcd-client._tcp.example.test", "m0.example.test", 2379)
	ctx := context.Background()
	for _, tc := range []struct {
		name, domain, service, peer string
		want, wantErr               string
	}{
		{name: "self by address", domain: "example.test", peer: "http://127.0.0.1:2380",
			want: "me=http://m0.example.test:2380,0=http://m1.example.test:2380"},
		{name: "self by name", domain: "example.test", peer: "http://m1.example.test:2380",
			want: "0=http://m0.example.test:2380,me=http://m1.example.test:2380"},
		{name: "not listed", domain: "example.test", peer: "http://127.0.0.9:2380",
			wantErr: `cannot find local etcd member "me" in SRV records`},

		{name: "scheme mismatch", domain: "tls.test", peer: "http://127.0.0.1:2380",
			wantErr: "has scheme mismatch with expected peer http://127.0.0.1:2380"},
		{name: "service name", domain: "named.test", service: "blue", peer: "http://127.0.0.2:2381",
			want: "me=http://m1.example.test:2381"},
		{name: "no records", domain: "nothing.test", peer: "http://127.0.0.1:2380",
			wantErr: "error querying DNS SRV records for _etcd-server-ssl and _etcd-server under nothing.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClusterFromSRV(ctx, SRVConfig{Domain: tc.domain, ServiceName: tc.service, Resolver: dnsSrv.Resolver(),
				Self: Self{Name: "me", PeerURLs: []string{tc.peer}}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			// Go's resolver shuffles records of equal priority by weight.
			if err != nil || sortedParts(got) != sortedParts(tc.want) {
				t.Fatalf("got %q, %v; want %q (in any order)", got, err, tc.want)
			}
		})
	}
	eps, err := clientEndpointsSRV(ctx, dnsSrv.Resolver(), "example.test", "")
	if err != nil || strings.Join(eps, ",") != "http://m0.example.test:2379" {
		t.Errorf("client endpoints: %v, %v", eps, err)
	}
}

// fakeV2 answers the discovery protocol's requests from a script.
func fakeV2(t *testing.T, handler func(w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(handler))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestJoinV2Errors(t *testing.T) {
	self := Self{Name: "n1", ID: 0xabc, PeerURLs: []string{"http://127.0.0.1:2380"}}
	quick := func(u string) V2Config {
		return V2Config{URL: u, Self: self, Retries: 2, RetryDelay: 10 * time.Millisecond, RequestTimeout: time.Second}
	}
	ctx := context.Background()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/v2/keys/d/tok"
	l.Close()
	if _, err := JoinV2(ctx, quick(closed)); !errors.Is(err, ErrTooManyRetries) {
		t.Errorf("unanswering URL: %v, want %v", err, ErrTooManyRetries)
	}
	for _, tc := range []struct {
		name string
		url  string
		want error
	}{
		{"not a URL", "::bad", ErrInvalidURL},
		{"no token", "http://127.0.0.1:1", ErrInvalidURL},
	} {
		if _, err := JoinV2(ctx, quick(tc.url)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	notJSON := fakeV2(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "<html>hello</html>") })
	if _, err := JoinV2(ctx, quick(notJSON+"/tok")); !errors.Is(err, ErrBadDiscoveryEndpoint) {
		t.Errorf("not a keys API: %v, want %v", err, ErrBadDiscoveryEndpoint)
	}
	noSize := fakeV2(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errorCode":100,"message":"Key not found","cause":"/tok","index":3}`)
	})
	if _, err := JoinV2(ctx, quick(noSize+"/tok")); !errors.Is(err, ErrSizeNotFound) {
		t.Errorf("missing size: %v, want %v", err, ErrSizeNotFound)
	}
	badSize := fakeV2(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"action":"get","node":{"key":"/tok/_config/size","value":"x"}}`)
	})
	if _, err := JoinV2(ctx, quick(badSize+"/tok")); !errors.Is(err, ErrBadSizeKey) {
		t.Errorf("bad size: %v, want %v", err, ErrBadSizeKey)
	}
	full := fakeV2(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/size") {
			fmt.Fprint(w, `{"action":"get","node":{"key":"/tok/_config/size","value":"1"}}`)
			return
		}
		w.Header().Set("X-Etcd-Index", "9")
		fmt.Fprint(w, `{"action":"get","node":{"key":"/tok","dir":true,"nodes":[{"key":"/tok/111","value":"other=http://10.0.0.1:2380","createdIndex":5}]}}`)
	})
	if _, err := JoinV2(ctx, quick(full+"/tok")); !errors.Is(err, ErrFullCluster) {
		t.Errorf("full token: %v, want %v", err, ErrFullCluster)
	}
	peers, err := ClusterPeersV2(ctx, quick(full+"/tok"))
	if err != nil || strings.Join(peers, ",") != "http://10.0.0.1:2380" {
		t.Errorf("peers of a full token: %v, %v", peers, err)
	}
}

func TestNodesToCluster(t *testing.T) {
	nodes := []*v2Node{{Value: "a=http://1:2380"}, {Value: "b=http://2:2380,b=http://3:2380"}}
	if got, err := nodesToCluster(nodes, 2); err != nil || got != "a=http://1:2380,b=http://2:2380,b=http://3:2380" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := nodesToCluster([]*v2Node{{Value: "a=http://1:2380"}, {Value: "a=http://2:2380"}}, 2); !errors.Is(err, ErrDuplicateName) {
		t.Errorf("duplicate name: %v", err)
	}
}

// TestJoinV2ThroughProxy: with --discovery-proxy the requests go to the
// HTTP proxy, asking for the discovery URL's host.
func TestJoinV2ThroughProxy(t *testing.T) {
	var hosts []string
	proxy := fakeV2(t, func(w http.ResponseWriter, r *http.Request) {
		hosts = append(hosts, r.URL.Host)
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errorCode":100,"message":"Key not found","cause":"/tok","index":3}`)
	})
	cfg := V2Config{URL: "http://discovery.invalid/tok", Proxy: proxy, Self: Self{Name: "n1", ID: 1, PeerURLs: []string{"http://127.0.0.1:2380"}},
		Retries: 1, RetryDelay: time.Millisecond}
	if _, err := JoinV2(context.Background(), cfg); !errors.Is(err, ErrSizeNotFound) {
		t.Fatalf("through a proxy: %v, want %v from the proxy's answer", err, ErrSizeNotFound)
	}
	if len(hosts) == 0 || hosts[0] != "discovery.invalid" {
		t.Fatalf("the proxy was asked for %v, want discovery.invalid", hosts)
	}
}
