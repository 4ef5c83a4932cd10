package main

// The workloads: one row is one kind of request from a number of concurrent
// clients, each client issuing one request at a time.

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// requestTimeout bounds one benchmark request; a request over it counts as
// an error, not as a latency.
const requestTimeout = 10 * time.Second

type opKind int

const (
	opPut opKind = iota
	opRangeLinearizable
	opRangeSerializable
)

type rowSpec struct {
	id      string // the name -rows takes
	name    string // the name the table shows
	op      opKind
	clients int
	// tls runs the row over the https client URLs, with client
	// certificates (mutual TLS).
	tls bool
}

var plainRows = []rowSpec{
	{id: "put-1", name: "put, 1 client", op: opPut, clients: 1},
	{id: "put-100", name: "put, 100 clients", op: opPut, clients: 100},
	{id: "range-l-100", name: "range linearizable, 100 clients", op: opRangeLinearizable, clients: 100},
	{id: "range-s-100", name: "range serializable, 100 clients", op: opRangeSerializable, clients: 100},
}

// allRows are the plain rows and their TLS twins (id suffix -tls).
var allRows = withTLSTwins(plainRows)

func withTLSTwins(rows []rowSpec) []rowSpec {
	out := slices.Clone(rows)
	for _, r := range rows {
		r.id, r.name, r.tls = r.id+"-tls", r.name+", TLS", true
		out = append(out, r)
	}
	return out
}

// side is one system under test: the endpoints and the connections the
// clients share, plain and (when TLS rows run) over TLS.
type side struct {
	label        string
	binary       string
	version      string
	endpoints    []string
	conns        []*clientv3.Client
	tlsEndpoints []string
	tlsConns     []*clientv3.Client
	cluster      *cluster // nil when pointed at running endpoints
}

// connect opens conns connections to the plain endpoints, and as many to
// the TLS endpoints (if any) with tlsConfig.
func (s *side) connect(conns int, tlsConfig *tls.Config) error {
	open := func(endpoints []string, cfg *tls.Config) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{
			Endpoints:   endpoints,
			DialTimeout: 5 * time.Second,
			TLS:         cfg,
			Logger:      zap.NewNop(),
		})
	}
	for i := 0; i < conns; i++ {
		cli, err := open(s.endpoints, nil)
		if err != nil {
			return err
		}
		s.conns = append(s.conns, cli)
		if len(s.tlsEndpoints) > 0 {
			if cli, err = open(s.tlsEndpoints, tlsConfig); err != nil {
				return err
			}
			s.tlsConns = append(s.tlsConns, cli)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	st, err := s.conns[0].Status(ctx, s.endpoints[0])
	if err != nil {
		return fmt.Errorf("status of %s: %w", s.endpoints[0], err)
	}
	s.version = st.Version
	return nil
}

func (s *side) close() {
	for _, cli := range append(s.conns, s.tlsConns...) {
		cli.Close()
	}
	if s.cluster != nil {
		s.cluster.stop()
	}
}

// budget is how much one slice of a row runs: a duration, or a number of
// requests when requests > 0.
type budget struct {
	duration time.Duration
	requests int64
}

// sample is the outcome of one or more slices of a row on one side.
type sample struct {
	requests  int64
	errors    int64
	elapsed   time.Duration
	latencies []time.Duration
	firstErr  error
}

func (s *sample) add(o sample) {
	s.requests += o.requests
	s.errors += o.errors
	s.elapsed += o.elapsed
	s.latencies = append(s.latencies, o.latencies...)
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}

func (s *sample) requestsPerSecond() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.requests) / s.elapsed.Seconds()
}

// percentile returns the latency below which a fraction q of the successful
// requests fell (nearest rank); latencies must be sorted.
func (s *sample) percentile(q float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	return s.latencies[int(q*float64(len(s.latencies)-1)+0.5)]
}

type workload struct {
	value     string
	rangeKeys int
}

func putKey(row string, round, client int, seq int64) string {
	return fmt.Sprintf("bench/put/%s/r%d/c%03d/%09d", row, round, client, seq)
}

func rangeKey(i int) string { return fmt.Sprintf("bench/range/%08d", i) }

// runSlice drives one slice of row against s: row.clients goroutines, client
// i on connection i mod len(conns), until the budget is spent.
func (w *workload) runSlice(s *side, row rowSpec, round int, b budget) sample {
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		total     sample
		remaining atomic.Int64
	)
	remaining.Store(b.requests)
	start := time.Now()
	deadline := start.Add(b.duration)
	for c := 0; c < row.clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns := s.conns
			if row.tls {
				conns = s.tlsConns
			}
			cli := conns[c%len(conns)]
			rng := rand.New(rand.NewPCG(uint64(round), uint64(c)))
			var local sample
			for seq := int64(0); ; seq++ {
				if b.requests > 0 {
					if remaining.Add(-1) < 0 {
						break
					}
				} else if !time.Now().Before(deadline) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
				began := time.Now()
				var err error
				switch row.op {
				case opPut:
					_, err = cli.Put(ctx, putKey(row.id, round, c, seq), w.value)
				case opRangeLinearizable:
					_, err = cli.Get(ctx, rangeKey(rng.IntN(w.rangeKeys)))
				case opRangeSerializable:
					_, err = cli.Get(ctx, rangeKey(rng.IntN(w.rangeKeys)), clientv3.WithSerializable())
				}
				took := time.Since(began)
				cancel()
				local.requests++
				if err != nil {
					local.errors++
					if local.firstErr == nil {
						local.firstErr = err
					}
					continue
				}
				local.latencies = append(local.latencies, took)
			}
			mu.Lock()
			total.add(local)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	return total
}

// preload writes the keyspace the range rows read, from 100 clients.
func (w *workload) preload(s *side) error {
	const loaders = 100
	var next atomic.Int64
	errs := make(chan error, loaders)
	var wg sync.WaitGroup
	for c := 0; c < loaders; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := s.conns[c%len(s.conns)]
			for {
				i := int(next.Add(1) - 1)
				if i >= w.rangeKeys {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
				_, err := cli.Put(ctx, rangeKey(i), w.value)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("preload %s on %s: %w", rangeKey(i), s.label, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func sortLatencies(s *sample) { slices.Sort(s.latencies) }

// newRequestContext bounds one request by requestTimeout.
func newRequestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), requestTimeout)
}
