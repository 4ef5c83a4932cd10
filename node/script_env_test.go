package node

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// scriptEnv is a cluster with a perfect disk (writes are durable at once)
// and a network the script controls: messages wait in per-member inboxes
// until `stabilize` delivers them, and partitions cut links.
type scriptEnv struct {
	t       *testing.T
	members map[uint64]*scriptMember // lookups; iterate ids
	ids     []uint64
	cut     map[[2]uint64]bool
	dupProp map[uint64]bool // the member's next MsgProp is delivered twice
	handle  Handle
	results map[Handle]Result
	pending []pendingRequest // submitted, not answered yet
	watch   []string
	cfg     Config
}

type pendingRequest struct {
	handle Handle
	what   string
}

type scriptMember struct {
	id      uint64
	node    *Node
	inbox   []*raftpb.Message
	durable Durable
	removed bool
	// While diskHeld, writes are made but their syncs do not complete:
	// Persisted waits for release-disk (a slow disk).
	diskHeld bool
	held     []uint64
}

func newScriptEnv(t *testing.T) *scriptEnv {
	return &scriptEnv{t: t, members: map[uint64]*scriptMember{}, cut: map[[2]uint64]bool{},
		dupProp: map[uint64]bool{}, results: map[Handle]Result{}}
}

func (e *scriptEnv) config(id uint64) Config {
	c := e.cfg
	c.ID = id
	c.ClusterID = 0xc1
	c.Name = fmt.Sprintf("n%x", id)
	c.RequestIDBase = id << 48
	return c
}

func (e *scriptEnv) up(id uint64) *scriptMember {
	m := e.members[id]
	if m == nil || m.node == nil {
		e.t.Fatalf("member %d is not running", id)
	}
	return m
}

// persist keeps a Persist on the member's perfect disk.
func (m *scriptMember) persist(p *Persist) {
	if p.Snapshot != nil {
		m.keepSnapshot(p.Snapshot)
	}
	if len(p.Entries) > 0 {
		first := p.Entries[0].GetIndex()
		kept := m.durable.Entries[:0:0]
		for _, ent := range m.durable.Entries {
			if ent.GetIndex() < first {
				kept = append(kept, ent)
			}
		}
		m.durable.Entries = append(kept, p.Entries...)
	}
	if p.HardState != nil {
		m.durable.HardState = p.HardState
	}
}

func (m *scriptMember) keepSnapshot(s *raftpb.Snapshot) {
	m.durable.Snapshot = s
	idx := s.GetMetadata().GetIndex()
	var kept []*raftpb.Entry
	for _, ent := range m.durable.Entries {
		if ent.GetIndex() > idx {
			kept = append(kept, ent)
		}
	}
	m.durable.Entries = kept
}

// drain takes a member's effects until it has nothing more to do, making
// each write durable at once. It reports whether anything happened.
func (e *scriptEnv) drain(m *scriptMember) bool {
	any := false
	for round := 0; round < 100 && m.node != nil; round++ {
		eff := m.node.Effects()
		if eff.Empty() {
			return any
		}
		any = true
		for _, p := range eff.Persist {
			m.persist(p)
		}
		for _, msg := range eff.Messages {
			to := e.members[msg.GetTo()]
			if to == nil || e.cut[[2]uint64{m.id, msg.GetTo()}] {
				continue
			}
			to.inbox = append(to.inbox, msg)
			if msg.GetType() == raftpb.MsgProp && e.dupProp[m.id] {
				e.dupProp[m.id] = false
				to.inbox = append(to.inbox, msg)
			}
			if msg.GetType() == raftpb.MsgSnap {
				m.node.ReportSnapshot(msg.GetTo(), false)
			}
		}
		for _, r := range eff.Results {
			e.results[r.Handle] = r
		}
		for _, sr := range eff.Watch {
			e.watch = append(e.watch, fmt.Sprintf("watch n%d stream=%d %s", m.id, sr.Stream, describeWatch(sr.Resp)))
		}
		if eff.SaveSnapshot != nil {
			m.keepSnapshot(eff.SaveSnapshot.Encode())
		}
		if eff.Removed {
			m.removed = true
		}
		for _, p := range eff.Persist {
			if p.Wait {
				if m.diskHeld {
					m.held = append(m.held, p.Seq)
					continue
				}
				m.node.Persisted(p.Seq)
			}
		}
	}
	return any
}

