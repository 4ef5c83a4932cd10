// Package flood loads a running member the way a careless or hostile
// client does, for the end-to-end tests of cmd/noded and for nodebench's
// -flood figures: thousands of TCP connections that never send a byte
// (kept open, redialled when the member closes them), and a forged
// snapshot stream on noded's peer port; and, beside them, a client that
// keeps writing and reading back. It also reads what a member's process
// holds (resident memory, sockets) from /proc.
//
// flood may import the standard library, noded's package net (for the
// peer protocol's frames), go.etcd.io/raft/v3/raftpb,
// google.golang.org/protobuf and go.etcd.io/etcd/client/v3.
package flood

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	nodednet "github.com/noded/noded/net"
)

const (
	// dialsInFlightMax bounds concurrent dials, so a flood does not overrun
	// the listen backlog and measure SYN retries instead of the member.
	dialsInFlightMax = 64
	// redialDelay is how long a connection the member closed waits before
	// it is dialled again.
	redialDelay = 50 * time.Millisecond
	dialTimeout = 5 * time.Second
)

// Idle keeps n connections to addr open, each sending nothing; one the
// member closes is dialled again, so the member faces n silent sockets all
// along.
type Idle struct {
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dials  chan struct{}

	open           atomic.Int64
	closedByMember atomic.Int64
	dialErrors     atomic.Int64
	mu             sync.Mutex
	lastDialErr    error
}

// StartIdle starts n idle connections to addr and returns once each has
// been dialled once (or failed to be).
func StartIdle(addr string, n int) *Idle {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Idle{addr: addr, ctx: ctx, cancel: cancel, dials: make(chan struct{}, dialsInFlightMax)}
	var first sync.WaitGroup
	first.Add(n)
	for range n {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.keep(&first)
		}()
	}
	first.Wait()
	return f
}

// keep holds one connection open until Stop, redialling when it closes.
func (f *Idle) keep(first *sync.WaitGroup) {
	once := sync.OnceFunc(first.Done)
	defer once()
	for f.ctx.Err() == nil {
		conn, err := f.dial()
		once()
		if err != nil {
			f.dialErrors.Add(1)
			f.mu.Lock()
			f.lastDialErr = err
			f.mu.Unlock()
			sleep(f.ctx, redialDelay+rand.N(redialDelay))
			continue
		}
		f.open.Add(1)
		stop := context.AfterFunc(f.ctx, func() { conn.Close() })
		// Blocks until the member closes the connection (or Stop does).
		io.Copy(io.Discard, conn)
		stop()
		conn.Close()
		f.open.Add(-1)
		if f.ctx.Err() == nil {
			f.closedByMember.Add(1)
			sleep(f.ctx, redialDelay)
		}
	}
}

func (f *Idle) dial() (net.Conn, error) {
	select {
	case f.dials <- struct{}{}:
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
	defer func() { <-f.dials }()
	return (&net.Dialer{Timeout: dialTimeout}).DialContext(f.ctx, "tcp", f.addr)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// IdleStats describe a flood as of now.
type IdleStats struct {
	Open           int   // connections open now
	ClosedByMember int64 // connections the member closed (each redialled)
	DialErrors     int64
	LastDialError  string
}

func (f *Idle) Stats() IdleStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := IdleStats{Open: int(f.open.Load()), ClosedByMember: f.closedByMember.Load(), DialErrors: f.dialErrors.Load()}
	if f.lastDialErr != nil {
		s.LastDialError = f.lastDialErr.Error()
	}
	return s
}

// Stop closes every connection and waits for the goroutines.
func (f *Idle) Stop() {
	f.cancel()
	f.wg.Wait()
}

// Process is what a member's process holds, from /proc.
type Process struct {
	RSSBytes     int64 // resident now (VmRSS)
	PeakRSSBytes int64 // high-water mark (VmHWM)
	Sockets      int   // open socket descriptors
	Threads      int
}

// ReadProcess reads pid's figures (Linux only).
func ReadProcess(pid int) (Process, error) {
	var p Process
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch name {
		case "VmRSS":
			p.RSSBytes = n << 10
		case "VmHWM":
			p.PeakRSSBytes = n << 10
		case "Threads":
			p.Threads = int(n)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return p, err
	}
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			p.Sockets++
		}
	}
	return p, nil
}

// Forged describes a forged snapshot stream to noded's peer port: the
// hello claims to come from member From of cluster ClusterID (both public:
// the member list and X-Etcd-Cluster-ID show them), then a snapshot header
// announces AnnounceBytes and SendBytes of junk follow in chunks.
type Forged struct {
	PeerAddr      string // host:port of the member's peer URL
	TLS           *tls.Config
	ClusterID     uint64
	From, To      uint64
	AnnounceBytes uint64
	SendBytes     uint64
	ChunkBytes    int
	// OnProgress, if set, is called after every chunk with the bytes sent.
	OnProgress func(sent uint64)
}

// ErrRefusedEarly is wrapped by Send's error when the member refused the
// stream before all of it was sent.
var ErrRefusedEarly = errors.New("the member closed the stream")

