package linearizability

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Planted bugs: every case builds a small correct run that must pass, then
// plants one bug that its checker must catch, naming the checker and saying
// what was expected against what was observed.
type plantedCase struct {
	name    string
	build   func() *script
	plant   func(sc *script)
	checker string
	detail  string // a substring the failure must contain
}

// Watch requests used below.
func watchAB() *pb.WatchCreateRequest {
	return &pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c")}
}

func events(w WatchHistory, i int) []*mvccpb.Event { return w.Responses[i].Resp.Events }

var plantedCases = []plantedCase{
	{
		name: "stale read",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.op(1, 40, 50, get("a"))
			return sc
		},
		plant: func(sc *script) {
			sc.in.History[2].Response = sc.answerAt(2, get("a")) // what the store said before a=2
		},
		checker: checkerKV,
		detail:  `client 1 op #2 [40, 50] range("a") observed ["a"="1"@2(create 2, v1)] count 1 @rev 2`,
	},
	{
		name: "lost acknowledged write",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			return sc
		},
		plant:   func(sc *script) { sc.in.Committed = nil },
		checker: checkerDurability,
		detail:  "acknowledged write lost: client 0 op #0",
	},
	{
		name: "write applied twice",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(1, 20, 30, put("b", "1"))
			return sc
		},
		plant: func(sc *script) {
			dup := sc.in.Committed[0]
			dup.Index = 99
			sc.in.Committed = append(sc.in.Committed, dup)
		},
		checker: checkerDurability,
		detail:  `client 0 op #0 [0, 10] put("a", "1") applied 2 times: committed at raft indexes [1 99]`,
	},
	{
		name: "wrong revision in a write's header",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("b", "1"))
			return sc
		},
		plant:   func(sc *script) { sc.in.History[1].Response.Put.Header.Revision = 4 },
		checker: checkerDurability,
		detail:  `client 0 op #1 [20, 30] put("b", "1") acknowledged ok @rev 4, but replaying the committed log applies it at raft index 2 with ok @rev 3`,
	},
	{
		name: "wrong revision in a read's header",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(1, 20, 30, get("a"))
			return sc
		},
		plant:   func(sc *script) { sc.in.History[1].Response.Range.Header.Revision = 1 },
		checker: checkerKV,
		detail:  `client 1 op #1 [20, 30] range("a") observed ["a"="1"@2(create 2, v1)] count 1 @rev 1`,
	},
	{
		name: "txn reports the wrong branch",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, Request{Txn: &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 0}}},
				Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}}}},
				Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a")}}}},
			}})
			return sc
		},
		plant:   func(sc *script) { sc.in.History[0].Response.Txn.Succeeded = false },
		checker: checkerKV,
		detail:  "the model answers then [ok] @rev 2",
	},
	{
		name: "unknown write absent from the log yet observed",
		build: func() *script {
			sc := newScript()
			sc.unknown(0, 0, put("a", "x"), true)
			sc.op(1, 100, 110, get("a"))
			return sc
		},
		plant: func(sc *script) {
			sc.in.Committed = nil // the write never happened, but the read saw it
		},
		checker: checkerKV,
		detail:  `client 1 op #1 [100, 110] range("a") observed ["a"="x"@2(create 2, v1)] count 1 @rev 2`,
	},
	{
		name: "request refused before raft yet committed",
		build: func() *script {
			sc := newScript()
			sc.in.History = append(sc.in.History, Operation{Client: 0, Call: 0, Return: 10, RequestID: 77,
				Request:  Request{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("x"), IgnoreValue: true}},
				Response: Response{Err: rpctypes.ErrGRPCValueProvided}})
			return sc
		},
		plant: func(sc *script) {
			sc.in.Committed = append(sc.in.Committed, CommittedEntry{Index: 1, RequestID: 77,
				Request: internalRequest(sc.in.History[0].Request)})
		},
		checker: checkerDurability,
		detail:  "was refused with ValueProvided, a refusal before raft, yet it is committed at raft index 1",
	},
	{
		name: "valid request refused by validation",
		build: func() *script {
			sc := newScript()
			sc.in.History = append(sc.in.History, Operation{Client: 0, Call: 0, Return: 10,
				Request:  Request{Put: &pb.PutRequest{Value: []byte("x")}},
				Response: Response{Err: rpctypes.ErrGRPCEmptyKey}})
			return sc
		},
		plant:   func(sc *script) { sc.in.History[0].Request.Put.Key = []byte("a") },
		checker: checkerValidation,
		detail:  `put("a", "x") was refused with EmptyKey, but validation allows nothing (the request is valid)`,
	},
	{
		name: "serializable read with wrong content",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.serializable(1, 40, 50, 2, Request{Range: &pb.RangeRequest{Key: []byte("a"), Serializable: true}}) // stale: allowed
			return sc
		},
		plant:   func(sc *script) { sc.in.History[2].Response.Range.Kvs[0].Value = []byte("9") },
		checker: checkerReads,
		detail:  `returned ["a"="9"@2(create 2, v1)] count 1 @rev 2, but the committed log's state at revision 2`,
	},
	{
		name: "read at a past revision with wrong content",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.op(1, 40, 50, Request{Range: &pb.RangeRequest{Key: []byte("a"), Revision: 2}})
			return sc
		},
		plant:   func(sc *script) { sc.in.History[2].Response.Range.Kvs[0].Value = []byte("2") },
		checker: checkerReads,
		detail:  `answers ["a"="1"@2(create 2, v1)] count 1 @rev 3`,
	},
	{
		name: "read refused as compacted at a revision never compacted",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.op(0, 40, 50, Request{Compact: &pb.CompactionRequest{Revision: 2}})
			sc.op(1, 60, 70, Request{Range: &pb.RangeRequest{Key: []byte("a"), Revision: 1}})
			return sc
		},
		plant:   func(sc *script) { sc.in.History[3].Request.Range.Revision = 2 },
		checker: checkerReads,
		detail:  "failed Compacted, but the committed log never compacted past revision 2 (highest compaction 2)",
	},
	{
		name: "log order contradicts real time",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(1, 20, 30, put("b", "1"))
			return sc
		},
		plant: func(sc *script) {
			c := sc.in.Committed
			c[0], c[1] = c[1], c[0]
			c[0].Index, c[1].Index = 1, 2
		},
		checker: checkerDurability,
		detail:  `log order contradicts real time: client 1 op #1 [20, 30] put("b", "1") was sent after client 0 op #0 [0, 10] put("a", "1") returned`,
	},
	{
		name: "dropped watch event",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("b", "1"))
			sc.op(0, 40, 50, put("a", "2"))
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, watchAB(), 1, 4))
			return sc
		},
		plant: func(sc *script) {
			w := &sc.in.Watches[0]
			w.Responses = append(w.Responses[:2], w.Responses[3:]...)
		},
		checker: checkerWatchReliable,
		detail:  `missing PUT "b"="1"@3(create 3, v1)`,
	},
	{
		name: "duplicated watch event",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("b", "1"))
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, watchAB(), 1, 3))
			return sc
		},
		plant: func(sc *script) {
			r := sc.in.Watches[0].Responses[2].Resp
			r.Events = append(r.Events, r.Events[0])
		},
		checker: checkerWatchUnique,
		detail:  `carries PUT "b"="1"@3(create 3, v1) a second time`,
	},
	{
		name: "watch events out of order",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("b", "1"))
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, watchAB(), 1, 3))
			return sc
		},
		plant: func(sc *script) {
			r := sc.in.Watches[0].Responses
			r[1], r[2] = r[2], r[1]
		},
		checker: checkerWatchOrdered,
		detail:  `carries PUT "a"="1"@2(create 2, v1) after an event at revision 3`,
	},
	{
		name: "revision split across watch responses",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, Request{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}}},
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("b"), Value: []byte("1")}}},
			}}})
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, watchAB(), 1, 2))
			return sc
		},
		plant: func(sc *script) {
			w := &sc.in.Watches[0]
			r := w.Responses[1].Resp
			second := &pb.WatchResponse{Header: r.Header, Events: r.Events[1:]}
			r.Events = r.Events[:1]
			w.Responses = append(w.Responses, WatchReceived{Time: w.Responses[1].Time + 1, Resp: second})
		},
		checker: checkerWatchAtomic,
		detail:  "starts at revision 2, which the previous response already delivered events of",
	},
	{
		name: "event at or below a progress notification",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			create := watchAB()
			create.ProgressNotify = true
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, create, 1, 3))
			return sc
		},
		plant: func(sc *script) {
			w := &sc.in.Watches[0]
			progress := WatchReceived{Time: w.Responses[1].Time + 1, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 3}}}
			w.Responses = append(w.Responses[:2], append([]WatchReceived{progress}, w.Responses[2:]...)...)
		},
		checker: checkerWatchBookmark,
		detail:  `carries PUT "a"="2"@3(create 2, v2) after a progress notification at revision 3`,
	},
	{
		name: "progress notification nobody asked for",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			w := sc.watch(1, watchAB(), 1, 2)
			w.Responses = append(w.Responses, WatchReceived{Time: 5000, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 2}}})
			w.RequestedProgressAt = []int64{4000}
			sc.in.Watches = append(sc.in.Watches, w)
			return sc
		},
		plant:   func(sc *script) { sc.in.Watches[0].RequestedProgressAt = nil },
		checker: checkerWatchProgress,
		detail:  "is a progress notification (revision 2), but the watch did not ask",
	},
	{
		name: "wrong prev_kv",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			create := watchAB()
			create.PrevKv = true
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, create, 1, 3))
			return sc
		},
		plant:   func(sc *script) { events(sc.in.Watches[0], 2)[0].PrevKv.Value = []byte("0") },
		checker: checkerWatchPrevKV,
		detail:  `with prev_kv "a"="0"@2(create 2, v1), but the key was "a"="1"@2(create 2, v1) at revision 2`,
	},
	{
		name: "filter ignored",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, del("a"))
			create := watchAB()
			create.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, create, 1, 3))
			return sc
		},
		plant: func(sc *script) {
			w := &sc.in.Watches[0]
			putEvent := &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), Value: []byte("1"), CreateRevision: 2, ModRevision: 2, Version: 1}}
			r := WatchReceived{Time: w.Responses[1].Time - 1, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 2}, Events: []*mvccpb.Event{putEvent}}}
			w.Responses = append(w.Responses[:1], append([]WatchReceived{r}, w.Responses[1:]...)...)
		},
		checker: checkerWatchFilter,
		detail:  `carries PUT "a"="1"@2(create 2, v1), which the watch's range and filters exclude`,
	},
	{
		name: "IsCreate on a key that existed",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, watchAB(), 1, 3))
			return sc
		},
		plant: func(sc *script) {
			kv := events(sc.in.Watches[0], 2)[0].Kv
			kv.Version, kv.CreateRevision = 1, 3
		},
		checker: checkerWatchIsCreate,
		detail:  `but key "a" existed at revision 2`,
	},
	{
		name: "watch resumed past its start revision",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.op(0, 40, 50, put("a", "3"))
			create := watchAB()
			create.StartRevision = 3
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, create, 4, 4))
			return sc
		},
		plant: func(sc *script) {
			w := &sc.in.Watches[0]
			w.Responses = append(w.Responses[:1], w.Responses[2:]...)
		},
		checker: checkerWatchResume,
		detail:  `the first matching event at or after revision 3 is PUT "a"="2"@3(create 2, v2), but the watcher's first event is PUT "a"="3"@4(create 2, v3)`,
	},
	{
		name: "watch canceled for a compaction it was not behind",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			sc.op(0, 40, 50, Request{Compact: &pb.CompactionRequest{Revision: 3}})
			create := watchAB()
			create.StartRevision = 2
			sc.in.Watches = append(sc.in.Watches, WatchHistory{Client: 1, Member: 1, Create: create, Responses: []WatchReceived{
				{Time: 100, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 3}, Created: true, Canceled: true, CompactRevision: 3}},
			}})
			return sc
		},
		plant:   func(sc *script) { sc.in.Watches[0].Create.StartRevision = 3 },
		checker: checkerWatchCompact,
		detail:  "canceled with compact_revision 3, but the watcher was at revision 3, not behind the compaction",
	},
	{
		name: "watch response header below its events",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.in.Watches = append(sc.in.Watches, sc.watch(1, watchAB(), 1, 2))
			return sc
		},
		plant:   func(sc *script) { sc.in.Watches[0].Responses[1].Resp.Header.Revision = 1 },
		checker: checkerWatchHeader,
		detail:  `response #1 at 1010 has header revision 1 below its event PUT "a"="1"@2(create 2, v1)`,
	},
	{
		name: "watch events after the cancel",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, put("a", "1"))
			sc.op(0, 20, 30, put("a", "2"))
			w := sc.watch(1, watchAB(), 1, 3)
			cancel := WatchReceived{Time: 5000, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 3}, Canceled: true}}
			w.Responses = append(w.Responses, cancel)
			sc.in.Watches = append(sc.in.Watches, w)
			return sc
		},
		plant: func(sc *script) {
			w := &sc.in.Watches[0]
			last := w.Responses[len(w.Responses)-1]
			w.Responses[len(w.Responses)-1] = w.Responses[len(w.Responses)-2]
			w.Responses[len(w.Responses)-2] = last
		},
		checker: checkerWatchCancel,
		detail:  "arrived after the watch was canceled",
	},
	{
		name: "lease expiring early by the leader's clock",
		build: func() *script {
			sc := newScript()
			sc.in.Leases = []LeaseEvent{
				{Member: 1, LocalTick: 0, Kind: LeaseBecameLeader, ElectionTicks: 10},
				{Member: 1, LocalTick: 5, Lease: 7, Kind: LeaseGranted, TTLTicks: 100, ElectionTicks: 10},
				{Member: 1, LocalTick: 60, Lease: 7, Kind: LeaseKeepAliveAcked, TTLTicks: 100, ElectionTicks: 10},
				{Member: 1, LocalTick: 161, Lease: 7, Kind: LeaseExpiryProposed, ElectionTicks: 10},
			}
			return sc
		},
		// The keepalive arrived during tick 60: 100 ticks from that tick
		// could fall short of 100 ticks of time, so 160 is a tick early.
		plant:   func(sc *script) { sc.in.Leases[3].LocalTick = 160 },
		checker: checkerLeaseExpiry,
		detail:  "member 1 tick 160 ExpiryProposed lease 7 ttl 0 ticks: lease expired early: the member last saw it at member 1 tick 60 KeepAliveAcked lease 7 ttl 100 ticks, so it lives until tick 161",
	},
	{
		name: "new leader expiring a lease before a full TTL",
		build: func() *script {
			sc := newScript()
			sc.in.Leases = []LeaseEvent{
				{Member: 1, LocalTick: 0, Kind: LeaseBecameLeader, ElectionTicks: 10},
				{Member: 1, LocalTick: 5, Lease: 7, Kind: LeaseGranted, TTLTicks: 100, ElectionTicks: 10},
				{Member: 2, LocalTick: 50, Kind: LeaseBecameLeader, ElectionTicks: 10},
				{Member: 2, LocalTick: 151, Lease: 7, Kind: LeaseExpiryProposed, ElectionTicks: 10},
			}
			return sc
		},
		plant:   func(sc *script) { sc.in.Leases[3].LocalTick = 120 },
		checker: checkerLeaseExpiry,
		detail:  "the member became leader at tick 50 and must give the lease its full TTL of 100 ticks (until tick 151",
	},
	{
		// A lease whose grant no leader applied as leader (the proposer
		// crashed first): the next leader takes it over at its election and
		// must not expire it before a full TTL from then.
		name: "new leader expiring a lease it took over before a full TTL",
		build: func() *script {
			sc := newScript()
			sc.in.Leases = []LeaseEvent{
				{Member: 2, LocalTick: 50, Kind: LeaseBecameLeader, ElectionTicks: 10},
				{Member: 2, LocalTick: 50, Lease: 7, Kind: LeaseTakenOver, TTLTicks: 100, ElectionTicks: 10},
				{Member: 2, LocalTick: 160, Lease: 7, Kind: LeaseExpiryProposed, ElectionTicks: 10},
			}
			return sc
		},
		plant:   func(sc *script) { sc.in.Leases[2].LocalTick = 150 },
		checker: checkerLeaseExpiry,
		detail:  "lease expired early: the member last saw it at member 2 tick 50 TakenOver lease 7 ttl 100 ticks, so it lives until tick 151",
	},
	{
		// A renewal arrives during a tick; counting its TTL from the tick
		// already past ends the lease up to a tick early in true time,
		// which no tick count shows.
		name: "lease expiring less than a tick before TTL after an answered keepalive was sent",
		build: func() *script {
			sc := leaseTimeScript()
			sc.in.KeepAlives = []KeepAlive{{Client: 0, Lease: 7, Sent: 3e9, Return: 3e9 + 2e6, TTLSeconds: 10}}
			sc.in.Committed[1].AppliedAt = 13e9 + 1
			return sc
		},
		plant:   func(sc *script) { sc.in.Committed[1].AppliedAt = 13e9 - 50e6 },
		checker: checkerLeaseTime,
		detail:  "lease 7 expired at 12950.000000ms (its revoke applied at raft index 2), 50.000000ms before the TTL of 10s from the keepalive client 0 sent at 3000.000000ms ran out (1000.000000ms a second at the fastest member clock)",
	},
	{
		name: "lease expiring before TTL after its answered grant was sent",
		build: func() *script {
			sc := leaseTimeScript()
			sc.in.Committed[1].AppliedAt = 10e9
			return sc
		},
		plant:   func(sc *script) { sc.in.Committed[1].AppliedAt = 10e9 - 1 },
		checker: checkerLeaseTime,
		detail:  "lease 7 expired at 9999.999999ms (its revoke applied at raft index 2), 0.000001ms before the TTL of 10s from the grant client 0 sent at 0.000000ms ran out",
	},
	{
		name: "key surviving its lease's revoke",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, grant(7, 10))
			sc.op(0, 20, 30, putLease("k", "v", 7))
			sc.cluster(revoke(7)) // expiry: the key goes at revision 3
			sc.op(1, 40, 50, get("k"))
			return sc
		},
		plant: func(sc *script) {
			r := sc.in.History[2].Response.Range
			r.Kvs = []*mvccpb.KeyValue{{Key: []byte("k"), Value: []byte("v"), CreateRevision: 2, ModRevision: 2, Version: 1, Lease: 7}}
			r.Count = 1
		},
		checker: checkerLeaseRevoke,
		detail:  `key "k" attached to lease 7 survived the lease's revoke at revision 3 (read at revision 3)`,
	},
	{
		name: "put onto a revoked lease",
		build: func() *script {
			sc := newScript()
			sc.op(0, 0, 10, grant(7, 10))
			sc.op(0, 20, 30, revoke(7))
			sc.op(1, 40, 50, putLease("k", "v", 7)) // fails LeaseNotFound
			return sc
		},
		plant: func(sc *script) {
			sc.in.History[2].Response = Response{Put: &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 2}}}
		},
		checker: checkerLeaseRevoke,
		detail:  `client 1 op #2 [40, 50] put("k", "v", lease=7) attached a lease that was not alive when it applied at raft index 3`,
	},
}