// stabilize delivers messages until the cluster is quiet.
func (e *scriptEnv) stabilize() {
	for round := 0; round < 1000; round++ {
		busy := false
		for _, id := range e.ids {
			m := e.members[id]
			if m.node == nil {
				continue
			}
			if e.drain(m) {
				busy = true
			}
			inbox := m.inbox
			m.inbox = nil
			for _, msg := range inbox {
				if e.cut[[2]uint64{msg.GetFrom(), id}] {
					continue
				}
				m.node.Step(msg)
				busy = true
			}
			if e.drain(m) {
				busy = true
			}
		}
		if !busy {
			return
		}
	}
	e.t.Fatal("the cluster did not settle in 1000 rounds")
}

func (e *scriptEnv) submit(id uint64, op proto.Message) string {
	m := e.up(id)
	e.handle++
	h := e.handle
	m.node.Submit(h, op)
	e.stabilize()
	r, ok := e.results[h]
	if !ok {
		e.pending = append(e.pending, pendingRequest{h, fmt.Sprintf("%T to n%d", op, id)})
		return "pending"
	}
	return describeResult(r)
}

// answered reports requests left pending by earlier commands that have
// been answered since.
func (e *scriptEnv) answered() string {
	var lines []string
	kept := e.pending[:0]
	for _, p := range e.pending {
		if r, ok := e.results[p.handle]; ok {
			lines = append(lines, fmt.Sprintf("answered #%d (%s): %s", p.handle, strings.TrimPrefix(p.what, "*etcdserverpb."), describeResult(r)))
			continue
		}
		kept = append(kept, p)
	}
	e.pending = kept
	return strings.Join(lines, "\n")
}

func describeResult(r Result) string {
	if r.Err != nil {
		var nl *NotLeaderError
		if errors.As(r.Err, &nl) {
			return fmt.Sprintf("error: not leader (leader is %d)", nl.Leader)
		}
		return "error: " + r.Err.Error()
	}
	switch resp := r.Resp.(type) {
	case *pb.PutResponse:
		s := fmt.Sprintf("put rev=%d", resp.GetHeader().GetRevision())
		if pk := resp.GetPrevKv(); pk != nil {
			s += " prev=" + describeKV(pk.GetKey(), pk.GetValue(), pk.GetModRevision(), pk.GetVersion(), pk.GetCreateRevision(), pk.GetLease())
		}
		return s
	case *pb.RangeResponse:
		var kvs []string
		for _, kv := range resp.GetKvs() {
			kvs = append(kvs, describeKV(kv.GetKey(), kv.GetValue(), kv.GetModRevision(), kv.GetVersion(), kv.GetCreateRevision(), kv.GetLease()))
		}
		return fmt.Sprintf("range rev=%d count=%d more=%t [%s]", resp.GetHeader().GetRevision(), resp.GetCount(), resp.GetMore(), strings.Join(kvs, " "))
	case *pb.DeleteRangeResponse:
		return fmt.Sprintf("delete rev=%d deleted=%d", resp.GetHeader().GetRevision(), resp.GetDeleted())
	case *pb.TxnResponse:
		return fmt.Sprintf("txn rev=%d succeeded=%t responses=%d", resp.GetHeader().GetRevision(), resp.GetSucceeded(), len(resp.GetResponses()))
	case *pb.CompactionResponse:
		return fmt.Sprintf("compact rev=%d", resp.GetHeader().GetRevision())
	case *pb.LeaseGrantResponse:
		return fmt.Sprintf("lease-grant id=%d ttl=%d", resp.GetID(), resp.GetTTL())
	case *pb.LeaseRevokeResponse:
		return fmt.Sprintf("lease-revoke rev=%d", resp.GetHeader().GetRevision())
	case *pb.LeaseKeepAliveResponse:
		return fmt.Sprintf("keepalive id=%d ttl=%d", resp.GetID(), resp.GetTTL())
	case *pb.LeaseTimeToLiveResponse:
		return fmt.Sprintf("ttl id=%d ttl=%d granted=%d keys=%q", resp.GetID(), resp.GetTTL(), resp.GetGrantedTTL(), resp.GetKeys())
	case *pb.MemberListResponse:
		return "members " + describeMembers(resp.GetMembers())
	case *pb.MemberAddResponse:
		return fmt.Sprintf("member-add id=%x members %s", resp.GetMember().GetID(), describeMembers(resp.GetMembers()))
	case *pb.MemberRemoveResponse:
		return "member-remove members " + describeMembers(resp.GetMembers())
	case *pb.MemberPromoteResponse:
		return "member-promote members " + describeMembers(resp.GetMembers())
	case *pb.MoveLeaderResponse:
		return "move-leader ok"
	case *pb.StatusResponse:
		return fmt.Sprintf("status leader=%d term=%d applied=%d learner=%t errors=%v", resp.GetLeader(), resp.GetRaftTerm(), resp.GetRaftAppliedIndex(), resp.GetIsLearner(), resp.GetErrors())
	}
	return fmt.Sprintf("%T", r.Resp)
}

