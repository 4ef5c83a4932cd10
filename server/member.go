package server

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/kvsm"
	nodednet "github.com/noded/noded/net"
	"github.com/noded/noded/node"
	"github.com/noded/noded/server/auth"
	"github.com/noded/noded/server/etcddata"
	"github.com/noded/noded/server/tlsconfig"
)

// Bounds on every queue the member loop owns or reads.
const (
	// clientQueueMax bounds client requests waiting for the loop. A request
	// that finds it full waits up to clientQueueWait, then fails with
	// etcd's TooManyRequests.
	clientQueueMax  = 4096
	clientQueueWait = time.Second
	// pendingRequestsMax bounds requests handed to the node and not yet
	// answered (the node's own bound is higher; this one is the host's).
	pendingRequestsMax = 65536
	// inboundMessagesMax bounds raft messages from peers waiting for the
	// loop; past it they are dropped (raft resends).
	inboundMessagesMax = 4096
	// peerReportsMax bounds unreachable and snapshot reports waiting.
	peerReportsMax = 1024
	// watchOpsMax bounds watch stream requests waiting for the loop; a
	// stream's receiver waits when it is full.
	watchOpsMax = 4096
	// loopCallsMax bounds maintenance calls waiting to run on the loop.
	loopCallsMax = 64
	// diskQueueMax bounds writes queued for the disk goroutine. The node
	// holds back at most one waiting write, so this is only reached by
	// commit-only writes piling up behind a slow fsync.
	diskQueueMax = 256
	// snapshotQueueMax bounds local snapshots waiting for the snapshot
	// goroutine while it writes one. They come every --snapshot-count
	// entries, so the loop blocks here only when a snapshot file takes
	// longer to write than that many entries take to apply.
	snapshotQueueMax = 1
	// eventsPerRoundMax bounds the events one loop round takes before it
	// asks the node for effects, so that a flood of one kind cannot starve
	// the disk and the network of their batches.
	eventsPerRoundMax = 512
)

// Member runs one noded member: the node on a goroutine of its own, the
// disk writer, the peer transport and the client listeners.
type Member struct {
	cfg       Config
	lg        *zap.Logger
	id        uint64
	clusterID uint64
	dataDir   string

	node    *node.Node // owned by the loop goroutine
	storage *disk.Storage
	peers   *nodednet.TCPTransport

	requests chan *clientRequest
	inbound  chan *raftpb.Message
	reports  chan peerReport
	watchOps chan watchOp
	calls    chan func()
	diskJobs chan diskJob
	diskDone chan diskResult
	diskExit chan struct{}
	snapJobs chan *node.LocalSnapshot
	snapExit chan struct{}
	// snapDirMu keeps the snapshot goroutine's file writes apart from a
	// snapshot the leader sent, which the disk goroutine saves and which
	// lists and removes snapshot files.
	snapDirMu sync.Mutex
	stopLoop  chan struct{}
	loopExit  chan struct{}
	stopped   chan struct{} // closed once the member is fully stopped
	ready     chan struct{} // closed once the member serves clients (see publishState)
	readyOnce sync.Once
	stopOnce  sync.Once
	fatalOnce sync.Once
	fatalErr  atomic.Pointer[error]

	// Loop-owned state.
	pending        map[node.Handle]*clientRequest
	nextHandle     node.Handle
	streams        map[kvsm.StreamID]*hostStream
	blocked        map[kvsm.StreamID]struct{} // streams with dropped watchers or held replies
	owing          map[kvsm.StreamID]struct{} // streams owed request credits (settleWatchCredits)
	knownPeers     map[uint64][]string        // transport peers: ID -> URLs
	refusedRemoved int                        // removed IDs already handed to the transport
	compactor      *compactor
	lastLead       uint64
	leaderChanges  uint64

	state   atomic.Pointer[memberState]
	metrics *metrics
	v2stats memberV2Stats

	nextStream   atomic.Uint64
	idleReleases atomic.Uint64 // memory released while idle (memory.go)
	viewRepacked bool          // loop-owned: a repack step moved entries the published view holds
	repackedKeys atomic.Uint64 // key entries moved by idle repacks (memory.go)
	repackedLog  atomic.Uint64 // raft log entries moved by idle repacks (memory.go)
	loadPause    gcPause       // the collector off while loading (memory.go)
	clients      *clientServer
	forwarder    *forwarder

	// clientTLS and peerTLS serve the https client and peer URLs (nil
	// without TLS settings); clientDialTLS and peerDialTLS dial https
	// client URLs (forwarding to the leader) and peer URLs.
	clientTLS, peerTLS         *tlsconfig.Source
	clientDialTLS, peerDialTLS *tls.Config
	tokens                     *auth.Tokens // simple tokens and JWTs (server/auth)
	bcryptCost                 int
	lastExpired                time.Time // loop-owned: when simple tokens were last swept
}

// clientRequest is one request waiting for the node's answer.
type clientRequest struct {
	op   proto.Message
	ai   kvsm.AuthInfo    // who asked
	done chan node.Result // capacity 1: the loop never blocks on it
	// internal requests (auto compaction) are answered through onDone on
	// the loop instead.
	onDone func(node.Result)
	write  bool
}

type peerReport struct {
	id          uint64
	snapshot    bool
	unreachable bool
	failed      bool
}

type diskJob struct {
	persist *node.Persist
	// snapshotFile is a local snapshot's file, written by the snapshot
	// goroutine, for the WAL to commit; committed is closed once it did
	// (or dropped it after a failure).
	snapshotFile *disk.SnapshotFile
	committed    chan struct{}
}

