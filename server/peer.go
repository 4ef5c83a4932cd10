package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	nodednet "github.com/noded/noded/net"
	"github.com/noded/noded/node"
	"github.com/noded/noded/server/connmux"
)

// peerMagic is the first bytes of a noded transport connection (package
// net's preamble); anything else on the peer port is HTTP.
const peerMagic = "NDPR"

// Joining a running cluster (--initial-cluster-state existing): the new
// member asks the peers in --initial-cluster for the member list, as etcd
// does over its peer port: GET /members answers the members as JSON with
// the cluster ID in X-Etcd-Cluster-ID.
const (
	// joinAttemptTimeout bounds one GET /members.
	joinAttemptTimeout = 2 * time.Second
	// joinTimeout bounds the whole search for a peer that answers.
	joinTimeout = 30 * time.Second
	// membersResponseBytesMax bounds the member list read from a peer.
	membersResponseBytesMax = 4 << 20
)

// peerMember is one member on the peer API (etcd's membership.Member JSON).
type peerMember struct {
	ID         uint64   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

func (m *Member) listenPeers() ([]stdnet.Listener, error) {
	if m.cfg.PeerListeners != nil {
		return m.cfg.PeerListeners, nil
	}
	return listenURLs("peer", m.cfg.ListenPeerURLs)
}

// Routes of the peer port.
const (
	peerRouteTransport = iota
	peerRouteHTTP
	peerRoutes
)

// classifyPeer routes a peer-port connection by its first bytes (after
// TLS on an https port): the transport's preamble, or HTTP.
func classifyPeer(c connmux.Conn) int {
	head, err := c.Peek(len(peerMagic))
	switch {
	case string(head) == peerMagic:
		return peerRouteTransport
	case len(head) == 0 && err != nil:
		return connmux.Reject
	}
	return peerRouteHTTP
}

// servePeers splits a peer listener (the i-th) between the transport and
// the peer HTTP API. Both end when the member stops (the transport closes
// its listener, which closes the port; the HTTP server ends with it).
func (m *Member) servePeers(i int, raw stdnet.Listener) {
	mux := m.newMux("peer", raw, schemeOf(m.cfg.ListenPeerURLs, i), m.peerTLS, peerRoutes, classifyPeer)
	srv := &http.Server{Handler: m.peerHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(m.lg)}
	go mux.Serve()
	go func() {
		err := m.peers.Serve(mux.Listener(peerRouteTransport))
		if err != nil && !errors.Is(err, stdnet.ErrClosed) && !errors.Is(err, nodednet.ErrClosed) {
			m.lg.Debug("peer transport stopped serving", zap.Error(err))
		}
		mux.Close()
		srv.Close()
	}()
	go srv.Serve(mux.Listener(peerRouteHTTP))
}

func (m *Member) peerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/members", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		st := m.state.Load()
		out := make([]peerMember, 0, len(st.status.Members))
		for _, mem := range st.status.Members {
			out = append(out, peerMember{ID: mem.ID, Name: mem.Name, PeerURLs: nonNil(mem.PeerURLs), ClientURLs: nonNil(mem.ClientURLs), IsLearner: mem.IsLearner})
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Etcd-Cluster-ID", strconv.FormatUint(m.clusterID, 16))
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		writeVersion(w)
	})
	return mux
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type fetchedCluster struct {
	clusterID uint64
	self      uint64
	members   []node.Member
}

// fetchCluster asks the peers of --initial-cluster for the member list and
// finds this member in it by its advertised peer URLs; https peers are
// dialled with dialTLS.
func fetchCluster(cfg *Config, dialTLS *tls.Config) (fetchedCluster, error) {
	initial, err := parseInitialCluster(cfg.InitialCluster)
	if err != nil {
		return fetchedCluster{}, err
	}
	own := URLStrings(cfg.InitialAdvertisePeerURLs)
	slices.Sort(own)
	var targets []string
	for _, im := range initial {
		for _, u := range im.peerURLs {
			if !slices.Contains(own, u) {
				targets = append(targets, u)
			}
		}
	}
	if len(targets) == 0 {
		return fetchedCluster{}, errors.New("--initial-cluster-state existing: --initial-cluster lists no other member to join through")
	}
	client := &http.Client{Timeout: joinAttemptTimeout, Transport: &http.Transport{TLSClientConfig: dialTLS}}
	deadline := time.Now().Add(joinTimeout)
	var errs []string
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		errs = errs[:0]
		for _, t := range targets {
			fc, err := fetchClusterFrom(client, t)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", t, err))
				continue
			}
			for _, mem := range fc.members {
				urls := slices.Clone(mem.PeerURLs)
				slices.Sort(urls)
				if slices.Equal(urls, own) {
					fc.self = mem.ID
					return fc, nil
				}
			}
			return fetchedCluster{}, fmt.Errorf("cluster %x has no member with peer URLs %s: add it first (etcdctl member add %s --peer-urls=%s)",
				fc.clusterID, strings.Join(own, ","), cfg.Name, strings.Join(own, ","))
		}
		time.Sleep(min(time.Second, time.Until(deadline)))
	}
	return fetchedCluster{}, fmt.Errorf("cannot fetch cluster info from peer urls: %s", strings.Join(errs, "; "))
}

func fetchClusterFrom(client *http.Client, peerURL string) (fetchedCluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), joinAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peerURL, "/")+"/members", nil)
	if err != nil {
		return fetchedCluster{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fetchedCluster{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fetchedCluster{}, fmt.Errorf("GET /members: %s", resp.Status)
	}
	clusterID, err := strconv.ParseUint(resp.Header.Get("X-Etcd-Cluster-ID"), 16, 64)
	if err != nil || clusterID == 0 {
		return fetchedCluster{}, fmt.Errorf("GET /members: bad X-Etcd-Cluster-ID %q", resp.Header.Get("X-Etcd-Cluster-ID"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, membersResponseBytesMax))
	if err != nil {
		return fetchedCluster{}, err
	}
	var pms []peerMember
	if err := json.Unmarshal(body, &pms); err != nil {
		return fetchedCluster{}, fmt.Errorf("GET /members: %w", err)
	}
	if len(pms) == 0 {
		return fetchedCluster{}, errors.New("GET /members: the member does not know its cluster yet")
	}
	fc := fetchedCluster{clusterID: clusterID}
	for _, pm := range pms {
		fc.members = append(fc.members, node.Member{ID: pm.ID, Name: pm.Name, PeerURLs: pm.PeerURLs, ClientURLs: pm.ClientURLs, IsLearner: pm.IsLearner})
	}
	return fc, nil
}
