package main

// Starting a side: members as real processes on free loopback ports with
// etcd's static bootstrap flags, each in its own process group so that
// stopping the benchmark (or its dying) takes them all down.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/noded/noded/cmd/internal/memberproc"
)

// readyTimeout bounds how long a started cluster may take to serve a
// linearizable read through every member.
const readyTimeout = 90 * time.Second

type cluster struct {
	binary       string
	endpoints    []string
	tlsEndpoints []string // https client URLs, when started with TLS
	peerURLs     []string
	args         [][]string // each member's flags, for a restart
	procs        []*exec.Cmd
	logPaths     []string
}

// startCluster starts members of binary under dir, all with the same flags
// as the other side, and waits until every member serves reads. With
// certs, each member also serves an https client URL.
func startCluster(label, binary, dir string, members int, certs *benchTLS) (*cluster, error) {
	return startClusterWith(label, binary, dir, members, certs, nil)
}

// startClusterWith is startCluster with extraArgs added to every member's
// flags.
func startClusterWith(label, binary, dir string, members int, certs *benchTLS, extraArgs []string) (*cluster, error) {
	c := &cluster{binary: binary}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := memberproc.FreePorts(3 * members)
	if err != nil {
		return nil, err
	}
	var initial []string
	var peers []string
	for i := 0; i < members; i++ {
		c.endpoints = append(c.endpoints, fmt.Sprintf("http://127.0.0.1:%d", ports[3*i]))
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+1]))
		if certs != nil {
			c.tlsEndpoints = append(c.tlsEndpoints, fmt.Sprintf("https://127.0.0.1:%d", ports[3*i+2]))
		}
		initial = append(initial, fmt.Sprintf("%s-%d=%s", label, i, peers[i]))
	}
	for i := 0; i < members; i++ {
		name := fmt.Sprintf("%s-%d", label, i)
		clientURLs := c.endpoints[i]
		if certs != nil {
			clientURLs += "," + c.tlsEndpoints[i]
		}
		args := memberproc.BootstrapArgs(name, filepath.Join(dir, name+".etcd"), clientURLs, peers[i],
			strings.Join(initial, ","), "nodebench-"+label)
		if certs != nil {
			args = append(args, certs.memberFlags()...)
		}
		args = append(args, extraArgs...)
		c.args = append(c.args, args)
		c.logPaths = append(c.logPaths, filepath.Join(dir, name+".log"))
		c.procs = append(c.procs, nil)
		if err := c.startMember(i); err != nil {
			c.stop()
			return nil, err
		}
	}
	c.peerURLs = peers
	for i, ep := range c.endpoints {
		if err := memberproc.WaitReady(ep, "nodebench-ready-probe", readyTimeout, nil, nil); err != nil {
			c.stop()
			return nil, fmt.Errorf("%s member %d (log %s): %w", label, i, c.logPaths[i], err)
		}
	}
	return c, nil
}

// startMember starts member i's process, its output appended to its log.
func (c *cluster) startMember(i int) error {
	logFile, err := os.OpenFile(c.logPaths[i], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(c.binary, c.args[i]...)
	cmd.Env = memberproc.Env()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = memberproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.binary, err)
	}
	c.procs[i] = cmd
	return nil
}

// kill kills member i's process group and reaps it.
func (c *cluster) kill(i int) {
	if cmd := c.procs[i]; cmd != nil {
		_ = memberproc.KillGroup(cmd)
		_ = cmd.Wait()
		c.procs[i] = nil
	}
}

// stop kills every member.
func (c *cluster) stop() {
	for i := range c.procs {
		c.kill(i)
	}
}