type diskResult struct {
	seq uint64
	err error
}

// memberState is what the loop publishes after every round for other
// goroutines (health, metrics, forwarding, headers). It is never changed
// after publication.
type memberState struct {
	status node.Status
	alarms []*pb.AlarmMember
	dbSize int64
	// view is the applied key-value state, frozen: serializable reads are
	// served from it on the client's goroutine, without the loop.
	view *kvsm.View
}

func (s *memberState) hasLeader() bool { return s.status.Lead != raft.None }

// ErrRemoved is the member's error once it learnt it was removed.
var ErrRemoved = errors.New("the member has been permanently removed from the cluster")

// Start opens (or creates) the member's data directory, joins or forms
// the cluster, and starts serving peers and clients. It returns once
// every listener is up.
func Start(cfg Config) (*Member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	m := &Member{
		cfg:      cfg,
		lg:       lg,
		requests: make(chan *clientRequest, clientQueueMax),
		inbound:  make(chan *raftpb.Message, inboundMessagesMax),
		reports:  make(chan peerReport, peerReportsMax),
		watchOps: make(chan watchOp, watchOpsMax),
		calls:    make(chan func(), loopCallsMax),
		diskJobs: make(chan diskJob, diskQueueMax),
		// Room for every write the node can have outstanding, and a failure:
		// the disk goroutine never blocks reporting, so the loop, which may
		// block handing it a job, can always make progress.
		diskDone:   make(chan diskResult, node.PersistsInFlightMax+1),
		diskExit:   make(chan struct{}),
		snapJobs:   make(chan *node.LocalSnapshot, snapshotQueueMax),
		snapExit:   make(chan struct{}),
		stopLoop:   make(chan struct{}),
		loopExit:   make(chan struct{}),
		stopped:    make(chan struct{}),
		ready:      make(chan struct{}),
		pending:    map[node.Handle]*clientRequest{},
		streams:    map[kvsm.StreamID]*hostStream{},
		blocked:    map[kvsm.StreamID]struct{}{},
		owing:      map[kvsm.StreamID]struct{}{},
		knownPeers: map[uint64][]string{},
		metrics:    newMetrics(cfg.Metrics),
	}
	m.tokens = auth.NewTokens(cfg.authSpec, cfg.AuthTokenTTL, nil)
	m.bcryptCost = cfg.BcryptCost
	if m.bcryptCost < auth.BcryptCostMin || m.bcryptCost > auth.BcryptCostMax {
		lg.Warn("use default bcrypt cost instead of the invalid given cost",
			zap.Int("min-cost", auth.BcryptCostMin), zap.Int("max-cost", auth.BcryptCostMax),
			zap.Int("default-cost", auth.BcryptCostDefault), zap.Int("given-cost", m.bcryptCost))
		m.bcryptCost = auth.BcryptCostDefault
	}
	if cfg.authSpec.Type == auth.TokenSimple {
		lg.Warn("simple token is not cryptographically signed")
	}
	// Every certificate file is read before anything listens: bad input
	// stops the member with nothing started.
	if err := m.loadTLS(); err != nil {
		return nil, err
	}
	lg.Info(fmt.Sprintf("feature gates: %s", cfg.FeatureGates))
	for _, note := range cfg.FeatureGates.NoEffect() {
		lg.Warn(note)
	}
	m.v2stats.start = time.Now()
	peerListeners, err := m.listenPeers()
	if err != nil {
		return nil, err
	}
	// The client and metrics ports open now, before the data directory
	// loads (listen.go); a start that fails from here on closes them.
	closeEarly, err := m.listenClientsEarly()
	if err != nil {
		for _, l := range peerListeners {
			l.Close()
		}
		return nil, err
	}
	closeAll := func() {
		m.loadPause.end()
		for _, l := range peerListeners {
			l.Close()
		}
		closeEarly()
	}
	if cfg.PauseGCWhileLoading {
		m.loadPause.start()
	}
	joinMembers, err := m.openStorage()
	if err != nil {
		closeAll()
		return nil, err
	}
	transport, err := nodednet.NewTCPTransport(nodednet.Config{
		LocalID:   m.id,
		ClusterID: m.clusterID,
		TLS:       m.peerDialTLS,
		// A snapshot is the state the quota bounds, encoded: one larger
		// than twice the quota is refused before any of it is read, and
		// what arrives goes to a file, not memory, until it is whole.
		SnapshotBytesMax: snapshotBytesMax(cfg.QuotaBackendBytes),
		SnapshotSpoolDir: filepath.Join(m.dataDir, "member", "snap"),
		// A raft message carries at most one request over raft's
		// MaxSizePerMsg, so twice the larger of the two bounds it.
		FrameBytesMax: 2*max(cfg.MaxRequestBytes+grpcOverheadBytes, node.DefaultMaxSizePerMsg) + 1<<20,
		Logger: func(format string, args ...any) {
			lg.Info(fmt.Sprintf(format, args...))
		},
		WarnLogger: func(format string, args ...any) {
			lg.Warn(fmt.Sprintf(format, args...))
		},
		// A peer refused this member as removed: it was removed while it
		// could not hear about it, and stops as etcd's does.
		OnRemoved: func(by uint64) {
			m.fatal(ErrRemoved)
		},
	}, peerHandler{m})
	if err != nil {
		m.storage.Close()
		closeAll()
		return nil, err
	}
	m.peers = transport
	// The transport knows every member the committed log names before the
	// peer port opens: a restarted member applies its log only after it
	// starts, and must not refuse its peers meanwhile as strangers. Members
	// removed by then are refused as removed, so that one that missed its
	// removal learns it from this member too.
	committedMembers, removed := m.node.MembersAtCommit()
	for _, id := range removed {
		m.peers.RemovePeer(id)
	}
	m.refusedRemoved = len(removed)
	for _, cm := range committedMembers {
		if cm.ID != m.id {
			m.peers.AddPeer(cm.ID, slices.Clone(cm.PeerURLs))
			m.knownPeers[cm.ID] = slices.Clone(cm.PeerURLs)
		}
	}
	for _, jm := range joinMembers {
		if jm.ID != m.id {
			m.peers.AddPeer(jm.ID, jm.PeerURLs)
			m.knownPeers[jm.ID] = slices.Clone(jm.PeerURLs)
		}
	}
	m.registerMetrics()
	m.compactor = newCompactor(&m.cfg, lg)
	m.forwarder = newForwarder(m)
	m.publishState()
	st := m.node.Status()
	m.loadPause.until = st.CommitIndex
	if st.AppliedIndex >= st.CommitIndex {
		m.loadPause.end()
	}

	go m.runDisk()
	go m.runSnapshots()
	go m.run()
	if cfg.IdleMemoryRelease > 0 {
		go m.releaseMemoryWhenIdle(cfg.IdleMemoryRelease)
	}
	for i, pl := range peerListeners {
		m.servePeers(i, pl)
	}
	if cfg.InitialCorruptCheck {
		if err := m.initialCorruptCheck(st.CommitIndex); err != nil {
			m.lg.Error("initial corruption check failed", zap.Error(err))
			m.Stop()
			closeEarly()
			return nil, err
		}
	}
	if cfg.CorruptCheckTime > 0 || cfg.CompactHashCheck {
		go m.runCorruptChecks()
	}
	clients, err := newClientServer(m)
	if err != nil {
		m.Stop()
		closeEarly()
		return nil, err
	}
	m.clients = clients
	lg.Info("started member",
		zap.String("name", cfg.Name),
		zap.String("member-id", fmt.Sprintf("%x", m.id)),
		zap.String("cluster-id", fmt.Sprintf("%x", m.clusterID)),
		zap.String("data-dir", m.dataDir),
		zap.Strings("advertise-client-urls", URLStrings(cfg.AdvertiseClientURLs)),
		zap.Strings("listen-client-urls", clients.addrs()),
		zap.String("version", Version),
	)
	return m, nil
}

