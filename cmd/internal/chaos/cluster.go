package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/cmd/internal/memberproc"
)

// cluster is the member processes of one run, their proxies and mounts.
type cluster struct {
	plan    Plan
	binary  string
	dir     string // the run's directory: data, logs, artifacts
	token   string
	env     []string
	links   *links
	members []*member
	proxies []*proxy
	logf    func(format string, args ...any)

	mu     sync.Mutex // guards the members' processes (pids for the proxy)
	closed bool
}

// member is one slot of the cluster: a name, fixed URLs, and the process
// of its current incarnation (a replaced member starts a new incarnation
// in a fresh data directory; the old one is kept for its WAL).
type member struct {
	slot         int
	name         string
	clientURL    string
	peerURL      string // the proxy's: what the cluster knows the member by
	realPeerURL  string // where the process listens for peers
	root         string // holds the data directories (a mount point for lazyfs/tmpfs)
	dataDirs     []string
	id           uint64
	removed      bool // removed from the cluster and not (yet) added back
	args         []string
	cmd          *exec.Cmd
	exited       chan struct{}
	paused       bool
	log          *os.File
	lazy         *lazyFS
	disk         *smallDisk
	admin        *clientv3.Client // to this member alone
	incarnations int
}

const (
	// memberReadyTimeout bounds a member's start until it serves reads.
	memberReadyTimeout = 60 * time.Second
	// memberStopTimeout bounds a graceful stop before SIGKILL.
	memberStopTimeout = 10 * time.Second
	// adminTimeout bounds one admin call (status, member list, move leader).
	adminTimeout = 5 * time.Second
)

func (m *member) dataDir() string { return m.dataDirs[len(m.dataDirs)-1] }

func (m *member) running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

func newCluster(plan Plan, binary, dir string, env []string, logf func(string, ...any)) (*cluster, error) {
	c := &cluster{plan: plan, binary: binary, dir: dir, env: env, links: newLinks(), logf: logf,
		token: fmt.Sprintf("chaos-%d-%d", plan.Seed, time.Now().UnixNano())}
	ports, err := memberproc.FreePorts(3 * plan.Members)
	if err != nil {
		return nil, err
	}
	for i := 0; i < plan.Members; i++ {
		m := &member{
			slot:        i,
			name:        fmt.Sprintf("m%d", i+1),
			clientURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[3*i]),
			realPeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+1]),
			peerURL:     fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+2]),
			root:        filepath.Join(dir, fmt.Sprintf("m%d", i+1)),
		}
		c.members = append(c.members, m)
	}
	return c, nil
}

// start mounts what the plan needs, starts the proxies and the members, and
// waits until every member serves linearizable reads.
func (c *cluster) start() error {
	for _, m := range c.members {
		var err error
		switch {
		case m.slot == c.plan.DiskFullMember:
			m.disk, err = mountSmallDisk(m.root)
		case c.plan.LazyFS:
			m.lazy, err = mountLazyFS(m.root+".backing", m.root, c.plan.SlowFsync)
		default:
			err = os.MkdirAll(m.root, 0o755)
		}
		if err != nil {
			return err
		}
		if m.log, err = os.Create(filepath.Join(c.dir, m.name+".log")); err != nil {
			return err
		}
		p, err := startProxy(m.slot, strings.TrimPrefix(m.peerURL, "http://"), strings.TrimPrefix(m.realPeerURL, "http://"), c.links, c.dialerSlot)
		if err != nil {
			return fmt.Errorf("proxy for %s: %w", m.name, err)
		}
		c.proxies = append(c.proxies, p)
		if m.admin, err = clientv3.New(clientv3.Config{Endpoints: []string{m.clientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()}); err != nil {
			return err
		}
	}
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for _, m := range c.members {
		m.dataDirs = append(m.dataDirs, filepath.Join(m.root, "data-1"))
		m.incarnations = 1
		m.args = c.memberArgs(m, strings.Join(initial, ","), "new")
		if err := c.startProcess(m); err != nil {
			return err
		}
	}
	for _, m := range c.members {
		if err := c.waitReady(m); err != nil {
			return err
		}
	}
	for _, m := range c.members {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		st, err := m.admin.Status(ctx, m.clientURL)
		cancel()
		if err != nil {
			return fmt.Errorf("status of %s: %w", m.name, err)
		}
		m.id = st.Header.MemberId
	}
	return nil
}

func (c *cluster) memberArgs(m *member, initialCluster, state string) []string {
	args := memberproc.BootstrapArgs(m.name, m.dataDir(), m.clientURL, m.peerURL, initialCluster, c.token)
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--listen-peer-urls="):
			args[i] = "--listen-peer-urls=" + m.realPeerURL
		case strings.HasPrefix(a, "--initial-cluster-state="):
			args[i] = "--initial-cluster-state=" + state
		case strings.HasPrefix(a, "--heartbeat-interval="):
			args[i] = fmt.Sprintf("--heartbeat-interval=%d", c.plan.HeartbeatMs)
		case strings.HasPrefix(a, "--election-timeout="):
			args[i] = fmt.Sprintf("--election-timeout=%d", c.plan.ElectionMs)
		}
	}
	return append(args, fmt.Sprintf("--snapshot-count=%d", c.plan.SnapshotCount))
}

