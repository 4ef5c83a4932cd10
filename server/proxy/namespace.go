package proxy

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// namespace confines a client to the keys under a prefix (grpc-proxy's
// --namespace): keys and ranges of requests get the prefix, keys of
// answers lose it. The zero namespace changes nothing.
type namespace []byte

func (ns namespace) key(k []byte) []byte {
	if len(ns) == 0 {
		return k
	}
	return append(bytes.Clone(ns), k...)
}

// end maps a range end: "" stays a single key, "\x00" (every key from
// key on) becomes the end of the namespace.
func (ns namespace) end(e []byte) []byte {
	if len(ns) == 0 || len(e) == 0 {
		return e
	}
	if len(e) == 1 && e[0] == 0 {
		return prefixEnd(ns)
	}
	return append(bytes.Clone(ns), e...)
}

func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

func (ns namespace) strip(kv *mvccpb.KeyValue) {
	if kv != nil && len(ns) > 0 {
		kv.Key = bytes.TrimPrefix(kv.Key, ns)
	}
}

func (ns namespace) rangeReq(r *pb.RangeRequest) *pb.RangeRequest {
	if len(ns) == 0 {
		return r
	}
	r = proto.Clone(r).(*pb.RangeRequest)
	r.Key, r.RangeEnd = ns.key(r.Key), ns.end(r.RangeEnd)
	return r
}

func (ns namespace) rangeResp(r *pb.RangeResponse) {
	for _, kv := range r.GetKvs() {
		ns.strip(kv)
	}
}

func (ns namespace) putReq(r *pb.PutRequest) *pb.PutRequest {
	if len(ns) == 0 {
		return r
	}
	r = proto.Clone(r).(*pb.PutRequest)
	r.Key = ns.key(r.Key)
	return r
}

func (ns namespace) deleteReq(r *pb.DeleteRangeRequest) *pb.DeleteRangeRequest {
	if len(ns) == 0 {
		return r
	}
	r = proto.Clone(r).(*pb.DeleteRangeRequest)
	r.Key, r.RangeEnd = ns.key(r.Key), ns.end(r.RangeEnd)
	return r
}

func (ns namespace) deleteResp(r *pb.DeleteRangeResponse) {
	for _, kv := range r.GetPrevKvs() {
		ns.strip(kv)
	}
}

func (ns namespace) txnReq(r *pb.TxnRequest) *pb.TxnRequest {
	if len(ns) == 0 {
		return r
	}
	out := &pb.TxnRequest{}
	for _, c := range r.GetCompare() {
		c = proto.Clone(c).(*pb.Compare)
		c.Key, c.RangeEnd = ns.key(c.Key), ns.end(c.RangeEnd)
		out.Compare = append(out.Compare, c)
	}
	out.Success = ns.ops(r.GetSuccess())
	out.Failure = ns.ops(r.GetFailure())
	return out
}

func (ns namespace) ops(ops []*pb.RequestOp) []*pb.RequestOp {
	out := make([]*pb.RequestOp, 0, len(ops))
	for _, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: ns.rangeReq(op.GetRequestRange())}})
		case op.GetRequestPut() != nil:
			out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: ns.putReq(op.GetRequestPut())}})
		case op.GetRequestDeleteRange() != nil:
			out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: ns.deleteReq(op.GetRequestDeleteRange())}})
		case op.GetRequestTxn() != nil:
			out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: ns.txnReq(op.GetRequestTxn())}})
		default:
			out = append(out, op)
		}
	}
	return out
}

func (ns namespace) txnResp(r *pb.TxnResponse) {
	if len(ns) == 0 {
		return
	}
	for _, op := range r.GetResponses() {
		switch {
		case op.GetResponseRange() != nil:
			ns.rangeResp(op.GetResponseRange())
		case op.GetResponsePut() != nil:
			ns.strip(op.GetResponsePut().GetPrevKv())
		case op.GetResponseDeleteRange() != nil:
			ns.deleteResp(op.GetResponseDeleteRange())
		case op.GetResponseTxn() != nil:
			ns.txnResp(op.GetResponseTxn())
		}
	}
}

func (ns namespace) watchResp(r *pb.WatchResponse) {
	for _, ev := range r.GetEvents() {
		ns.strip(ev.GetKv())
		ns.strip(ev.GetPrevKv())
	}
}

// leaseKeys keeps the keys of a lease inside the namespace, without it.
func (ns namespace) leaseKeys(keys [][]byte) [][]byte {
	if len(ns) == 0 {
		return keys
	}
	var out [][]byte
	for _, k := range keys {
		if bytes.HasPrefix(k, ns) {
			out = append(out, bytes.TrimPrefix(k, ns))
		}
	}
	return out
}
