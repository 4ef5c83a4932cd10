package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// Watch streams. The node (kvsm) decides what each watcher sees; the loop
// routes its replies to a bounded queue per stream, and the stream's gRPC
// goroutine sends them. A stream whose client reads slower than events
// arrive must not make the member buffer without bound, and must lose
// nothing:
//
//   - When a watcher's reply finds the queue full, the loop drops it and
//     cancels the watcher in the node (so kvsm stops reading history for
//     it), remembering the first revision the client has not been sent.
//   - Once the queue has drained, the loop re-creates the watcher in the
//     node with the same ID, settings and that start revision; kvsm catches
//     it up from history. The cancel and created replies of this
//     round trip are swallowed: the client sees one unbroken watcher.
//   - Control replies (created, canceled, progress) are never dropped:
//     they wait in a list of their own, in order, ahead of anything else.
//   - A stream-wide progress reply must not claim a revision a dropped
//     watcher has not delivered, so while one is dropped it is held back
//     and asked for again after the resume.
//
// Requests (create, cancel, progress) are the client's to pace: the
// stream's receiver takes a credit before it reads each one, and the loop
// returns the credit once the request is handled and no control reply
// waits for room. A client that sends creates faster than it reads their
// replies therefore finds the stream no longer read (gRPC's flow control
// then holds its sends) instead of losing it, and the held list stays
// bounded: at most one reply per credit, plus one cancel per watcher (a
// compaction ends each watcher at most once) and one progress reply.
const (
	// watchSendQueueMax bounds replies queued for one stream's sender.
	watchSendQueueMax = 128
	// watchRequestCreditsMax bounds the requests of one stream read from
	// the client and not yet settled (handled, their replies out of the
	// held list). The receiver stops reading the stream while all are out.
	watchRequestCreditsMax = 1024
	// watchStreamsMax bounds the watch streams of one member; a stream
	// beyond it is refused with ResourceExhausted.
	watchStreamsMax = 1 << 16
	// watchLeaderChecks: a stream with hasleader set fails after this
	// many election timeouts without a leader (etcd's monitorLeader).
	watchLeaderChecks = 3
)

var errTooManyWatchStreams = status.Error(codes.ResourceExhausted, "etcdserver: too many watch streams")

// errWatchHeldOverflow ends a stream whose held replies passed the bound
// the credits imply; it is an assertion of that bound, not a pacing rule.
var errWatchHeldOverflow = status.Error(codes.Internal, "noded: watch stream held more control replies than its bound")

// heldRepliesMax is the bound on a stream's held control replies that the
// credits imply (see the comment at the top).
func (m *Member) heldRepliesMax() int {
	return watchRequestCreditsMax + m.cfg.MaxWatchersPerStream + 1
}

type watchOp struct {
	stream kvsm.StreamID
	open   *hostStream
	req    *pb.WatchRequest
	close  bool
	room   bool // the sender drained its queue while the loop held replies
	// For a create: who asks (resolved from the stream's context when the
	// request arrived), or why that failed.
	ai      kvsm.AuthInfo
	authErr error
}

// hostStream is the loop's side of one watch stream.
//
// The client's watch IDs are the host's: the node numbers watchers its own
// way (always automatically), and the host maps between the two, so that a
// watcher it re-created keeps the ID the client knows while the node gives
// it a new one.
type hostStream struct {
	id    kvsm.StreamID
	sendq chan *pb.WatchResponse // read by the stream's gRPC goroutine
	fail  chan error             // capacity 1: the loop ends the stream
	// credits holds one token per request read and not yet settled: the
	// receiver puts one in before each read (and blocks, not reading the
	// stream, while it is full); the loop takes them out as it settles.
	credits chan struct{}
	// wantRoom is set by the loop while replies are held for lack of room
	// in sendq; the sender then tells the loop when it has made room.
	wantRoom atomic.Bool

	// Loop-owned.
	held         []*pb.WatchResponse    // control replies waiting for room, in order
	droppedN     int                    // watchers with dropped set
	owed         int                    // credits of handled requests not yet returned
	watchers     map[int64]*hostWatcher // by the client's watch ID
	byNode       map[int64]*hostWatcher // by the node's watch ID, once the node created it
	creates      []*hostWatcher         // creates handed to the node, awaiting their created reply, in order
	nextWatchID  int64
	progressHeld bool
	dead         bool
}