// snapshotSlackBytes is room in an inbound snapshot's bound beyond the
// quota's: leases, membership and encoding overhead of a small store.
const snapshotSlackBytes = 64 << 20

// snapshotBytesMax bounds the snapshots a member takes from its leader:
// twice its quota (a store is refused writes past its quota, and its
// encoding is smaller than what the quota counts) plus slack.
func snapshotBytesMax(quotaBytes int64) int64 {
	if quotaBytes <= 0 {
		quotaBytes = node.DefaultQuotaBackendBytes
	}
	return 2*quotaBytes + snapshotSlackBytes
}

// metadata is what the WAL holds about whose it is: member ID, cluster ID.
func walMetadata(memberID, clusterID uint64) []byte {
	return etcddata.WALMetadata(memberID, clusterID)
}

// openStorage opens the data directory, or creates it for a new or joining
// member, and builds the node. For a joining member it returns the
// members the cluster reported, to dial before the first snapshot arrives.
func (m *Member) openStorage() ([]node.Member, error) {
	cfg := &m.cfg
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	m.dataDir = dataDir
	walDir := filepath.Join(dataDir, "member", "wal")
	if cfg.WALDir != "" {
		if walDir, err = filepath.Abs(cfg.WALDir); err != nil {
			return nil, err
		}
	}
	snapDir := filepath.Join(dataDir, "member", "snap")
	// One FS over the whole tree, so that the WAL and the snapshots may live
	// on different paths (etcd's --wal-dir).
	fsys := cfg.FS
	if fsys == nil {
		fsys = disk.NewOSFS("/")
	}
	rel := func(p string) string { return strings.TrimPrefix(filepath.ToSlash(p), "/") }
	opts := disk.Options{SnapshotsKept: cfg.MaxSnapshots}
	// An etcd member's data directory is converted, and the member's own
	// files are then beside etcd's (etcdfiles.go).
	if walDir, snapDir, err = m.prepareDataDir(fsys, dataDir, walDir, snapDir); err != nil {
		return nil, err
	}

	if disk.Exists(fsys, rel(walDir)) {
		st, rec, err := disk.Open(fsys, rel(walDir), rel(snapDir), opts)
		if err != nil {
			var ce *disk.CorruptError
			if errors.As(err, &ce) {
				ce.File = "/" + ce.File // names are relative to the FS root, "/"
			}
			return nil, fmt.Errorf("open data directory %s: %w", dataDir, err)
		}
		logRecoveryNotes(m.lg, dataDir, rec.Notes)
		if len(rec.Metadata) != 16 {
			st.Close()
			return nil, fmt.Errorf("data directory %s: WAL metadata of %d bytes is not a noded member's", dataDir, len(rec.Metadata))
		}
		m.id = binary.BigEndian.Uint64(rec.Metadata[:8])
		m.clusterID = binary.BigEndian.Uint64(rec.Metadata[8:])
		if cfg.InitialClusterState == ClusterStateNew {
			members, self, clusterID, err := cfg.bootstrapMembers()
			if err == nil && clusterID != m.clusterID {
				st.Close()
				return nil, fmt.Errorf("data directory %s holds member %x of cluster %x, but --initial-cluster and --initial-cluster-token describe cluster %x: "+
					"start it with the flags of the cluster it belongs to, or give it another --data-dir", dataDir, m.id, m.clusterID, clusterID)
			}
			// No hard state reached the disk, so the member stopped before its
			// first sync: every write that carries entries carries or follows
			// a hard state, and a member sends nothing before its first sync.
			// It never took part, so it bootstraps again, whether the disk
			// kept nothing or kept the bootstrap entries without the hard
			// state written after them. Restarting would leave it with no
			// configuration, and a one-member cluster would never elect a
			// leader.
			// (With err nil, the cluster ID matched above.)
			if rec.Snapshot == nil && rec.HardState == nil && err == nil && self == m.id {
				n, err := node.Bootstrap(m.nodeConfig(), members)
				if err != nil {
					st.Close()
					return nil, err
				}
				m.lg.Info("data directory holds nothing of the first start; bootstrapping again",
					zap.String("member-id", fmt.Sprintf("%x", m.id)), zap.String("cluster-id", fmt.Sprintf("%x", m.clusterID)))
				m.storage, m.node = st, n
				return members, nil
			}
		}
		n, err := node.Restart(m.nodeConfig(), node.Durable{Snapshot: rec.Snapshot, HardState: rec.HardState, Entries: rec.Entries})
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("restart from %s: %w", dataDir, err)
		}
		m.lg.Info("restarting member from its data directory; --initial-cluster flags are ignored",
			zap.String("member-id", fmt.Sprintf("%x", m.id)), zap.String("cluster-id", fmt.Sprintf("%x", m.clusterID)),
			zap.Uint64("snapshot-index", rec.Snapshot.GetMetadata().GetIndex()), zap.Int("entries", len(rec.Entries)))
		m.storage, m.node = st, n
		return nil, nil
	}

	var joinMembers []node.Member
	var n *node.Node
	switch cfg.InitialClusterState {
	case ClusterStateNew:
		members, self, clusterID, err := cfg.bootstrapMembers()
		if err != nil {
			return nil, err
		}
		m.id, m.clusterID = self, clusterID
		if n, err = node.Bootstrap(m.nodeConfig(), members); err != nil {
			return nil, err
		}
		joinMembers = members
	default:
		cluster, err := fetchCluster(cfg, m.peerDialTLS)
		if err != nil {
			return nil, err
		}
		m.id, m.clusterID = cluster.self, cluster.clusterID
		if n, err = node.Restart(m.nodeConfig(), node.Durable{}); err != nil {
			return nil, err
		}
		joinMembers = cluster.members
	}
	st, err := disk.Create(fsys, rel(walDir), rel(snapDir), walMetadata(m.id, m.clusterID), opts)
	if err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dataDir, err)
	}
	m.storage, m.node = st, n
	return joinMembers, nil
}