func (c *cluster) startProcess(m *member) error {
	cmd := exec.Command(c.binary, m.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = m.log, m.log
	cmd.SysProcAttr = memberproc.SysProcAttr()
	fmt.Fprintf(m.log, "=== nodechaos: start %s incarnation %d: %s %s\n", m.name, m.incarnations, c.binary, strings.Join(m.args, " "))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(m.log, "=== nodechaos: %s exited: %v\n", m.name, err)
		close(exited)
	}()
	m.cmd, m.exited, m.paused = cmd, exited, false
	return nil
}

func (c *cluster) waitReady(m *member) error {
	err := memberproc.WaitReady(m.clientURL, "chaos-probe", memberReadyTimeout, func() bool { return !m.running() }, nil)
	if err != nil {
		return fmt.Errorf("%s not ready (log %s): %w", m.name, m.log.Name(), err)
	}
	return nil
}

// dialerSlot tells the proxy which member opened a connection.
func (c *cluster) dialerSlot(conn net.Conn) (int, error) {
	c.mu.Lock()
	pids := map[int]int{}
	var list []int
	for _, m := range c.members {
		if m.cmd != nil && m.cmd.Process != nil {
			pids[m.cmd.Process.Pid] = m.slot
			list = append(list, m.cmd.Process.Pid)
		}
	}
	c.mu.Unlock()
	pid, err := dialerPID(conn, list)
	if err != nil {
		return 0, err
	}
	return pids[pid], nil
}

func (c *cluster) signal(m *member, sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.cmd != nil && m.cmd.Process != nil {
		_ = syscall.Kill(-m.cmd.Process.Pid, sig)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *cluster) kill(m *member) {
	if !m.running() {
		return
	}
	c.signal(m, syscall.SIGKILL)
	<-m.exited
	m.paused = false
}

func (c *cluster) pause(m *member) {
	if m.running() {
		c.signal(m, syscall.SIGSTOP)
		m.paused = true
	}
}

func (c *cluster) resume(m *member) {
	if m.paused {
		c.signal(m, syscall.SIGCONT)
		m.paused = false
	}
}

// restart starts a member whose process is gone, with the same flags.
func (c *cluster) restart(m *member) error {
	if m.running() || m.removed {
		return nil
	}
	return c.startProcess(m)
}

// stopAll stops every member gracefully (SIGTERM, then SIGKILL after a
// while), so that their WALs are closed before they are read.
func (c *cluster) stopAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		c.resume(m)
		if !m.running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.signal(m, syscall.SIGTERM)
			select {
			case <-m.exited:
			case <-time.After(memberStopTimeout):
				c.kill(m)
			}
		}()
	}
	wg.Wait()
}

// close releases everything but the run directory. It may be called more
// than once.
func (c *cluster) close() {
	if c.closed {
		return
	}
	c.closed = true
	for _, m := range c.members {
		c.kill(m)
		if m.admin != nil {
			m.admin.Close()
		}
	}
	for _, p := range c.proxies {
		p.close()
	}
	for _, m := range c.members {
		if m.lazy != nil {
			if err := m.lazy.unmount(); err != nil {
				c.logf("unmount %s: %v", m.root, err)
			}
		}
		if m.disk != nil {
			if err := m.disk.unmount(); err != nil {
				c.logf("unmount %s: %v", m.root, err)
			}
		}
		if m.log != nil {
			m.log.Close()
		}
	}
}

