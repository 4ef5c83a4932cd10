package kvsm

import (
	"fmt"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// Describers for traces and golden files. They never use prototext or %v on
// messages: protobuf's text output varies between builds on purpose, and a
// trace must read the same natively and under WebAssembly.

// String describes the result deterministically.
func (r ApplyResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev=%d", r.Rev)
	if r.Err != nil {
		fmt.Fprintf(&b, " err=%q", r.Err.Error())
	}
	if r.Resp != nil {
		b.WriteString(" ")
		describeMessage(&b, r.Resp)
	}
	if len(r.Events) > 0 {
		b.WriteString(" events=[")
		for i, ev := range r.Events {
			if i > 0 {
				b.WriteString(" ")
			}
			describeEvent(&b, ev)
		}
		b.WriteString("]")
	}
	return b.String()
}

// String describes the reply deterministically.
func (r StreamResponse) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream=%d ", r.Stream)
	describeMessage(&b, r.Resp)
	return b.String()
}

// String describes the lease deterministically.
func (l LeaseInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lease{id=%d ttl=%ds keys=[", l.ID, l.GrantedTTLSeconds)
	for i, k := range l.Keys {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(strconv.Quote(string(k)))
	}
	b.WriteString("]}")
	return b.String()
}

// Describe renders any message kvsm produces (and the requests it takes)
// deterministically, for traces.
func Describe(m proto.Message) string {
	var b strings.Builder
	describeMessage(&b, m)
	return b.String()
}

func q(p []byte) string { return strconv.Quote(string(p)) }

func describeKV(b *strings.Builder, kv *mvccpb.KeyValue) {
	if kv == nil {
		b.WriteString("nil")
		return
	}
	fmt.Fprintf(b, "%s@%d{c=%d v=%d", q(kv.GetKey()), kv.GetModRevision(), kv.GetCreateRevision(), kv.GetVersion())
	if kv.GetValue() != nil {
		fmt.Fprintf(b, " val=%s", q(kv.GetValue()))
	}
	if kv.GetLease() != 0 {
		fmt.Fprintf(b, " lease=%d", kv.GetLease())
	}
	b.WriteString("}")
}

func describeKVs(b *strings.Builder, kvs []*mvccpb.KeyValue) {
	b.WriteString("[")
	for i, kv := range kvs {
		if i > 0 {
			b.WriteString(" ")
		}
		describeKV(b, kv)
	}
	b.WriteString("]")
}

func describeEvent(b *strings.Builder, ev *mvccpb.Event) {
	b.WriteString(ev.GetType().String())
	b.WriteString(" ")
	describeKV(b, ev.GetKv())
	if ev.GetPrevKv() != nil {
		b.WriteString(" prev=")
		describeKV(b, ev.GetPrevKv())
	}
}

func describeOps(b *strings.Builder, ops []*pb.RequestOp) {
	b.WriteString("[")
	for i, op := range ops {
		if i > 0 {
			b.WriteString(" ")
		}
		switch {
		case op.GetRequestRange() != nil:
			describeMessage(b, op.GetRequestRange())
		case op.GetRequestPut() != nil:
			describeMessage(b, op.GetRequestPut())
		case op.GetRequestDeleteRange() != nil:
			describeMessage(b, op.GetRequestDeleteRange())
		case op.GetRequestTxn() != nil:
			describeMessage(b, op.GetRequestTxn())
		default:
			b.WriteString("Empty{}")
		}
	}
	b.WriteString("]")
}

func describeMessage(b *strings.Builder, m proto.Message) {
	switch m := m.(type) {
	case *pb.RangeResponse:
		fmt.Fprintf(b, "Range{rev=%d count=%d more=%t kvs=", m.GetHeader().GetRevision(), m.GetCount(), m.GetMore())
		describeKVs(b, m.GetKvs())
		b.WriteString("}")
	case *pb.PutResponse:
		fmt.Fprintf(b, "Put{rev=%d", m.GetHeader().GetRevision())
		if m.GetPrevKv() != nil {
			b.WriteString(" prev=")
			describeKV(b, m.GetPrevKv())
		}
		b.WriteString("}")
	case *pb.DeleteRangeResponse:
		fmt.Fprintf(b, "DeleteRange{rev=%d deleted=%d", m.GetHeader().GetRevision(), m.GetDeleted())
		if len(m.GetPrevKvs()) > 0 {
			b.WriteString(" prev=")
			describeKVs(b, m.GetPrevKvs())
		}
		b.WriteString("}")
	case *pb.TxnResponse:
		fmt.Fprintf(b, "Txn{rev=%d succeeded=%t [", m.GetHeader().GetRevision(), m.GetSucceeded())
		for i, r := range m.GetResponses() {
			if i > 0 {
				b.WriteString(" ")
			}
			switch {
			case r.GetResponseRange() != nil:
				describeMessage(b, r.GetResponseRange())
			case r.GetResponsePut() != nil:
				describeMessage(b, r.GetResponsePut())
			case r.GetResponseDeleteRange() != nil:
				describeMessage(b, r.GetResponseDeleteRange())
			case r.GetResponseTxn() != nil:
				describeMessage(b, r.GetResponseTxn())
			default:
				b.WriteString("Empty{}")
			}
		}
		b.WriteString("]}")
	case *pb.CompactionResponse:
		fmt.Fprintf(b, "Compaction{rev=%d}", m.GetHeader().GetRevision())
	case *pb.LeaseGrantResponse:
		fmt.Fprintf(b, "LeaseGrant{rev=%d id=%d ttl=%d}", m.GetHeader().GetRevision(), m.GetID(), m.GetTTL())
	case *pb.LeaseRevokeResponse:
		fmt.Fprintf(b, "LeaseRevoke{rev=%d}", m.GetHeader().GetRevision())
	case *pb.AlarmResponse:
		fmt.Fprintf(b, "Alarm{rev=%d [", m.GetHeader().GetRevision())
		for i, a := range m.GetAlarms() {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(b, "%d:%s", a.GetMemberID(), a.GetAlarm())
		}
		b.WriteString("]}")
	case *pb.WatchResponse:
		fmt.Fprintf(b, "Watch{rev=%d id=%d", m.GetHeader().GetRevision(), m.GetWatchId())
		if m.GetCreated() {
			b.WriteString(" created")
		}
		if m.GetCanceled() {
			b.WriteString(" canceled")
		}
		if m.GetCompactRevision() != 0 {
			fmt.Fprintf(b, " compact=%d", m.GetCompactRevision())
		}
		if m.GetCancelReason() != "" {
			fmt.Fprintf(b, " reason=%q", m.GetCancelReason())
		}
		if len(m.GetEvents()) > 0 {
			b.WriteString(" events=[")
			for i, ev := range m.GetEvents() {
				if i > 0 {
					b.WriteString(" ")
				}
				describeEvent(b, ev)
			}
			b.WriteString("]")
		}
		b.WriteString("}")
	case *pb.RangeRequest:
		fmt.Fprintf(b, "RangeReq{%s..%s rev=%d limit=%d sort=%s/%s keys_only=%t count_only=%t mod=[%d,%d] create=[%d,%d]}",
			q(m.GetKey()), q(m.GetRangeEnd()), m.GetRevision(), m.GetLimit(), m.GetSortTarget(), m.GetSortOrder(),
			m.GetKeysOnly(), m.GetCountOnly(), m.GetMinModRevision(), m.GetMaxModRevision(),
			m.GetMinCreateRevision(), m.GetMaxCreateRevision())
	case *pb.PutRequest:
		fmt.Fprintf(b, "PutReq{%s=%s lease=%d prev_kv=%t ignore_value=%t ignore_lease=%t}",
			q(m.GetKey()), q(m.GetValue()), m.GetLease(), m.GetPrevKv(), m.GetIgnoreValue(), m.GetIgnoreLease())
	case *pb.DeleteRangeRequest:
		fmt.Fprintf(b, "DeleteRangeReq{%s..%s prev_kv=%t}", q(m.GetKey()), q(m.GetRangeEnd()), m.GetPrevKv())
	case *pb.TxnRequest:
		b.WriteString("TxnReq{if=[")
		for i, c := range m.GetCompare() {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(b, "%s(%s..%s) %s ", c.GetTarget(), q(c.GetKey()), q(c.GetRangeEnd()), c.GetResult())
			switch t := c.GetTargetUnion().(type) {
			case *pb.Compare_Value:
				b.WriteString(q(t.Value))
			case *pb.Compare_Version:
				fmt.Fprintf(b, "version:%d", t.Version)
			case *pb.Compare_CreateRevision:
				fmt.Fprintf(b, "create:%d", t.CreateRevision)
			case *pb.Compare_ModRevision:
				fmt.Fprintf(b, "mod:%d", t.ModRevision)
			case *pb.Compare_Lease:
				fmt.Fprintf(b, "lease:%d", t.Lease)
			default:
				b.WriteString("unset")
			}
		}
		b.WriteString("] then=")
		describeOps(b, m.GetSuccess())
		b.WriteString(" else=")
		describeOps(b, m.GetFailure())
		b.WriteString("}")
	case *pb.InternalRaftRequest:
		switch {
		case m.GetRange() != nil:
			describeMessage(b, m.GetRange())
		case m.GetPut() != nil:
			describeMessage(b, m.GetPut())
		case m.GetDeleteRange() != nil:
			describeMessage(b, m.GetDeleteRange())
		case m.GetTxn() != nil:
			describeMessage(b, m.GetTxn())
		case m.GetCompaction() != nil:
			fmt.Fprintf(b, "CompactReq{rev=%d}", m.GetCompaction().GetRevision())
		case m.GetLeaseGrant() != nil:
			fmt.Fprintf(b, "LeaseGrantReq{id=%d ttl=%d}", m.GetLeaseGrant().GetID(), m.GetLeaseGrant().GetTTL())
		case m.GetLeaseRevoke() != nil:
			fmt.Fprintf(b, "LeaseRevokeReq{id=%d}", m.GetLeaseRevoke().GetID())
		case m.GetAlarm() != nil:
			fmt.Fprintf(b, "AlarmReq{%s %d:%s}", m.GetAlarm().GetAction(), m.GetAlarm().GetMemberID(), m.GetAlarm().GetAlarm())
		default:
			b.WriteString("OtherReq{}")
		}
	case nil:
		b.WriteString("nil")
	default:
		fmt.Fprintf(b, "%T{}", m)
	}
}

// String describes the configuration, for the simulator's knob list.
func (c Config) String() string {
	return fmt.Sprintf("kvsm{max_txn_ops=%d min_lease_ttl=%ds}", c.maxTxnOps(), c.MinLeaseTTLSeconds)
}

// String summarises the store's state for traces: revisions and sizes,
// not contents.
func (s *Store) String() string {
	return fmt.Sprintf("kvsm{rev=%d compact=%d keys=%d revisions=%d leases=%d alarms=%d size=%dB}",
		s.kv.rev, s.kv.compactRev, s.kv.keys.Len(), s.revLog.len(), s.leases.Len(), len(s.alarms), s.sizeBytes)
}