func (m *Member) nodeConfig() node.Config {
	cfg := &m.cfg
	tickMs := cfg.HeartbeatMs
	// Request IDs as etcd's idutil makes them: the member's low 16 bits,
	// then milliseconds since the epoch, then a counter. Every incarnation
	// starts at a later time, so it never reuses an earlier one's IDs.
	base := (m.id&0xffff)<<48 | (uint64(time.Now().UnixMilli())&(1<<40-1))<<8
	return node.Config{
		ID:                       m.id,
		ClusterID:                m.clusterID,
		Name:                     cfg.Name,
		ClientURLs:               URLStrings(cfg.AdvertiseClientURLs),
		TickMs:                   tickMs,
		ElectionTicks:            int(cfg.ElectionMs / tickMs),
		HeartbeatTicks:           1,
		SnapshotCount:            cfg.SnapshotCount,
		SnapshotCatchUpEntries:   cfg.SnapshotCatchUpEntries,
		MaxTxnOps:                cfg.MaxTxnOps,
		MaxRequestBytes:          cfg.MaxRequestBytes,
		QuotaBackendBytes:        cfg.QuotaBackendBytes,
		WatchProgressNotifyTicks: max(1, int(cfg.WatchProgressNotifyInterval.Milliseconds()/tickMs)),
		MaxLearners:              cfg.MaxLearners,
		LeaseBasedReads:          cfg.LeaseBasedReads,
		StrictReconfigCheck:      cfg.StrictReconfigCheck,
		RequestIDBase:            base,
		Logger:                   raftLogger{m.lg.Named("raft").WithOptions(zap.AddCallerSkip(1)).Sugar()},
		Version:                  Version,
		Planted:                  plantedBugs,
	}
}

// ID is the member's ID; ClusterID the cluster's.
func (m *Member) ID() uint64        { return m.id }
func (m *Member) ClusterID() uint64 { return m.clusterID }

// ClientAddrs are the addresses the client listeners are bound to.
func (m *Member) ClientAddrs() []string { return m.clients.addrs() }

// Done is closed once the member has stopped, for any reason.
func (m *Member) Done() <-chan struct{} { return m.stopped }

// Err is why the member stopped on its own: a fatal disk error, or
// ErrRemoved. nil after Stop.
func (m *Member) Err() error {
	if p := m.fatalErr.Load(); p != nil {
		return *p
	}
	return nil
}

