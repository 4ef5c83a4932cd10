package main

import (
	"context"
	"fmt"
	stdnet "net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// The floor member answers every call the rows make, as clientv3 (which
// etcd's `benchmark` is built on) expects: put, get, a txn, an STM
// transaction, lease grant and keepalive, and status. A floor that failed
// any of them would make its rate a rate of errors.
func TestFloorMemberAnswersTheRowsCalls(t *testing.T) {
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	errs := make(chan error, 1)
	go func() { errs <- runFloorMember([]string{"--name=floor", "--listen-client-urls=http://" + addr}) }()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	check := func(what string, err error) {
		t.Helper()
		select {
		case serveErr := <-errs:
			t.Fatalf("the floor member stopped: %v", serveErr)
		default:
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for range 3 { // the first call waits for the listener
		if _, err = cli.Put(ctx, "k", "v"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	check("put", err)
	_, err = cli.Get(ctx, "k", clientv3.WithSerializable())
	check("get", err)
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("k"), "=", 0)).
		Then(clientv3.OpPut("k", "v"), clientv3.OpGet("k")).Commit()
	check("txn", err)
	if !txn.Succeeded || len(txn.Responses) != 2 || txn.Responses[0].GetResponsePut() == nil || txn.Responses[1].GetResponseRange() == nil {
		t.Fatalf("txn answered %v, want success with a put and a range response", txn)
	}
	_, err = concurrency.NewSTM(cli, func(s concurrency.STM) error {
		s.Put("a", fmt.Sprint(s.Get("a")+"x"))
		return nil
	}, concurrency.WithAbortContext(ctx))
	check("stm", err)
	grant, err := cli.Grant(ctx, 5)
	check("grant", err)
	ka, err := cli.KeepAliveOnce(ctx, grant.ID)
	check("keepalive", err)
	if ka.TTL <= 0 {
		t.Fatalf("keepalive answered TTL %d", ka.TTL)
	}
	st, err := cli.Status(ctx, addr)
	check("status", err)
	if st.Leader != st.Header.GetMemberId() {
		t.Fatalf("status names leader %x, member %x: the floor must be its own leader", st.Leader, st.Header.GetMemberId())
	}
}