func describeKV(k, v []byte, mod, ver, create, lease int64) string {
	s := fmt.Sprintf("%s=%s@%d(v%d,c%d)", k, v, mod, ver, create)
	if lease != 0 {
		s += fmt.Sprintf("[lease %d]", lease)
	}
	return s
}

func describeMembers(ms []*pb.Member) string {
	var out []string
	for _, m := range ms {
		s := fmt.Sprintf("%x:%s", m.GetID(), m.GetName())
		if m.GetIsLearner() {
			s += "(learner)"
		}
		out = append(out, s)
	}
	return "[" + strings.Join(out, " ") + "]"
}

func describeWatch(r *pb.WatchResponse) string {
	s := fmt.Sprintf("id=%d rev=%d", r.GetWatchId(), r.GetHeader().GetRevision())
	if r.GetCreated() {
		s += " created"
	}
	if r.GetCanceled() {
		s += fmt.Sprintf(" canceled compact=%d", r.GetCompactRevision())
	}
	for _, ev := range r.GetEvents() {
		kv := ev.GetKv()
		s += fmt.Sprintf(" %s:%s", ev.GetType(), describeKV(kv.GetKey(), kv.GetValue(), kv.GetModRevision(), kv.GetVersion(), kv.GetCreateRevision(), kv.GetLease()))
		if pk := ev.GetPrevKv(); pk != nil {
			s += "(prev " + string(pk.GetValue()) + ")"
		}
	}
	return s
}

func (e *scriptEnv) status() string {
	var lines []string
	for _, id := range e.ids {
		m := e.members[id]
		switch {
		case m.removed:
			lines = append(lines, fmt.Sprintf("n%x: removed", id))
		case m.node == nil:
			lines = append(lines, fmt.Sprintf("n%x: down", id))
		default:
			st := m.node.Status()
			role := strings.TrimPrefix(st.State.String(), "State")
			if st.IsLearner {
				role += "(learner)"
			}
			lines = append(lines, fmt.Sprintf("n%x: %s term=%d lead=%x applied=%d commit=%d rev=%d compact=%d snap=%d",
				id, role, st.Term, st.Lead, st.AppliedIndex, st.CommitIndex, st.Revision, st.CompactRevision, st.SnapshotIndex))
		}
	}
	return strings.Join(lines, "\n")
}

func (e *scriptEnv) flushWatch() string {
	out := strings.Join(e.watch, "\n")
	e.watch = nil
	return out
}

// run executes one script command and returns its output, followed by any
// request an earlier command left pending that is answered now.
func (e *scriptEnv) run(c *scriptCmd) string {
	out := e.runCmd(c)
	if a := e.answered(); a != "" {
		if out != "" {
			out += "\n"
		}
		out += a
	}
	return out
}

