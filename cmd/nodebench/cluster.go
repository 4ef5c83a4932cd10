package main

// Starting a side: members as real processes on free loopback ports with
// etcd's static bootstrap flags, each in its own process group so that
// stopping the benchmark (or its dying) takes them all down.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// readyTimeout bounds how long a started cluster may take to serve a
// linearizable read through every member.
const readyTimeout = 90 * time.Second

type cluster struct {
	label     string
	binary    string
	endpoints []string
	procs     []*exec.Cmd
	logPaths  []string
}

// startCluster starts members of binary under dir, all with the same flags
// as the other side, and waits until every member serves reads.
func startCluster(label, binary, dir string, members int) (*cluster, error) {
	c := &cluster{label: label, binary: binary}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * members)
	if err != nil {
		return nil, err
	}
	var initial []string
	var peers []string
	for i := 0; i < members; i++ {
		c.endpoints = append(c.endpoints, fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
		initial = append(initial, fmt.Sprintf("%s-%d=%s", label, i, peers[i]))
	}
	for i := 0; i < members; i++ {
		name := fmt.Sprintf("%s-%d", label, i)
		args := []string{
			"--name=" + name,
			"--data-dir=" + filepath.Join(dir, name+".etcd"),
			"--listen-client-urls=" + c.endpoints[i],
			"--advertise-client-urls=" + c.endpoints[i],
			"--listen-peer-urls=" + peers[i],
			"--initial-advertise-peer-urls=" + peers[i],
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-token=nodebench-" + label,
			"--initial-cluster-state=new",
			"--heartbeat-interval=100",
			"--election-timeout=1000",
		}
		logPath := filepath.Join(dir, name+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			c.stop()
			return nil, err
		}
		cmd := exec.Command(binary, args...)
		cmd.Env = memberEnv()
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logFile.Close()
			c.stop()
			return nil, fmt.Errorf("start %s: %w", binary, err)
		}
		logFile.Close()
		c.procs = append(c.procs, cmd)
		c.logPaths = append(c.logPaths, logPath)
	}
	for i, ep := range c.endpoints {
		if err := waitReady(ep); err != nil {
			c.stop()
			return nil, fmt.Errorf("%s member %d (log %s): %w", label, i, c.logPaths[i], err)
		}
	}
	return c, nil
}

// stop kills every member's process group and reaps it.
func (c *cluster) stop() {
	for _, cmd := range c.procs {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}
	c.procs = nil
}

func waitReady(endpoint string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "nodebench-ready-probe")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving reads after %v: %w", readyTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// memberEnv drops ETCD_* and NODED_* variables: etcd refuses a setting given
// both as a flag and in the environment, and a stray one would make the two
// sides differ.
func memberEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "NODED_") || strings.HasPrefix(kv, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