// fatal records err and stops the member. It never waits for the loop (it
// may be called from it).
func (m *Member) fatal(err error) {
	m.fatalOnce.Do(func() {
		m.fatalErr.Store(&err)
		if errors.Is(err, ErrRemoved) {
			m.lg.Warn("member stops: it was removed from the cluster", zap.String("member-id", fmt.Sprintf("%x", m.id)))
		} else {
			m.lg.Error("member stops on a fatal error", zap.Error(err))
		}
		go m.Stop()
	})
}

// Stop stops serving clients, ends the loop, lets the disk goroutine finish
// the writes it was handed, closes the storage and the transport. It is
// idempotent and returns once everything is stopped.
func (m *Member) Stop() {
	m.stopOnce.Do(func() {
		if m.Err() == nil {
			m.transferLeadership()
		}
		if m.clients != nil {
			m.clients.stop()
		}
		close(m.stopLoop)
		<-m.loopExit
		m.loadPause.end()
		close(m.snapJobs)
		<-m.snapExit
		close(m.diskJobs)
		<-m.diskExit
		if err := m.storage.Close(); err != nil {
			m.lg.Warn("close storage", zap.Error(err))
		}
		m.peers.Close()
		m.forwarder.close()
		close(m.stopped)
	})
	<-m.stopped
}

// transferLeadership hands leadership to a connected voter before a
// leader stops, as etcd does on a graceful stop, so that the cluster need
// not wait out an election timeout. It gives up after a bound.
func (m *Member) transferLeadership() {
	st := m.state.Load()
	if st == nil || st.status.State != raft.StateLeader {
		return
	}
	active := m.peers.ActivePeers()
	var target uint64
	for _, mem := range st.status.Members {
		if mem.ID != m.id && !mem.IsLearner && slices.Contains(active, mem.ID) {
			target = mem.ID
			break
		}
	}
	if target == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(internalCall(context.Background()), leaderTransferTimeout(m.cfg.ElectionMs))
	defer cancel()
	if _, err := m.do(ctx, &pb.MoveLeaderRequest{TargetID: target}); err != nil {
		m.lg.Warn("leadership transfer on stop failed", zap.String("target", fmt.Sprintf("%x", target)), zap.Error(err))
		return
	}
	m.lg.Info("transferred leadership before stopping", zap.String("to", fmt.Sprintf("%x", target)))
}

// leaderTransferTimeout bounds the leadership transfer on stop: a few
// election timeouts, at least a second.
func leaderTransferTimeout(electionMs int64) time.Duration {
	return max(time.Second, 3*time.Duration(electionMs)*time.Millisecond)
}

// run is the member loop: the only goroutine that touches the node.
func (m *Member) run() {
	defer close(m.loopExit)
	// Ticks are spaced at least one heartbeat interval apart as the loop
	// handles them, not as a time.Ticker schedules them: after a tick that
	// waited behind a busy round, a Ticker's next one can follow at once.
	// The node counts a lease renewal's TTL from the next tick, which is
	// then no earlier than the renewal plus one interval only if every
	// tick starts its interval when it is handled.
	tickInterval := time.Duration(m.cfg.HeartbeatMs) * time.Millisecond
	ticker := time.NewTimer(tickInterval)
	defer ticker.Stop()
	if m.cfg.InitialElectionTickAdvance {
		// etcd fast-forwards all but the last ticks of the first election
		// timeout so that a fresh cluster elects a leader in one tick
		// rather than a whole timeout; raft's randomised timeout still
		// spreads the candidates.
		for i := 0; i < int(m.cfg.ElectionMs/m.cfg.HeartbeatMs)-1; i++ {
			m.node.Tick()
		}
		// A member that is the cluster's only voter has nobody to wait
		// for: it campaigns at once rather than after the rest of a
		// randomised timeout (up to an election timeout more).
		m.node.CampaignIfSoleVoter()
	}
	for {
		select {
		case <-m.stopLoop:
			m.failPending(rpctypes.ErrGRPCStopped)
			return
		case <-ticker.C:
			m.onTick()
			ticker.Reset(tickInterval)
		case msg := <-m.inbound:
			m.node.Step(msg)
			runtime.Gosched()
		case req := <-m.requests:
			m.submit(req)
			// Let the goroutines of other calls that are ready to run hand
			// theirs in first, so that one round proposes them together:
			// a round costs raft a Ready, a write and a message to each
			// follower however many proposals it holds.
			runtime.Gosched()
		case op := <-m.watchOps:
			m.onWatchOp(op)
		case r := <-m.reports:
			m.onReport(r)
		case d := <-m.diskDone:
			if !m.onDiskDone(d) {
				return
			}
		case f := <-m.calls:
			f()
		}
		if !m.drain() {
			return
		}
		if !m.effects() {
			return
		}
		m.settleWatchCredits()
	}
}

// effectRoundsMax bounds the Effects calls one loop round makes: the node
// asks for another only to apply what it held back behind a write.
const effectRoundsMax = 64

// effects takes the node's effects and carries them out, again while the
// node says it has more: it returns early so that a write reaches the disk
// goroutine before the loop spends time applying the batch before it.
func (m *Member) effects() bool {
	for round := 0; round < effectRoundsMax; round++ {
		eff := m.node.Effects()
		// Published before results go out, so that a client that got an
		// answer reads at least that state from the published view.
		m.publishState()
		if !m.carryOut(eff) {
			return false
		}
		if !eff.More {
			return true
		}
	}
	return true
}