func (e *scriptEnv) runCmd(c *scriptCmd) string {
	id := func(i int) uint64 {
		if len(c.args) <= i {
			e.t.Fatalf("line %d: %s needs argument %d", c.line, c.name, i+1)
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(c.args[i], "n"), 16, 64)
		if err != nil {
			e.t.Fatalf("line %d: bad member %q", c.line, c.args[i])
		}
		return v
	}
	arg := func(i int) string {
		if len(c.args) <= i {
			e.t.Fatalf("line %d: %s needs argument %d", c.line, c.name, i+1)
		}
		return c.args[i]
	}
	num := func(key string, def int64) int64 {
		v, ok := c.kv[key]
		if !ok {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			e.t.Fatalf("line %d: %s=%q", c.line, key, v)
		}
		return n
	}
	hexID := func(key string) uint64 {
		v, err := strconv.ParseUint(c.kv[key], 16, 64)
		if err != nil {
			e.t.Fatalf("line %d: %s=%q: want a hex member ID", c.line, key, c.kv[key])
		}
		return v
	}
	_, serializable := c.kv["serializable"]
	withWatch := func(s string) string {
		if w := e.flushWatch(); w != "" {
			return s + "\n" + w
		}
		return s
	}
	switch c.name {
	case "bootstrap":
		n := int(num("n", 3))
		e.cfg = Config{TickMs: 100, ElectionTicks: 10, HeartbeatTicks: 1,
			SnapshotCount: uint64(num("snapshot-count", 10000)), SnapshotCatchUpEntries: uint64(num("catch-up", 5)),
			RequestTimeoutTicks: int(num("timeout-ticks", 50)), StrictReconfigCheck: true}
		_, e.cfg.LeaseBasedReads = c.kv["lease-reads"]
		var initial []Member
		for i := 1; i <= n; i++ {
			initial = append(initial, Member{ID: uint64(i), PeerURLs: []string{fmt.Sprintf("http://n%d:2380", i)}})
		}
		for i := 1; i <= n; i++ {
			nd, err := Bootstrap(e.config(uint64(i)), initial)
			if err != nil {
				return "error: " + err.Error()
			}
			e.members[uint64(i)] = &scriptMember{id: uint64(i), node: nd}
			e.ids = append(e.ids, uint64(i))
		}
		e.stabilize()
		return ""
	case "campaign":
		if err := e.up(id(0)).node.rn.Campaign(); err != nil {
			return "error: " + err.Error()
		}
		e.stabilize()
		return e.status()
	case "stabilize":
		e.stabilize()
		return withWatch("")
	case "status":
		return e.status()
	case "tick":
		ticks := int(num("n", 1))
		targets := e.ids
		if len(c.args) > 0 {
			targets = []uint64{id(0)}
		}
		for i := 0; i < ticks; i++ {
			for _, t := range targets {
				if m := e.members[t]; m.node != nil {
					m.node.Tick()
				}
			}
			e.stabilize()
		}
		return withWatch("")
	case "partition":
		var sides [][]uint64
		var cur []uint64
		for _, a := range c.args {
			if a == "|" {
				sides, cur = append(sides, cur), nil
				continue
			}
			v, _ := strconv.ParseUint(strings.TrimPrefix(a, "n"), 10, 64)
			cur = append(cur, v)
		}
		sides = append(sides, cur)
		for i, a := range sides {
			for j, b := range sides {
				if i == j {
					continue
				}
				for _, x := range a {
					for _, y := range b {
						e.cut[[2]uint64{x, y}] = true
					}
				}
			}
		}
		return ""
	case "heal":
		clear(e.cut)
		e.stabilize()
		return ""
	case "crash":
		m := e.up(id(0))
		m.node, m.inbox = nil, nil
		if v, ok := c.kv["commit"]; ok {
			// The commit index is written without a sync: a crash may lose
			// its latest updates while the synced entries stay.
			n, _ := strconv.ParseUint(v, 10, 64)
			hs := proto.Clone(m.durable.HardState).(*raftpb.HardState)
			hs.Commit = proto.Uint64(n)
			m.durable.HardState = hs
		}
		return ""
	case "restart":
		m := e.members[id(0)]
		nd, err := Restart(e.config(m.id), m.durable)
		if err != nil {
			return "error: " + err.Error()
		}
		m.node = nd
		e.stabilize()
		return ""
	case "hold-disk":
		e.up(id(0)).diskHeld = true
		return ""
	case "release-disk":
		// release-disk n [syncs=N]: complete the first N held syncs (all by
		// default); the disk stays slow while syncs are left.
		m := e.up(id(0))
		count := int(num("syncs", int64(len(m.held))))
		if _, ok := c.kv["syncs"]; !ok {
			m.diskHeld = false
		}
		for i := 0; i < count && len(m.held) > 0; i++ {
			seq := m.held[0]
			m.held = m.held[1:]
			m.node.Persisted(seq)
			e.drain(m)
		}
		e.stabilize()
		return withWatch("")
	case "dup-next-proposal":
		e.dupProp[id(0)] = true
		return ""
	case "put":
		req := &pb.PutRequest{Key: []byte(arg(1)), Value: []byte(arg(2)), Lease: num("lease", 0)}
		_, req.PrevKv = c.kv["prev-kv"]
		return withWatch(e.submit(id(0), req))
	case "get":
		req := &pb.RangeRequest{Key: []byte(arg(1)), Revision: num("rev", 0), Serializable: serializable}
		if _, ok := c.kv["prefix"]; ok {
			end := []byte(arg(1))
			end[len(end)-1]++
			req.RangeEnd = end
		}
		return e.submit(id(0), req)
	case "del":
		return withWatch(e.submit(id(0), &pb.DeleteRangeRequest{Key: []byte(arg(1))}))
	case "cas":
		// cas n key version value: put value if key's version is as given.
		ver, _ := strconv.ParseInt(arg(2), 10, 64)
		key := []byte(arg(1))
		return withWatch(e.submit(id(0), &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: key, Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: ver}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: []byte(arg(3))}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}}},
		}))
	case "compact":
		return e.submit(id(0), &pb.CompactionRequest{Revision: num("rev", 0)})
	case "lease-grant":
		return e.submit(id(0), &pb.LeaseGrantRequest{ID: num("id", 0), TTL: num("ttl", 5)})
	case "lease-revoke":
		return withWatch(e.submit(id(0), &pb.LeaseRevokeRequest{ID: num("id", 0)}))
	case "keepalive":
		return e.submit(id(0), &pb.LeaseKeepAliveRequest{ID: num("id", 0)})
	case "ttl":
		return e.submit(id(0), &pb.LeaseTimeToLiveRequest{ID: num("id", 0), Keys: true})
	case "watch":
		cr := &pb.WatchCreateRequest{Key: []byte(arg(1)), StartRevision: num("rev", 0)}
		_, cr.PrevKv = c.kv["prev-kv"]
		if _, ok := c.kv["prefix"]; ok {
			end := []byte(arg(1))
			end[len(end)-1]++
			cr.RangeEnd = end
		}
		e.up(id(0)).node.Watch(kvsm.StreamID(num("stream", 1)), &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
		e.stabilize()
		return e.flushWatch()
	case "member-list":
		return e.submit(id(0), &pb.MemberListRequest{Linearizable: !serializable})
	case "member-add":
		_, learner := c.kv["learner"]
		return e.submit(id(0), &pb.MemberAddRequest{PeerURLs: []string{arg(1)}, IsLearner: learner})
	case "member-remove":
		return e.submit(id(0), &pb.MemberRemoveRequest{ID: hexID("id")})
	case "member-promote":
		return e.submit(id(0), &pb.MemberPromoteRequest{ID: hexID("id")})
	case "join":
		// join id: start a member added at runtime, empty.
		nid := hexID("id")
		nd, err := Restart(e.config(nid), Durable{})
		if err != nil {
			return "error: " + err.Error()
		}
		e.members[nid] = &scriptMember{id: nid, node: nd}
		e.ids = append(e.ids, nid)
		slices.Sort(e.ids)
		e.stabilize()
		return e.status()
	case "move-leader":
		return e.submit(id(0), &pb.MoveLeaderRequest{TargetID: hexID("to")})
	case "raft-log":
		m := e.up(id(0))
		first, _ := m.node.storage.FirstIndex()
		last, _ := m.node.storage.LastIndex()
		return fmt.Sprintf("first=%d last=%d", first, last)
	}
	e.t.Fatalf("line %d: unknown command %q", c.line, c.name)
	return ""
}