// Send runs the forged stream and returns the member's verdict: the
// refusal's reason, or an error saying how the stream ended.
func (fs Forged) Send() (string, error) {
	d := &net.Dialer{Timeout: dialTimeout}
	var conn net.Conn
	var err error
	if fs.TLS != nil {
		conn, err = tls.DialWithDialer(d, "tcp", fs.PeerAddr, fs.TLS)
	} else {
		conn, err = d.Dial("tcp", fs.PeerAddr)
	}
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	replies := nodednet.NewFrameReader(conn, 1<<20)
	hello := nodednet.Hello{Version: nodednet.ProtocolVersion, Stream: nodednet.StreamSnapshot, ClusterID: fs.ClusterID, From: fs.From, To: fs.To}
	// "NDPR" opens every peer connection (package net's preamble).
	opening := nodednet.AppendFrame([]byte("NDPR"), nodednet.FrameHello, hello.AppendPayload(nil))
	conn.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := conn.Write(opening); err != nil {
		return "", fmt.Errorf("write hello: %w", err)
	}
	kind, payload, err := replies.ReadFrame()
	if err != nil {
		return "", fmt.Errorf("read hello reply: %w", err)
	}
	if kind != nodednet.FrameHelloReply {
		return "", fmt.Errorf("hello answered with a %s frame", kind)
	}
	reply, err := nodednet.DecodeHelloReply(payload)
	if err != nil {
		return "", err
	}
	if reply.Status != nodednet.HelloAccepted {
		return reply.Reason, nil
	}
	conn.SetDeadline(time.Time{})
	msg := forgedSnapshotMessage(fs.From, fs.To)
	header, err := nodednet.SnapshotHeader{DataBytes: fs.AnnounceBytes, Message: msg}.AppendPayload(nil)
	if err != nil {
		return "", err
	}
	// Acks are read concurrently: a refusal arrives while chunks are
	// still being written.
	verdict := make(chan string, 1)
	go func() {
		kind, payload, err := replies.ReadFrame()
		if err != nil || kind != nodednet.FrameSnapshotAck {
			verdict <- ""
			return
		}
		ack, err := nodednet.DecodeSnapshotAck(payload)
		if err != nil {
			verdict <- ""
			return
		}
		verdict <- ack.Reason
	}()
	w := bufio.NewWriterSize(conn, 1<<16)
	w.Write(nodednet.AppendFrame(nil, nodednet.FrameSnapshotHeader, header))
	chunkBytes := fs.ChunkBytes
	if chunkBytes <= 0 {
		chunkBytes = 1 << 20
	}
	chunk := make([]byte, chunkBytes)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	var frame []byte
	var sent uint64
	var writeErr error
	for sent < fs.SendBytes {
		n := min(uint64(chunkBytes), fs.SendBytes-sent)
		frame = nodednet.AppendFrame(frame[:0], nodednet.FrameSnapshotChunk, chunk[:n])
		conn.SetWriteDeadline(time.Now().Add(dialTimeout))
		if _, writeErr = w.Write(frame); writeErr == nil {
			writeErr = w.Flush()
		}
		if writeErr != nil {
			break
		}
		sent += n
		if fs.OnProgress != nil {
			fs.OnProgress(sent)
		}
	}
	if writeErr == nil {
		w.Write(nodednet.AppendFrame(nil, nodednet.FrameSnapshotEnd, nodednet.SnapshotEnd{DataCRC32C: 1}.AppendPayload(nil)))
		writeErr = w.Flush()
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	reason := <-verdict
	if reason != "" {
		if writeErr != nil {
			return reason, fmt.Errorf("%w after %d bytes", ErrRefusedEarly, sent)
		}
		return reason, nil
	}
	if writeErr != nil {
		return "", fmt.Errorf("%w after %d bytes: %v", ErrRefusedEarly, sent, writeErr)
	}
	return "", errors.New("no verdict from the member")
}

// forgedSnapshotMessage is the MsgSnap a forged header carries.
func forgedSnapshotMessage(from, to uint64) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MessageType_MsgSnap.Enum(),
		From: proto.Uint64(from),
		To:   proto.Uint64(to),
		Term: proto.Uint64(1 << 40),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(1 << 40),
			Term:      proto.Uint64(1 << 40),
			ConfState: &raftpb.ConfState{Voters: []uint64{from, to}},
		}},
	}
}

// ReadWriter puts key i and reads it back, one pair at a time, until
// stopped, counting the pairs done and keeping the keys acknowledged.
type ReadWriter struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked []string
	fails int
	last  error
}

// StartReadWriter starts the loop on cli with keys prefix0000000, ...;
// each request has requestTimeout.
func StartReadWriter(cli *clientv3.Client, prefix string, requestTimeout time.Duration) *ReadWriter {
	rw := &ReadWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(rw.done)
		for i := 0; ; i++ {
			select {
			case <-rw.stop:
				return
			default:
			}
			key, value := fmt.Sprintf("%s%07d", prefix, i), fmt.Sprintf("v%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			_, err := cli.Put(ctx, key, value)
			if err == nil {
				var resp *clientv3.GetResponse
				resp, err = cli.Get(ctx, key)
				if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value) {
					err = fmt.Errorf("read %s back as %v", key, resp.Kvs)
				}
			}
			cancel()
			rw.mu.Lock()
			if err == nil {
				rw.acked = append(rw.acked, key)
			} else {
				rw.fails++
				rw.last = err
			}
			rw.mu.Unlock()
		}
	}()
	return rw
}

// Counts are the pairs done and failed so far, and the last error.
func (rw *ReadWriter) Counts() (done, failed int, last error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return len(rw.acked), rw.fails, rw.last
}

// Stop ends the loop and returns the keys whose put was acknowledged.
func (rw *ReadWriter) Stop() []string {
	select {
	case <-rw.stop:
	default:
		close(rw.stop)
	}
	<-rw.done
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return slices.Clone(rw.acked)
}