// drain takes events that are already waiting, up to eventsPerRoundMax,
// so that one round of effects covers them all (group commit: proposals
// that arrive while the disk syncs join one batch).
func (m *Member) drain() bool {
	for i := 0; i < eventsPerRoundMax; i++ {
		select {
		case msg := <-m.inbound:
			m.node.Step(msg)
		case req := <-m.requests:
			m.submit(req)
		case op := <-m.watchOps:
			m.onWatchOp(op)
		case r := <-m.reports:
			m.onReport(r)
		case d := <-m.diskDone:
			if !m.onDiskDone(d) {
				return false
			}
		default:
			return true
		}
	}
	return true
}

// tokenSweepEvery is how often expired simple tokens are dropped.
const tokenSweepEvery = time.Second

func (m *Member) onTick() {
	if now := time.Now(); now.Sub(m.lastExpired) >= tokenSweepEvery {
		m.lastExpired = now
		m.tokens.Expire()
	}
	m.node.Tick()
	m.retryBlockedStreams()
	m.compactor.maybeCompact(m)
}

func (m *Member) onReport(r peerReport) {
	if r.unreachable {
		m.node.ReportUnreachable(r.id)
	}
	if r.snapshot {
		m.node.ReportSnapshot(r.id, r.failed)
	}
}

func (m *Member) onDiskDone(d diskResult) bool {
	if d.err != nil {
		// The write may or may not be on disk: nothing that depends on it
		// may be acknowledged, so the member stops here.
		m.fatal(fmt.Errorf("disk: %w", d.err))
		m.failPending(rpctypes.ErrGRPCStopped)
		return false
	}
	m.node.Persisted(d.seq)
	return true
}

// submit hands a client request to the node under a fresh handle.
func (m *Member) submit(req *clientRequest) {
	if len(m.pending) >= pendingRequestsMax {
		m.answer(req, node.Result{Err: rpctypes.ErrGRPCRequestTooManyRequests})
		return
	}
	m.nextHandle++
	h := m.nextHandle
	m.pending[h] = req
	if req.write {
		m.metrics.proposalsPending.Add(1)
	}
	m.node.SubmitAs(h, req.op, req.ai)
}

func (m *Member) answer(req *clientRequest, r node.Result) {
	if req.onDone != nil {
		req.onDone(r)
		return
	}
	req.done <- r
}

func (m *Member) failPending(err error) {
	for h, req := range m.pending {
		delete(m.pending, h)
		if req.write {
			m.metrics.proposalsPending.Add(-1)
		}
		m.answer(req, node.Result{Handle: h, Err: err})
	}
}

// carryOut does what the node asked, in the order it asked: writes to the
// disk goroutine (which syncs and reports back), messages to peers,
// results to waiting clients, watch replies to their streams.
func (m *Member) carryOut(eff node.Effects) bool {
	for _, p := range eff.Persist {
		// The disk goroutine always takes jobs (after a failure it drops
		// them) and never blocks reporting back (diskDone has room for every
		// write the node can have outstanding), so this waits at most for
		// the writes ahead of it.
		m.diskJobs <- diskJob{persist: p}
	}
	if len(eff.Messages) > 0 {
		m.metrics.heartbeatsSent(eff.Messages, time.Now())
		m.v2stats.observeOut(eff.Messages)
		m.peers.Send(eff.Messages)
	}
	for _, r := range eff.Results {
		req, ok := m.pending[r.Handle]
		if !ok {
			continue
		}
		delete(m.pending, r.Handle)
		if req.write {
			m.metrics.proposalsPending.Add(-1)
			if isProposalFailure(r.Err) {
				m.metrics.proposalsFailed.Add(1)
			}
		}
		m.answer(req, r)
	}
	m.followAuth(eff.Auth)
	for _, sr := range eff.Watch {
		m.deliverWatch(sr)
	}
	if eff.SaveSnapshot != nil {
		m.snapJobs <- eff.SaveSnapshot
	}
	if eff.Removed {
		m.fatal(ErrRemoved)
		m.failPending(rpctypes.ErrGRPCStopped)
		return false
	}
	return true
}

// isProposalFailure tells a proposal that failed in the cluster (timeout,
// leader loss, overload) from one the state machine answered with an error.
func isProposalFailure(err error) bool {
	if err == nil {
		return false
	}
	var nl *node.NotLeaderError
	if errors.As(err, &nl) {
		return true
	}
	switch err {
	case rpctypes.ErrGRPCTimeout, rpctypes.ErrGRPCLeaderChanged, rpctypes.ErrGRPCNoLeader,
		rpctypes.ErrGRPCRequestTooManyRequests, rpctypes.ErrGRPCStopped, rpctypes.ErrGRPCTimeoutDueToLeaderFail:
		return true
	}
	return false
}

// publishState makes the node's status visible to other goroutines and
// keeps the transport's peers in step with the member table.
func (m *Member) publishState() {
	st := m.node.Status()
	store := m.node.Store()
	s := &memberState{status: st, alarms: store.Alarms(), dbSize: store.SizeBytes()}
	// A view is O(1) to take, but the next write after it copies the
	// tree path it touches: take one only when the state changed.
	if prev := m.state.Load(); prev != nil && prev.view != nil && !m.viewRepacked && prev.status.Revision == st.Revision && prev.status.CompactRevision == st.CompactRevision && prev.view.AuthCurrent(store) {
		s.view = prev.view
	} else {
		s.view = store.View()
		m.viewRepacked = false
	}
	prev := m.state.Load()
	if prev != nil {
		m.logMembershipChanges(prev.status.Members, st.Members)
	}
	if st.Lead != m.lastLead {
		m.logLeaderChange(m.lastLead, st.Lead, st.Term)
		m.v2stats.noteLeader(st.Lead)
		if st.Lead != raft.None {
			m.leaderChanges++
			m.metrics.leaderChanges.Store(m.leaderChanges)
		}
		m.lastLead = st.Lead
	}
	m.state.Store(s)
	if m.loadPause.active && st.AppliedIndex >= m.loadPause.until {
		m.loadPause.end()
	}
	m.maybeReady(st)
	m.syncPeers(st.Members)
}