// status asks one member for its status.
func (c *cluster) status(m *member) (*clientv3.StatusResponse, error) {
	if !m.running() || m.paused {
		return nil, errors.New("not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	return m.admin.Status(ctx, m.clientURL)
}

// leader returns the member the running members agree leads, if any.
func (c *cluster) leader() (*member, error) {
	votes := map[uint64]int{}
	for _, m := range c.members {
		if st, err := c.status(m); err == nil && st.Leader != 0 {
			votes[st.Leader]++
		}
	}
	var best uint64
	for id, n := range votes {
		if n > votes[best] || (n == votes[best] && id < best) {
			best = id
		}
	}
	for _, m := range c.members {
		if best != 0 && m.id == best && !m.removed {
			return m, nil
		}
	}
	return nil, errors.New("no leader")
}

func (c *cluster) byTarget(slot int) (*member, error) {
	if slot >= 0 {
		return c.members[slot], nil
	}
	return c.leader()
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// clusterClient is a client to every member, for membership changes.
func (c *cluster) clusterClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: c.endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
}

// replace removes m from the cluster, kills it, and adds it back as a new
// member with an empty data directory.
func (c *cluster) replace(m *member) error {
	cli, err := c.clusterClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	_, err = cli.MemberRemove(ctx, m.id)
	cancel()
	if err != nil && !c.gone(m) {
		return fmt.Errorf("remove %s (%x): %w", m.name, m.id, err)
	}
	m.removed = true
	c.logf("removed %s (%x)", m.name, m.id)
	// A removed member stops by itself once it learns it; it may never
	// learn it if it was cut off, so it is killed either way.
	select {
	case <-m.exited:
	case <-time.After(2 * time.Second):
	}
	c.kill(m)
	return c.addBack(m)
}

// gone reports whether m is no longer in the member list the other
// members give. A remove whose answer was lost may still have applied:
// the member removed is often the one that answered, and it stops, closing
// the connection, as soon as it applies its own removal.
func (c *cluster) gone(m *member) bool {
	var eps []string
	for _, o := range c.members {
		if o != m {
			eps = append(eps, o.clientURL)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return false
	}
	defer cli.Close()
	for attempt := 0; attempt < addBackAttempts; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		list, err := cli.MemberList(ctx)
		cancel()
		if err == nil {
			return !slices.ContainsFunc(list.Members, func(pm *pb.Member) bool { return pm.ID == m.id })
		}
		time.Sleep(time.Second)
	}
	return false
}

// addBack adds a removed member again, as a new member, and waits until it
// serves reads. An add proposed while the remove before it is not yet
// applied everywhere is dropped by raft (one configuration change at a
// time) and times out, as it does with etcd; an add that timed out may
// also have applied. So the add is retried, and the member list asked
// whether an earlier attempt took.
func (c *cluster) addBack(m *member) error {
	cli, err := c.clusterClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	var members []*pb.Member
	var id uint64
	var lastErr error
	for attempt := 0; attempt < addBackAttempts && id == 0; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		resp, err := cli.MemberAdd(ctx, []string{m.peerURL})
		cancel()
		if err == nil {
			id, members = resp.Member.ID, resp.Members
			break
		}
		lastErr = err
		ctx, cancel = context.WithTimeout(context.Background(), adminTimeout)
		list, lerr := cli.MemberList(ctx)
		cancel()
		if lerr == nil {
			for _, pm := range list.Members {
				if slices.Contains(pm.PeerURLs, m.peerURL) {
					id, members = pm.ID, list.Members
				}
			}
		}
		if id == 0 {
			time.Sleep(time.Second)
		}
	}
	if id == 0 {
		return fmt.Errorf("add %s back: %w", m.name, lastErr)
	}
	m.removed = false
	m.id = id
	m.incarnations++
	m.dataDirs = append(m.dataDirs, filepath.Join(m.root, fmt.Sprintf("data-%d", m.incarnations)))
	m.args = c.memberArgs(m, c.initialClusterOf(members), "existing")
	c.logf("added %s back as %x", m.name, m.id)
	if err := c.startProcess(m); err != nil {
		return err
	}
	return c.waitReady(m)
}

// addBackAttempts bounds the tries to add a removed member back.
const addBackAttempts = 5

// initialClusterOf names each member of a member list by the slot its peer
// URL belongs to.
func (c *cluster) initialClusterOf(ms []*pb.Member) string {
	var parts []string
	for _, pm := range ms {
		for _, u := range pm.PeerURLs {
			for _, m := range c.members {
				if m.peerURL == u {
					parts = append(parts, m.name+"="+u)
				}
			}
		}
	}
	return strings.Join(parts, ",")
}

// transferLeader moves leadership from the leader to another running member.
func (c *cluster) transferLeader(pick func(n int) int) error {
	l, err := c.leader()
	if err != nil {
		return err
	}
	var followers []*member
	for _, m := range c.members {
		if m != l && m.running() && !m.paused && !m.removed {
			followers = append(followers, m)
		}
	}
	if len(followers) == 0 {
		return errors.New("no follower to transfer to")
	}
	to := followers[pick(len(followers))]
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if _, err := l.admin.MoveLeader(ctx, to.id); err != nil {
		return fmt.Errorf("move leader %s -> %s: %w", l.name, to.name, err)
	}
	c.logf("moved leadership %s -> %s", l.name, to.name)
	return nil
}

// heal undoes every fault still in force: links, pauses, full disks, dead
// and removed members.
func (c *cluster) heal() error {
	c.links.healAll()
	var errs []error
	for _, m := range c.members {
		c.resume(m)
		if m.disk != nil {
			if err := m.disk.free(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, m := range c.members {
		if m.removed {
			if err := c.addBack(m); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := c.restart(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// converge waits until every member has applied the same index and reached
// the same revision, then compares their key-value hashes at it. It returns
// the applied index.
func (c *cluster) converge(timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		applied := map[uint64]bool{}
		revs := map[int64]bool{}
		var rev int64
		var index uint64
		var notes []string
		ok := true
		for _, m := range c.members {
			if !m.removed && !m.running() {
				// It stopped on its own after the heal began (a fatal disk
				// error it hit just before its disk was freed, say).
				c.logf("%s is not running after the heal; restarting it", m.name)
				if err := c.restart(m); err != nil {
					c.logf("restart %s: %v", m.name, err)
				}
			}
			st, err := c.status(m)
			if err != nil {
				ok = false
				notes = append(notes, fmt.Sprintf("%s: %v", m.name, err))
				continue
			}
			applied[st.RaftAppliedIndex] = true
			revs[st.Header.Revision] = true
			rev, index = st.Header.Revision, st.RaftAppliedIndex
			notes = append(notes, fmt.Sprintf("%s applied %d rev %d leader %x", m.name, st.RaftAppliedIndex, st.Header.Revision, st.Leader))
		}
		last = strings.Join(notes, "; ")
		if ok && len(applied) == 1 && len(revs) == 1 {
			err := c.compareHashes(rev)
			if !errors.Is(err, errCompactionInFlight) || time.Now().After(deadline) {
				return index, err
			}
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: members did not converge within %v after the faults healed: %s", errNoProgress, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// errCompactionInFlight: the members' hashes were read at different compact
// revisions. A compaction changes the applied index but not the revision, so
// one committed after the members converged may have applied on some
// members and not yet on others when their hashes were read; a hash covers
// the history the member keeps, which a compaction shortens, so such
// hashes differ without any divergence (etcd's corruption check compares
// hashes only at equal compact revisions for the same reason). converge
// reads them again; members still apart at its deadline are diverged.
var errCompactionInFlight = errors.Join(errDiverged, errors.New("compact revisions differ"))

// compareHashes checks that every member hashes its key-value history up to
// rev to the same value, at the same compact revision.
func (c *cluster) compareHashes(rev int64) error {
	hashes := map[uint32][]string{}
	compacted := map[int64][]string{}
	for _, m := range c.members {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		resp, err := m.admin.HashKV(ctx, m.clientURL, rev)
		cancel()
		if err != nil {
			return fmt.Errorf("hashkv of %s at %d: %w", m.name, rev, err)
		}
		hashes[resp.Hash] = append(hashes[resp.Hash], m.name)
		compacted[resp.CompactRevision] = append(compacted[resp.CompactRevision], m.name)
	}
	if len(compacted) > 1 {
		return fmt.Errorf("%w: members hashed revision %d at compact revisions %v", errCompactionInFlight, rev, compacted)
	}
	if len(hashes) > 1 {
		return fmt.Errorf("%w: members hash revision %d differently: %v", errDiverged, rev, hashes)
	}
	return nil
}

// errNoProgress marks a cluster that did not recover after every fault was
// healed: a liveness failure.
var errNoProgress = errors.New("liveness")

// errDiverged marks members whose states differ: a violation, not a
// harness failure.
var errDiverged = errors.New("state divergence")
