// Package memberproc starts noded or etcd members as real processes, for the
// end-to-end tests of cmd/noded and for cmd/nodebench: the members' static
// bootstrap flags, their environment, free loopback ports, process groups
// and the probe that waits until a member serves reads. Both users start
// either binary with the same flags, so noded is measured and tested against
// etcd under the same conditions.
//
// memberproc may import the standard library, go.etcd.io/etcd/client/v3,
// google.golang.org/grpc (the probe's dial options) and go.uber.org/zap.
package memberproc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// BootstrapArgs are the flags that start member name as one of a new cluster
// bootstrapped statically: initialCluster is the comma-separated
// name=peerURL list of all members, token sets the cluster apart from any
// other started on the same machine.
func BootstrapArgs(name, dataDir, clientURL, peerURL, initialCluster, token string) []string {
	return []string{
		"--name=" + name,
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + initialCluster,
		"--initial-cluster-token=" + token,
		"--initial-cluster-state=new",
		// etcd's defaults, written out so both binaries surely run the
		// same timings.
		"--heartbeat-interval=100",
		"--election-timeout=1000",
	}
}

// Env is this process's environment without ETCD_*, ETCDCTL_* and NODED_*
// variables: etcd refuses a setting given both as a flag and in the
// environment, and a stray one would change how a member runs.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "NODED_") || strings.HasPrefix(kv, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// SysProcAttr puts a started process in its own process group, so KillGroup
// reaches anything it spawned, and has the kernel kill it when this process
// dies (a panic, a test's -timeout), rather than leave it on the ports.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// KillGroup sends SIGKILL to the process group of cmd, started with
// SysProcAttr.
func KillGroup(cmd *exec.Cmd) error {
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePorts finds n loopback ports free right now and never handed out
// before in this process. Another process may still take one before the
// member binds it; that shows up as a failed start with the bind error in
// the member's log.
func FreePorts(n int) ([]int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
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
			return nil, fmt.Errorf("free port: %w", err)
		}
		listeners = append(listeners, l)
		port := l.Addr().(*net.TCPAddr).Port
		if portsGiven[port] {
			continue
		}
		portsGiven[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// ErrExited is WaitReady's error when the member's process exits first.
var ErrExited = errors.New("process exited")

// readyPollEvery is how often WaitReady tries a read.
const readyPollEvery = 100 * time.Millisecond

// WaitReady polls the member at endpoint with a linearizable read of
// probeKey until one succeeds, which needs a leader and a quorum behind it.
// It gives up after timeout, or with ErrExited as soon as exited (if not
// nil) reports that the member's process is gone. tlsConfig dials an https
// endpoint (nil for http).
func WaitReady(endpoint, probeKey string, timeout time.Duration, exited func() bool, tlsConfig *tls.Config) error {
	return WaitReadyEvery(endpoint, probeKey, timeout, readyPollEvery, exited, tlsConfig)
}

// WaitReadyEvery is WaitReady trying a read every `every`. gRPC's reconnect
// backoff is held at that interval too: with its default (a second after
// a refused connection, growing by 1.6x), a member whose port opened just
// after a refused attempt would be seen ready up to seconds late, which
// would make the probe's time say more about the client's backoff than
// about the member (nodebench times restarts with it).
func WaitReadyEvery(endpoint, probeKey string, timeout, every time.Duration, exited func() bool, tlsConfig *tls.Config) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{endpoint},
		TLS:       tlsConfig,
		Logger:    zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: every, Multiplier: 1, MaxDelay: every},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		return fmt.Errorf("client for %s: %w", endpoint, err)
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	for {
		if exited != nil && exited() {
			return ErrExited
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, probeKey)
		cancel()
		// With auth on, an anonymous read is refused once it has been
		// served (the permission check follows the read index, in etcd
		// and noded alike): the member serves linearizable reads.
		if err == nil || errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrPermissionDenied) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving linearizable reads after %v: %w", timeout, err)
		}
		time.Sleep(every)
	}
}