// leaseTimeScript is a lease of 10 s granted to client 0 (sent at 0,
// answered at 1 ms) and expired by the cluster; the caller sets when the
// expiry applied.
func leaseTimeScript() *script {
	sc := newScript()
	sc.op(0, 0, 1e6, grant(7, 10))
	sc.cluster(revoke(7))
	sc.in.Clocks = Clocks{ShortestSecondNs: 1e9}
	return sc
}

// answerAt is what a correct store answers q with at revision rev.
func (sc *script) answerAt(rev int64, q Request) Response {
	req, err := convertRequest(q)
	if err != nil {
		panic(err)
	}
	_, resp := apply(sc.stateAt(rev), req, &sc.cfg, nil)
	return toProtoResponse(req, resp)
}

func TestPlantedBugsAreCaught(t *testing.T) {
	for _, c := range plantedCases {
		t.Run(c.name, func(t *testing.T) {
			good := Check(c.build().in, Options{})
			if !good.OK {
				t.Fatalf("the correct run fails:\n%s", good)
			}
			sc := c.build()
			c.plant(sc)
			bad := Check(sc.in, Options{})
			if bad.OK {
				t.Fatalf("planted bug not caught:\n%s", bad)
			}
			for _, f := range bad.Failures {
				if f.Checker == c.checker && strings.Contains(f.Detail, c.detail) {
					again := Check(sc.in, Options{})
					if again.String() != bad.String() {
						t.Fatalf("failure text differs between runs:\n%s\n%s", bad, again)
					}
					return
				}
			}
			t.Fatalf("no %s failure containing %q:\n%s", c.checker, c.detail, bad)
		})
	}
}