// maybeReady opens the client port once the member has a leader and the
// applied member table carries this member's name and client URLs, as
// etcd serves clients only after its published attributes are applied
// (ReadyNotify): until then connections wait rather than fail with "no
// leader".
func (m *Member) maybeReady(st node.Status) {
	select {
	case <-m.ready:
		return // already serving clients
	default:
	}
	if st.Lead == raft.None {
		return
	}
	for _, mem := range st.Members {
		if mem.ID == m.id && mem.Name == m.cfg.Name && slices.Equal(mem.ClientURLs, URLStrings(m.cfg.AdvertiseClientURLs)) {
			m.readyOnce.Do(func() {
				m.logPublished(mem)
				m.lg.Info("ready to serve client requests", zap.String("member-id", fmt.Sprintf("%x", m.id)))
				close(m.ready)
			})
			return
		}
	}
}

// Ready is closed once the member serves clients.
func (m *Member) Ready() <-chan struct{} { return m.ready }

// Alive returns nil once the member loop has run a call: the loop is not
// stuck (for a watchdog).
func (m *Member) Alive(ctx context.Context) error { return m.call(ctx, func() {}) }

func (m *Member) syncPeers(members []node.Member) {
	if len(members) == 0 {
		return // not applied yet (a joining member before its snapshot)
	}
	changed := false
	others := 0
	for _, mem := range members {
		if mem.ID == m.id {
			continue
		}
		others++
		known, ok := m.knownPeers[mem.ID]
		switch {
		case !ok:
			m.peers.AddPeer(mem.ID, slices.Clone(mem.PeerURLs))
		case !slices.Equal(known, mem.PeerURLs):
			m.peers.UpdatePeer(mem.ID, slices.Clone(mem.PeerURLs))
		default:
			continue
		}
		m.knownPeers[mem.ID] = slices.Clone(mem.PeerURLs)
		changed = true
	}
	// Every other member is known now (member IDs are unique), so a known
	// peer is gone only when there are more known peers than other members.
	if len(m.knownPeers) != others {
		for id := range m.knownPeers {
			if !slices.ContainsFunc(members, func(mem node.Member) bool { return mem.ID == id }) {
				delete(m.knownPeers, id)
				changed = true
			}
		}
	}
	if !changed {
		return
	}
	// Removed from the cluster: the transport refuses their streams with
	// the removed verdict from now on. The list only grows.
	if removed := m.node.RemovedMembers(); len(removed) > m.refusedRemoved {
		for _, id := range removed {
			m.peers.RemovePeer(id)
		}
		m.refusedRemoved = len(removed)
	}
}

// runDisk is the disk goroutine. It takes the next job and every job
// already queued behind it (up to diskBatchMax), writes them in order, and
// syncs once for all the writes the node waits on among them (group
// commit: the node hands over a write per raft Ready, and several pile up
// while a sync runs); then it reports each of those durable, in order.
// After an error it reports once and drops the rest: the member is
// stopping.
func (m *Member) runDisk() {
	defer close(m.diskExit)
	var failed bool
	batch := make([]diskJob, 0, diskBatchMax)
	for job := range m.diskJobs {
		if failed {
			if job.committed != nil {
				close(job.committed)
			}
			continue
		}
		batch = append(batch[:0], job)
	collect:
		for len(batch) < diskBatchMax {
			select {
			case next, ok := <-m.diskJobs:
				if !ok {
					break collect
				}
				batch = append(batch, next)
			default:
				break collect
			}
		}
		err := m.writeBatch(batch)
		for _, j := range batch {
			if j.committed != nil {
				close(j.committed)
			}
		}
		if err != nil {
			failed = true
			m.diskDone <- diskResult{err: err}
			continue
		}
		for _, j := range batch {
			if j.persist != nil && j.persist.Wait {
				m.diskDone <- diskResult{seq: j.persist.Seq}
			}
		}
	}
}

// diskBatchMax bounds the jobs one sync covers.
const diskBatchMax = 256

// runSnapshots is the snapshot goroutine. It encodes each local snapshot
// from the state the node froze and writes its file (hundreds of megabytes
// for a large store: encoding, writing and an fsync) beside the member's
// loop and the disk goroutine rather than on them, so that neither the
// loop (a restart that replayed a long log takes a snapshot before it
// campaigns) nor the WAL's group commit, and every client waiting on
// them, stalls behind the file. The disk goroutine then commits the file with a WAL record in the
// log's order; the next file is written only after that commit, which
// releases old snapshot files. A failed write is as fatal as a failed
// fsync of the log.
func (m *Member) runSnapshots() {
	defer close(m.snapExit)
	failed := false
	for local := range m.snapJobs {
		if failed {
			continue
		}
		start := time.Now()
		snap := local.Encode()
		m.snapDirMu.Lock()
		f, err := m.storage.WriteSnapshotFile(snap)
		m.snapDirMu.Unlock()
		if err != nil {
			failed = true
			m.fatal(err)
			continue
		}
		job := diskJob{snapshotFile: &f, committed: make(chan struct{})}
		m.diskJobs <- job
		<-job.committed
		m.metrics.snapshotSave.observe(time.Since(start).Seconds())
		m.lg.Debug("saved snapshot", zap.Stringer("snapshot", f), zap.Duration("took", time.Since(start)))
	}
}

