package sim

import (
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
)

// The lock workload: clients take locks as client/v3/concurrency's Mutex
// (and etcd's Lock service) does, on plain KV requests, and write the key
// each lock protects while they hold it. A lock session is:
//
//	grant      a lease for the session (TTL 2-5 s, kept alive every TTL/3)
//	acquire    txn: create_revision(myKey) == 0 ? put myKey (lease) : get myKey
//	           (repeatable after a timeout: it never creates a second key)
//	wait       linearizable range over the lock's prefix until myKey has the
//	           lowest create revision (the owner); gone means the lease lapsed
//	write      the protected key, valued "<myKey>#<client>.<seq>": fenced, a
//	           txn guarded by create_revision(myKey) == the revision it was
//	           created at; unfenced (Knobs.UnfencedLocks, planted) a plain put
//	release    delete myKey
//
// A quarter of the holders pause before their write for longer than their
// lease (a GC pause, a stalled process), sending no keepalives: the lock
// passes to the next waiter meanwhile. A fenced write then fails its guard
// and writes nothing; an unfenced one lands while another client holds the
// lock, which linearizability's lock-fencing checker reports. The lock keys
// live outside the KV workload's prefix, and every request is in the
// history the other checkers read.

// simLocks are the workload's locks: a contender's key is the prefix and
// its lease in hex.
var simLocks = []linearizability.Lock{
	{Prefix: "lock/L0/", Resource: "res/L0"},
	{Prefix: "lock/L1/", Resource: "res/L1"},
}

type lockPhase int

const (
	lockGrant lockPhase = iota
	lockAcquire
	lockWait
	lockWrite
	lockRelease
)

func (p lockPhase) String() string {
	return [...]string{"grant", "acquire", "wait", "write", "release"}[p]
}

// lockSession is one client's pass through one lock.
type lockSession struct {
	lock          linearizability.Lock
	phase         lockPhase
	lease         int64
	ttlSeconds    int64
	nextKeepAlive int64
	key           string
	createRev     int64 // myKey's create revision: the fencing token
	pauseNs       int64 // before the write, with no keepalives (0: none)
	opSeq         uint64
}

// lockPauseChance is one in this many holders pausing past their lease.
const lockPauseChance = 4

// startLock begins a lock session on a client that has none.
func (w *world) startLock(c *client) bool {
	if c.lock != nil {
		return false
	}
	c.lock = &lockSession{lock: simLocks[w.wrng.IntN(len(simLocks))]}
	w.tracef("client %d lock session on %s", c.index, c.lock.lock.Prefix)
	return w.lockNext(c)
}

// lockNext issues the session's next request (again after a timeout or a
// redirect: every phase's request can be repeated). It reports whether the
// client is busy with the session.
func (w *world) lockNext(c *client) bool {
	s := c.lock
	if s == nil {
		return false
	}
	if s.phase != lockGrant && s.pauseNs == 0 && s.nextKeepAlive <= w.now {
		s.nextKeepAlive = w.now + s.ttlSeconds*1e9/3
		w.issueLock(c, &pb.LeaseKeepAliveRequest{ID: s.lease}, false)
		return true
	}
	switch s.phase {
	case lockGrant:
		w.issueLock(c, &pb.LeaseGrantRequest{TTL: []int64{2, 3, 5}[w.wrng.IntN(3)]}, true)
	case lockAcquire:
		key := []byte(s.key)
		w.issueLock(c, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Lease: s.lease}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}}},
		}, true)
	case lockWait:
		w.issueLock(c, &pb.RangeRequest{Key: []byte(s.lock.Prefix), RangeEnd: prefixEnd(s.lock.Prefix)}, true)
	case lockWrite:
		if s.pauseNs > 0 {
			pause := s.pauseNs
			s.pauseNs = 0
			s.nextKeepAlive = w.now + pause // no keepalive before the write
			w.tracef("client %d holds %s and pauses %dms", c.index, s.key, pause/1e6)
			w.scheduleClient(c, pause)
			return true
		}
		value := []byte(fmt.Sprintf("%s%sc%d.%d", s.key, linearizability.FencingSeparator, c.index, c.seq+1))
		put := &pb.PutRequest{Key: []byte(s.lock.Resource), Value: value}
		if w.k.UnfencedLocks {
			w.issueLock(c, put, true)
			break
		}
		w.issueLock(c, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(s.key), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: s.createRev}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: put}}},
		}, true)
	case lockRelease:
		w.issueLock(c, &pb.DeleteRangeRequest{Key: []byte(s.key)}, true)
	}
	return true
}

func (w *world) issueLock(c *client, req proto.Message, inHistory bool) {
	w.issue(c, req, inHistory)
	c.lock.opSeq = c.seq
}

// lockReply takes the answer to a session's request and moves the session
// on. It reports whether the reply was the session's (then it scheduled
// the client's next step).
func (w *world) lockReply(c *client, op *clientOp, r node.Result) bool {
	s := c.lock
	if s == nil || op.seq != s.opSeq {
		return false
	}
	if rev := headerOf(r.Resp).GetRevision(); rev > c.lastRev {
		c.lastRev = rev
	}
	end := func(why string) {
		w.tracef("client %d lock session on %s ends: %s", c.index, s.lock.Prefix, why)
		c.lock = nil
	}
	next := w.clientLatency()
	if errors.Is(r.Err, rpctypes.ErrGRPCLeaseNotFound) {
		end("lease gone")
	}
	switch resp := r.Resp.(type) {
	case *pb.LeaseKeepAliveResponse:
		if r.Err == nil && resp.GetTTL() <= 0 {
			end("lease expired")
		}
	case *pb.LeaseGrantResponse:
		if r.Err == nil {
			s.lease, s.ttlSeconds = resp.GetID(), resp.GetTTL()
			s.nextKeepAlive = w.now + s.ttlSeconds*1e9/3
			s.key = fmt.Sprintf("%s%x", s.lock.Prefix, s.lease)
			s.phase = lockAcquire
		}
	case *pb.TxnResponse:
		if r.Err != nil {
			break
		}
		switch s.phase {
		case lockAcquire:
			if resp.GetSucceeded() {
				s.createRev = resp.GetHeader().GetRevision()
			} else if kvs := resp.GetResponses()[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
				s.createRev = kvs[0].GetCreateRevision()
			} else {
				end("lease lapsed before the key was made")
				break
			}
			s.phase = lockWait
		case lockWrite:
			s.phase = lockRelease
		}
	case *pb.RangeResponse:
		if r.Err != nil {
			break
		}
		owner, mine := int64(0), false
		for _, kv := range resp.GetKvs() {
			if owner == 0 || kv.GetCreateRevision() < owner {
				owner = kv.GetCreateRevision()
			}
			mine = mine || string(kv.GetKey()) == s.key
		}
		switch {
		case !mine:
			end("lease lapsed while waiting")
		case owner == s.createRev:
			s.phase = lockWrite
			if w.wrng.IntN(lockPauseChance) == 0 {
				s.pauseNs = (s.ttlSeconds + 1 + w.wrng.Int64N(s.ttlSeconds)) * 1e9
			}
		default:
			next = max(next, w.thinkTime())
		}
	case *pb.PutResponse:
		if r.Err == nil {
			s.phase = lockRelease
		}
	case *pb.DeleteRangeResponse:
		if r.Err == nil {
			end("released")
		}
	}
	if r.Err != nil && w.wrng.IntN(2) == 0 {
		c.member = w.wrng.IntN(len(w.members))
	}
	w.scheduleClient(c, next)
	return true
}