type hostWatcher struct {
	clientID  int64
	nodeID    int64                  // valid while inNode
	create    *pb.WatchCreateRequest // the client's request (its settings are kept on re-create)
	nextRev   int64                  // the first revision not yet sent to the client
	inNode    bool                   // the node has it (created and not cancelled by the host)
	recreate  bool                   // its pending create is the host's re-create: swallow the reply
	dropped   bool                   // paused: cancelled in the node, to be re-created
	cancelled bool                   // the host cancelled it in the node; swallow the node's cancel reply
	gone      bool                   // the client cancelled it while it was paused
	// refusal, when set, makes this entry of creates no watcher but a
	// refusal the host made, waiting for the replies of earlier creates.
	refusal *pb.WatchResponse
}

func (hs *hostStream) anyDropped() bool { return hs.droppedN > 0 }

// onWatchOp runs on the loop.
func (m *Member) onWatchOp(op watchOp) {
	switch {
	case op.open != nil:
		if len(m.streams) >= watchStreamsMax {
			op.open.fail <- errTooManyWatchStreams
			return
		}
		m.streams[op.stream] = op.open
	case op.close:
		delete(m.streams, op.stream)
		delete(m.blocked, op.stream)
		delete(m.owing, op.stream)
		m.node.WatchCloseStream(op.stream)
	case op.room:
		if hs := m.streams[op.stream]; hs != nil && !hs.dead {
			m.retryBlockedStream(hs)
		}
	case op.req != nil:
		hs := m.streams[op.stream]
		if hs == nil || hs.dead {
			return
		}
		hs.owed++
		m.owing[hs.id] = struct{}{}
		m.onWatchRequest(hs, op)
	}
}

// settleWatchCredits runs at the end of every loop round, after the node's
// replies of the round went out: a stream with no held replies gets back
// the credits of the requests it handled, and its receiver reads on.
func (m *Member) settleWatchCredits() {
	for sid := range m.owing {
		hs := m.streams[sid]
		if hs == nil || hs.dead {
			delete(m.owing, sid)
			continue
		}
		if len(hs.held) > 0 {
			continue // returned once the held replies have gone out
		}
		for ; hs.owed > 0; hs.owed-- {
			<-hs.credits // never blocks: the receiver put one in per request
		}
		delete(m.owing, sid)
	}
}

func watchCreate(cr *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}
}

