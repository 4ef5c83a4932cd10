package main

// The two -tool rows that are procedures rather than one `benchmark`
// command, both on one member a side: resident memory after writing keys
// and compacting, and the time a restarted member takes to serve again.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/noded/noded/cmd/internal/memberproc"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// stopTimeout bounds a member's clean stop before it is killed.
const stopTimeout = 2 * time.Minute

// fillKeys writes keys unique keys of 256 bytes into s with etcd's
// `benchmark put` from 100 clients (keys are the tool's sequential 8-byte
// keys, so a second fill overwrites the first one's).
func fillKeys(o options, s *toolSide, keys int) error {
	args := []string{"--endpoints", strings.Join(s.cluster.endpoints, ","), "put", "--clients", "100", "--conns", "10",
		"--key-size", "8", "--sequential-keys", "--key-space-size", strconv.Itoa(keys), "--val-size", "256",
		"--total", strconv.Itoa(keys)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.tool, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	progress("writing %d keys into %s", keys, s.label)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("fill %s: %w: %s", s.label, err, lastLines(stderr.String(), 5))
	}
	reports, err := parseToolOutput(stdout.Bytes())
	if err != nil {
		return fmt.Errorf("fill %s: %w", s.label, err)
	}
	if r := reports["Summary"]; r != nil && r.errors > 0 {
		return fmt.Errorf("fill %s: %d requests failed", s.label, r.errors)
	}
	return nil
}

// compactAll compacts s at its current revision (physically: the call
// returns once the member has removed the old revisions).
func compactAll(s *toolSide) error {
	ctx, cancel := newRequestContext()
	defer cancel()
	resp, err := s.client.Get(ctx, "compact-probe")
	if err != nil {
		return err
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel2()
	_, err = s.client.Compact(ctx2, resp.Header.Revision, clientv3.WithCompactPhysical())
	return err
}

// residentBytes reads a process's resident set size from /proc.
func residentBytes(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// measureMemory writes -memory-keys keys into each side's one member,
// compacts, lets both idle for -memory-settle, then samples their resident
// memory (a sample every two seconds over the last quarter of the wait;
// the table shows their mean, per-sample ratios as the spread).
func measureMemory(o options, sides [2]*toolSide) (toolResult, error) {
	res := toolResult{custom: &customResult{
		name:   fmt.Sprintf("one member: resident memory, %dk keys x 256 B written then compacted", o.memoryKeys/1000),
		target: "<= 0.6x", unit: "MiB",
	}}
	for _, s := range sides {
		if err := fillKeys(o, s, o.memoryKeys); err != nil {
			return res, err
		}
	}
	for _, s := range sides {
		if err := compactAll(s); err != nil {
			return res, fmt.Errorf("compact %s: %w", s.label, err)
		}
	}
	progress("idle for %v, then sampling resident memory", o.memorySettle)
	sampleFrom := time.Now().Add(o.memorySettle * 3 / 4)
	end := time.Now().Add(o.memorySettle)
	for time.Now().Before(end) {
		time.Sleep(2 * time.Second)
		if time.Now().Before(sampleFrom) {
			continue
		}
		for i, s := range sides {
			rss, err := residentBytes(s.cluster.procs[0].Process.Pid)
			if err != nil {
				return res, fmt.Errorf("%s: %w", s.label, err)
			}
			res.custom.values[i] = append(res.custom.values[i], float64(rss)/(1<<20))
		}
	}
	return res, nil
}

// stopMember stops member i cleanly (SIGTERM), killing it if it has not
// gone after stopTimeout.
func (c *cluster) stopMember(i int) {
	cmd := c.procs[i]
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = memberproc.KillGroup(cmd)
		<-done
	}
	c.procs[i] = nil
}

// measureRestart fills each side's one member to -restart-keys keys, then
// restarts it -rounds times, alternating sides ABBA: each time a clean
// stop, a start, and the seconds from the start until a linearizable read
// is answered.
func measureRestart(o options, sides [2]*toolSide) (toolResult, error) {
	res := toolResult{custom: &customResult{
		name:   fmt.Sprintf("one member: restart to serving, holding %dk keys x 256 B", o.restartKeys/1000),
		target: "<= 0.5x", unit: "s",
	}}
	for _, s := range sides {
		if err := fillKeys(o, s, o.restartKeys); err != nil {
			return res, err
		}
	}
	for round := 0; round < o.rounds; round++ {
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			s := sides[i]
			s.client.Close()
			s.cluster.stopMember(0)
			progress("restart: round %d/%d on %s", round+1, o.rounds, s.label)
			began := time.Now()
			if err := s.cluster.startMember(0); err != nil {
				return res, err
			}
			if err := memberproc.WaitReadyEvery(s.cluster.endpoints[0], "restart-probe", 10*time.Minute, restartProbeEvery, nil, nil); err != nil {
				return res, fmt.Errorf("%s after restart (log %s): %w", s.label, s.cluster.logPaths[0], err)
			}
			res.custom.values[i] = append(res.custom.values[i], time.Since(began).Seconds())
			var err error
			if s.client, err = clientv3.New(clientv3.Config{Endpoints: s.cluster.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// restartProbeEvery is how often the restart row tries a read (and the
// most gRPC waits before it dials a refused port again).
const restartProbeEvery = 10 * time.Millisecond

func numCPU() int { return runtime.NumCPU() }

// clockTicksPerSecond is the unit of /proc/<pid>/stat's CPU times (USER_HZ,
// 100 on Linux everywhere noded runs).
const clockTicksPerSecond = 100

// cpuSeconds is the CPU time (user and system) the cluster's running
// members have spent so far, from /proc; 0 where /proc is missing.
func (c *cluster) cpuSeconds() float64 {
	var total float64
	for _, cmd := range c.procs {
		if cmd == nil || cmd.Process == nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces; fields after it
		// start past the last ')'.
		rest := string(data)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		// f[0] is field 3 (state); utime and stime are fields 14 and 15.
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / clockTicksPerSecond
	}
	return total
}