// writeBatch writes jobs in order and syncs once if any of them is a write
// the node waits on. A local snapshot's file is committed (and made
// durable) in its place in the order.
func (m *Member) writeBatch(jobs []diskJob) error {
	wait := false
	for _, job := range jobs {
		if job.snapshotFile != nil {
			start := time.Now()
			if err := m.storage.CommitSnapshot(*job.snapshotFile); err != nil {
				return err
			}
			m.metrics.backendSave.observe(time.Since(start).Seconds())
			continue
		}
		p := job.persist
		if p.Snapshot != nil {
			m.snapDirMu.Lock()
			err := m.storage.SaveSnapshot(p.Snapshot)
			m.snapDirMu.Unlock()
			if err != nil {
				return err
			}
		}
		if err := m.storage.Append(p.HardState, p.Entries); err != nil {
			return err
		}
		wait = wait || p.Wait
	}
	if !wait {
		return nil
	}
	start := time.Now()
	err := m.storage.Sync()
	m.metrics.walFsync.observe(time.Since(start).Seconds())
	return err
}

// do hands a request to the loop and waits for its answer. A full queue
// answers TooManyRequests after clientQueueWait rather than blocking.
//
// The caller's identity comes from ctx (identity): a call the member makes
// itself must carry internalCall.
func (m *Member) do(ctx context.Context, op proto.Message) (proto.Message, error) {
	ai, err := m.identity(ctx)
	if err != nil {
		return nil, err
	}
	req := &clientRequest{op: op, ai: ai, done: make(chan node.Result, 1), write: isWrite(op)}
	select {
	case m.requests <- req:
	default:
		timer := time.NewTimer(clientQueueWait)
		defer timer.Stop()
		select {
		case m.requests <- req:
		case <-timer.C:
			return nil, rpctypes.ErrGRPCRequestTooManyRequests
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-m.stopLoop:
			return nil, rpctypes.ErrGRPCStopped
		}
	}
	select {
	case r := <-req.done:
		return r.Resp, r.Err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-m.loopExit:
		return nil, rpctypes.ErrGRPCStopped
	}
}

func isWrite(op proto.Message) bool {
	switch r := op.(type) {
	case *pb.PutRequest, *pb.DeleteRangeRequest, *pb.CompactionRequest, *pb.LeaseGrantRequest, *pb.LeaseRevokeRequest:
		return true
	case *pb.TxnRequest:
		return !kvsm.IsTxnReadOnly(r)
	}
	return false
}

// call runs f on the loop goroutine (with the node) and waits for it.
func (m *Member) call(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case m.calls <- func() { f(); close(done) }:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-m.stopLoop:
		return rpctypes.ErrGRPCStopped
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-m.loopExit:
		return rpctypes.ErrGRPCStopped
	}
}

// peerHandler receives what the transport delivers and hands it to the
// loop's bounded queues without blocking the transport for long.
type peerHandler struct{ m *Member }

var errInboundFull = errors.New("server: inbound message queue full; message dropped")

func (h peerHandler) Process(msg *raftpb.Message) error {
	m := h.m
	m.metrics.heartbeatAnswered(msg, time.Now())
	m.v2stats.observeIn(msg)
	if msg.GetType() == raftpb.MessageType_MsgSnap {
		// A snapshot took a while to arrive; wait for room rather than make
		// the leader send it again.
		select {
		case m.inbound <- msg:
			return nil
		case <-m.stopLoop:
			return rpctypes.ErrGRPCStopped
		}
	}
	select {
	case m.inbound <- msg:
		return nil
	default:
		m.metrics.inboundDropped.Add(1)
		return errInboundFull
	}
}

func (h peerHandler) ReportUnreachable(id uint64) {
	select {
	case h.m.reports <- peerReport{id: id, unreachable: true}:
	default: // raft learns it again from the next failed send
	}
}

func (h peerHandler) ReportSnapshot(id uint64, failed bool) {
	// raft waits for this outcome before it sends the follower anything
	// else, so it is never dropped.
	select {
	case h.m.reports <- peerReport{id: id, snapshot: true, failed: failed}:
	case <-h.m.stopLoop:
	}
}

// raftLogger sends raft's log to zap; debug lines are dropped.
type raftLogger struct{ s *zap.SugaredLogger }

func (l raftLogger) Debug(...any)                {}
func (l raftLogger) Debugf(string, ...any)       {}
func (l raftLogger) Error(v ...any)              { l.s.Error(v...) }
func (l raftLogger) Errorf(f string, v ...any)   { l.s.Errorf(f, v...) }
func (l raftLogger) Info(v ...any)               { l.s.Info(v...) }
func (l raftLogger) Infof(f string, v ...any)    { l.s.Infof(f, v...) }
func (l raftLogger) Warning(v ...any)            { l.s.Warn(v...) }
func (l raftLogger) Warningf(f string, v ...any) { l.s.Warnf(f, v...) }
func (l raftLogger) Fatal(v ...any)              { l.s.Fatal(v...) }
func (l raftLogger) Fatalf(f string, v ...any)   { l.s.Fatalf(f, v...) }
func (l raftLogger) Panic(v ...any)              { l.s.Panic(v...) }
func (l raftLogger) Panicf(f string, v ...any)   { l.s.Panicf(f, v...) }