func watchCancel(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

func (m *Member) onWatchRequest(hs *hostStream, op watchOp) {
	req := op.req
	switch {
	case req.GetCreateRequest() != nil:
		cr := req.GetCreateRequest()
		if op.authErr != nil {
			m.refuseCreate(hs, op.authErr.Error())
			return
		}
		id := cr.GetWatchId()
		if len(hs.watchers) >= m.cfg.MaxWatchersPerStream {
			m.refuseCreate(hs, fmt.Sprintf("noded: a watch stream holds at most %d watchers (--max-watchers-per-stream)", m.cfg.MaxWatchersPerStream))
			return
		}
		if id != 0 {
			if _, taken := hs.watchers[id]; taken {
				m.refuseCreate(hs, "mvcc: duplicate watch ID provided on the WatchStream")
				return
			}
		} else {
			// etcd's automatic IDs: the lowest free one from a counter.
			for {
				if _, taken := hs.watchers[hs.nextWatchID]; !taken {
					break
				}
				hs.nextWatchID++
			}
			id = hs.nextWatchID
			hs.nextWatchID++
		}
		w := &hostWatcher{clientID: id, create: proto.Clone(cr).(*pb.WatchCreateRequest)}
		hs.watchers[id] = w
		hs.creates = append(hs.creates, w)
		forNode := proto.Clone(cr).(*pb.WatchCreateRequest)
		forNode.WatchId = 0
		m.node.WatchAs(hs.id, watchCreate(forNode), op.ai)
	case req.GetCancelRequest() != nil:
		w := hs.watchers[req.GetCancelRequest().GetWatchId()]
		if w == nil {
			return // etcd sends nothing for an unknown ID
		}
		if !w.inNode {
			// Paused (or its re-create is on the way): answer for it.
			delete(hs.watchers, w.clientID)
			if w.dropped {
				w.dropped = false
				hs.droppedN--
			}
			w.gone = true
			m.emitControl(hs, &pb.WatchResponse{Header: m.header(), WatchId: w.clientID, Canceled: true})
			return
		}
		m.node.Watch(hs.id, watchCancel(w.nodeID))
	case req.GetProgressRequest() != nil:
		if hs.anyDropped() {
			hs.progressHeld = true
			m.blocked[hs.id] = struct{}{}
			return
		}
		m.node.Watch(hs.id, req)
	}
}

// refuseCreate answers a create the host refuses itself. Replies to
// creates come in the order the creates were sent, so while creates handed
// to the node earlier await their replies, the refusal waits behind them.
func (m *Member) refuseCreate(hs *hostStream, reason string) {
	resp := &pb.WatchResponse{Header: m.header(), WatchId: -1, Created: true, Canceled: true, CancelReason: reason}
	if len(hs.creates) > 0 {
		hs.creates = append(hs.creates, &hostWatcher{refusal: resp})
		return
	}
	m.emitControl(hs, resp)
}

// emitQueuedRefusals sends the refusals that waited for the creates before
// them, once those are answered.
func (m *Member) emitQueuedRefusals(hs *hostStream) {
	for len(hs.creates) > 0 && hs.creates[0].refusal != nil {
		resp := hs.creates[0].refusal
		hs.creates[0] = nil
		hs.creates = hs.creates[1:]
		m.emitControl(hs, resp)
	}
}

// header is a response header for replies the host makes itself.
func (m *Member) header() *pb.ResponseHeader {
	st := m.node.Status()
	return &pb.ResponseHeader{ClusterId: m.clusterID, MemberId: m.id, Revision: st.Revision, RaftTerm: st.Term}
}

// deliverWatch routes one of the node's watch replies (on the loop).
func (m *Member) deliverWatch(sr kvsm.StreamResponse) {
	hs := m.streams[sr.Stream]
	if hs == nil || hs.dead {
		return
	}
	resp := sr.Resp
	switch {
	case resp.GetCreated():
		m.onNodeCreated(hs, resp)
		m.emitQueuedRefusals(hs)
	default:
		m.deliverWatchOther(hs, resp)
	}
}

// onNodeCreated routes the node's created reply to the create it answers,
// the oldest one handed to the node.
func (m *Member) onNodeCreated(hs *hostStream, resp *pb.WatchResponse) {
	if len(hs.creates) == 0 || hs.creates[0].refusal != nil {
		return
	}
	w := hs.creates[0]
	hs.creates[0] = nil
	hs.creates = hs.creates[1:]
	if resp.GetCanceled() {
		// The node refused it (a negative start revision, an empty
		// range): the client hears the refusal; a refused re-create
		// (not expected) ends the watcher for the client.
		delete(hs.watchers, w.clientID)
		if w.recreate {
			if !w.gone {
				m.emitControl(hs, &pb.WatchResponse{Header: resp.GetHeader(), WatchId: w.clientID, Canceled: true, CancelReason: resp.GetCancelReason()})
			}
			return
		}
		m.emitControl(hs, resp)
		return
	}
	w.nodeID = resp.GetWatchId()
	w.inNode = true
	hs.byNode[w.nodeID] = w
	if w.recreate {
		w.recreate = false
		if w.gone {
			// The client cancelled it meanwhile; so does the node now.
			w.cancelled = true
			m.node.Watch(hs.id, watchCancel(w.nodeID))
		}
		return
	}
	if start := w.create.GetStartRevision(); start > 0 {
		w.nextRev = start
	} else {
		w.nextRev = resp.GetHeader().GetRevision() + 1
	}
	resp.WatchId = w.clientID
	m.emitControl(hs, resp)
}

// deliverWatchOther routes a reply other than created: a cancel, a
// progress reply or events.
func (m *Member) deliverWatchOther(hs *hostStream, resp *pb.WatchResponse) {
	switch {
	case resp.GetCanceled():
		w := hs.byNode[resp.GetWatchId()]
		if w == nil {
			return
		}
		delete(hs.byNode, resp.GetWatchId())
		if w.cancelled {
			w.cancelled = false
			return
		}
		w.inNode = false
		delete(hs.watchers, w.clientID)
		resp.WatchId = w.clientID
		m.emitControl(hs, resp)
	case resp.GetWatchId() == -1:
		if hs.anyDropped() {
			hs.progressHeld = true
			m.blocked[hs.id] = struct{}{}
			return
		}
		m.emitControl(hs, resp)
	default:
		w := hs.byNode[resp.GetWatchId()]
		if w == nil || w.dropped || w.cancelled {
			return // stale: gone, or to be re-created from nextRev
		}
		resp.WatchId = w.clientID
		if len(hs.held) == 0 {
			select {
			case hs.sendq <- resp:
				if evs := resp.GetEvents(); len(evs) > 0 {
					w.nextRev = evs[len(evs)-1].GetKv().GetModRevision() + 1
				} else {
					w.nextRev = max(w.nextRev, resp.GetHeader().GetRevision()+1)
				}
				return
			default:
			}
		}
		m.dropWatcher(hs, w, resp)
	}
}

// dropWatcher cancels a watcher in the node because its reply found no
// room; it is re-created later from the first revision not sent.
func (m *Member) dropWatcher(hs *hostStream, w *hostWatcher, unsent *pb.WatchResponse) {
	if evs := unsent.GetEvents(); len(evs) > 0 {
		w.nextRev = evs[0].GetKv().GetModRevision()
	} else {
		w.nextRev = max(w.nextRev, unsent.GetHeader().GetRevision()+1)
	}
	w.dropped = true
	hs.droppedN++
	w.cancelled = true
	w.inNode = false
	m.metrics.watchersDropped.Add(1)
	m.blocked[hs.id] = struct{}{}
	m.node.Watch(hs.id, watchCancel(w.nodeID))
}

// emitControl sends a reply that must not be lost, after any held ones.
func (m *Member) emitControl(hs *hostStream, resp *pb.WatchResponse) {
	if len(hs.held) == 0 {
		select {
		case hs.sendq <- resp:
			return
		default:
		}
	}
	if n := len(hs.held); n > 0 && isProgressReply(resp) && isProgressReply(hs.held[n-1]) {
		// Two stream-wide progress replies in a row say the same thing;
		// the newer revision is the one worth sending.
		hs.held[n-1] = resp
		return
	}
	if len(hs.held) >= m.heldRepliesMax() {
		m.lg.Error("watch stream held more control replies than its bound; ending it",
			zap.Uint64("stream", uint64(hs.id)), zap.Int("held", len(hs.held)), zap.Int("bound", m.heldRepliesMax()))
		hs.dead = true
		hs.held = nil
		select {
		case hs.fail <- errWatchHeldOverflow:
		default:
		}
		return
	}
	hs.held = append(hs.held, resp)
	m.blocked[hs.id] = struct{}{}
	// The sender reports room from now on; anything it drained before the
	// flag was set is caught by flushing once more.
	hs.wantRoom.Store(true)
	m.flushHeld(hs)
}

func isProgressReply(r *pb.WatchResponse) bool {
	return r.GetWatchId() == -1 && !r.GetCreated() && !r.GetCanceled() && len(r.GetEvents()) == 0
}

// flushHeld moves held replies into the send queue while it has room.
func (m *Member) flushHeld(hs *hostStream) {
	for len(hs.held) > 0 {
		select {
		case hs.sendq <- hs.held[0]:
			hs.held[0] = nil
			hs.held = hs.held[1:]
			continue
		default:
		}
		break
	}
	if len(hs.held) == 0 {
		hs.held = nil // let the backing array go: a burst may have grown it
	}
}

// retryBlockedStreams runs every tick: held replies go out as room frees,
// then paused watchers are re-created once the queue is half empty. The
// sender's room reports run the same for their stream at once.
func (m *Member) retryBlockedStreams() {
	for sid := range m.blocked {
		hs := m.streams[sid]
		if hs == nil || hs.dead {
			delete(m.blocked, sid)
			continue
		}
		m.retryBlockedStream(hs)
	}
}

// retryBlockedStream is retryBlockedStreams for one stream.
func (m *Member) retryBlockedStream(hs *hostStream) {
	m.flushHeld(hs)
	if len(hs.held) > 0 || len(hs.sendq) > cap(hs.sendq)/2 {
		hs.wantRoom.Store(true)
		return
	}
	waiting := false
	if hs.droppedN > 0 {
		for _, w := range hs.watchers {
			if !w.dropped {
				continue
			}
			if w.cancelled {
				waiting = true // the node has not confirmed the cancel yet
				continue
			}
			create := proto.Clone(w.create).(*pb.WatchCreateRequest)
			create.WatchId = 0
			create.StartRevision = w.nextRev
			w.dropped = false
			hs.droppedN--
			w.recreate = true
			hs.creates = append(hs.creates, w)
			m.node.Watch(hs.id, watchCreate(create))
		}
	}
	if waiting {
		return
	}
	if hs.progressHeld {
		// Asked after the re-creates: the node answers it only once
		// they have caught up.
		hs.progressHeld = false
		m.node.Watch(hs.id, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	}
	hs.wantRoom.Store(false)
	delete(m.blocked, hs.id)
}

// watchServer is etcd's Watch service.
type watchServer struct {
	pb.UnimplementedWatchServer
	m *Member
}

// requiresLeader reports whether a call carries etcd's hasleader metadata.
// It looks up that one key: FromIncomingContext would copy every header.
func requiresLeader(ctx context.Context) bool {
	vs := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey)
	return len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader
}

func (s *watchServer) Watch(stream pb.Watch_WatchServer) error {
	m := s.m
	ctx := stream.Context()
	needLeader := requiresLeader(ctx)
	if needLeader && !m.state.Load().hasLeader() {
		return rpctypes.ErrGRPCNoLeader
	}
	id := kvsm.StreamID(m.nextStream.Add(1))
	hs := &hostStream{
		id:       id,
		sendq:    make(chan *pb.WatchResponse, watchSendQueueMax),
		fail:     make(chan error, 1),
		credits:  make(chan struct{}, watchRequestCreditsMax),
		watchers: map[int64]*hostWatcher{},
		byNode:   map[int64]*hostWatcher{},
	}
	if err := m.sendWatchOp(ctx, watchOp{stream: id, open: hs}); err != nil {
		return err
	}
	defer m.closeWatchStream(id)

	recvErr := make(chan error, 1)
	go func() {
		for {
			// A credit before each read: while the loop has not settled
			// watchRequestCreditsMax requests, the stream is not read.
			select {
			case hs.credits <- struct{}{}:
			case <-ctx.Done():
				recvErr <- status.Error(codes.Canceled, "context canceled")
				return
			case <-m.loopExit:
				recvErr <- rpctypes.ErrGRPCStopped
				return
			}
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			op := watchOp{stream: id, req: req}
			if req.GetCreateRequest() != nil {
				op.ai, op.authErr = m.identity(ctx)
			}
			if err := m.sendWatchOp(ctx, op); err != nil {
				recvErr <- err
				return
			}
		}
	}()

	var leaderCheck <-chan time.Time
	if needLeader {
		t := time.NewTicker(time.Duration(m.cfg.ElectionMs) * time.Millisecond)
		defer t.Stop()
		leaderCheck = t.C
	}
	leaderless := 0
	for {
		select {
		case resp := <-hs.sendq:
			if err := sendFragments(resp, m.cfg.MaxRequestBytes, stream.Send); err != nil {
				return err
			}
			if len(hs.sendq) <= cap(hs.sendq)/2 && hs.wantRoom.CompareAndSwap(true, false) {
				// The loop holds replies for this stream: tell it there is
				// room now rather than at its next tick.
				if err := m.sendWatchOp(ctx, watchOp{stream: id, room: true}); err != nil {
					return err
				}
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				// The client closed its side: as in etcd, the stream goes
				// on sending until the client goes away (the JSON gateway
				// closes its side after the request body).
				recvErr = nil
				continue
			}
			return err
		case err := <-hs.fail:
			return err
		case <-leaderCheck:
			if m.state.Load().hasLeader() {
				leaderless = 0
			} else if leaderless++; leaderless >= watchLeaderChecks {
				return rpctypes.ErrGRPCNoLeader
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-m.loopExit:
			return rpctypes.ErrGRPCStopped
		}
	}
}

func (m *Member) sendWatchOp(ctxDone interface{ Done() <-chan struct{} }, op watchOp) error {
	select {
	case m.watchOps <- op:
		return nil
	case <-ctxDone.Done():
		return status.Error(codes.Canceled, "context canceled")
	case <-m.loopExit:
		return rpctypes.ErrGRPCStopped
	}
}

// closeWatchStream tells the loop a stream ended, so the node forgets its
// watchers; it waits for room (the loop drains its queue every round).
func (m *Member) closeWatchStream(id kvsm.StreamID) {
	select {
	case m.watchOps <- watchOp{stream: id, close: true}:
	case <-m.loopExit:
	}
}

// sendFragments sends a reply, split as etcd splits one larger than the
// request limit that holds two or more events: fragments of whole events,
// each but the last marked fragment=true (clients join them).
func sendFragments(wr *pb.WatchResponse, maxRequestBytes int, send func(*pb.WatchResponse) error) error {
	if len(wr.GetEvents()) < 2 || proto.Size(wr) < maxRequestBytes {
		return send(wr)
	}
	events := wr.GetEvents()
	idx := 0
	for {
		cur := &pb.WatchResponse{
			Header: wr.GetHeader(), WatchId: wr.GetWatchId(), Created: wr.GetCreated(), Canceled: wr.GetCanceled(),
			CompactRevision: wr.GetCompactRevision(), CancelReason: wr.GetCancelReason(), Fragment: true,
		}
		var batch []*mvccpb.Event
		for idx < len(events) {
			batch = append(batch, events[idx])
			cur.Events = batch
			if len(batch) > 1 && proto.Size(cur) >= maxRequestBytes {
				batch = batch[:len(batch)-1]
				cur.Events = batch
				break
			}
			idx++
		}
		if idx == len(events) {
			cur.Fragment = false
		}
		if err := send(cur); err != nil {
			return err
		}
		if !cur.Fragment {
			return nil
		}
	}
}
