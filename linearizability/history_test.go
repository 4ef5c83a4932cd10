package linearizability

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestWriteHistory(t *testing.T) {
	put := &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}
	in := Input{
		History: []Operation{
			{Client: 0, Call: 10, Return: 20, RequestID: 7, Request: Request{Put: put},
				Response: Response{Put: &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 2}}}},
			{Client: 1, Call: 30, Return: Unknown, Request: Request{Range: &pb.RangeRequest{Key: []byte("k")}}},
		},
		Committed: []CommittedEntry{{Index: 3, RequestID: 7, Request: &pb.InternalRaftRequest{Put: put}}},
	}
	var b strings.Builder
	if err := WriteHistory(in, &b); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		`client 0 op #0 [10, 20] put("k", "v") -> ok @rev 2`,
		`client 1 op #1 [30, unknown] range("k") -> unknown outcome`,
		`committed 3 req=7 put("k", "v")`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("history lacks %q:\n%s", want, got)
		}
	}
}
