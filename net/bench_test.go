package net

import (
	"fmt"
	stdnet "net"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// countingHandler counts deliveries and wakes the sender every
// benchProgressEvery messages.
type countingHandler struct {
	received atomic.Int64
	progress chan struct{} // capacity 1
}

const benchProgressEvery = 64

func (h *countingHandler) Process(*raftpb.Message) error {
	if h.received.Add(1)%benchProgressEvery == 0 {
		select {
		case h.progress <- struct{}{}:
		default:
		}
	}
	return nil
}
func (h *countingHandler) ReportUnreachable(uint64)    {}
func (h *countingHandler) ReportSnapshot(uint64, bool) {}

// BenchmarkTransportMsgApp measures one stream over loopback: MsgApp
// messages of one entry each, sent in batches of benchBatchMessages as a
// leader's Ready would, with at most benchWindowMessages in flight so the
// queue never overflows (a drop would measure raft's retry, not the
// transport). MB/s counts whole frames.
func BenchmarkTransportMsgApp(b *testing.B) {
	for _, entryBytes := range []int{256, 4096} {
		b.Run(fmt.Sprintf("entry=%dB", entryBytes), func(b *testing.B) { benchmarkMsgApp(b, entryBytes) })
	}
}

const (
	benchBatchMessages  = 16
	benchWindowMessages = 2048 // half the default queue
)

func benchmarkMsgApp(b *testing.B, entryBytes int) {
	sender, receiver := &countingHandler{progress: make(chan struct{}, 1)}, &countingHandler{progress: make(chan struct{}, 1)}
	var transports []*TCPTransport
	var urls []string
	for i, h := range []Handler{sender, receiver} {
		cfg := Config{LocalID: uint64(i + 1), ClusterID: testClusterID, Logger: func(string, ...any) {}}
		tr, err := NewTCPTransport(cfg, h)
		if err != nil {
			b.Fatal(err)
		}
		l, err := stdnet.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go tr.Serve(l)
		transports = append(transports, tr)
		urls = append(urls, "http://"+l.Addr().String())
	}
	defer func() {
		for _, tr := range transports {
			tr.Close()
		}
	}()
	transports[0].AddPeer(2, []string{urls[1]})
	transports[1].AddPeer(1, []string{urls[0]})
	deadline := time.Now().Add(waitTimeout)
	for len(transports[0].ActivePeers()) == 0 {
		if time.Now().After(deadline) {
			b.Fatal("stream did not come up")
		}
		time.Sleep(time.Millisecond)
	}

	m := appMessage(1, 2, 1000, entryBytes)
	b.SetBytes(int64(FrameHeaderBytes + proto.Size(m)))
	batch := make([]*raftpb.Message, benchBatchMessages)
	for i := range batch {
		batch[i] = m
	}
	target := int64(b.N)
	b.ResetTimer()
	began := time.Now()
	for sent := int64(0); sent < target; {
		for sent-receiver.received.Load() > benchWindowMessages {
			select {
			case <-receiver.progress:
			case <-time.After(waitTimeout):
				b.Fatalf("stalled at %d of %d received; stats %+v", receiver.received.Load(), target, transports[0].Stats())
			}
		}
		n := min(int64(len(batch)), target-sent)
		transports[0].Send(batch[:n])
		sent += n
	}
	for receiver.received.Load() < target {
		select {
		case <-receiver.progress:
		case <-time.After(time.Millisecond):
		}
		if time.Since(began) > waitTimeout+time.Duration(b.N)*time.Millisecond {
			b.Fatalf("only %d of %d received; stats %+v", receiver.received.Load(), target, transports[0].Stats())
		}
	}
	elapsed := time.Since(began)
	b.StopTimer()
	if dropped := transports[0].Stats().Peers[0].MessagesDropped; dropped != 0 {
		b.Fatalf("%d messages dropped", dropped)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
