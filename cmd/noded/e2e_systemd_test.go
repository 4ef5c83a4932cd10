package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/cmd/internal/memberproc"
)

// TestSystemdNotify starts a member as systemd would with Type=notify and
// a watchdog: a socket at $NOTIFY_SOCKET, $WATCHDOG_USEC set. READY=1 comes
// only once a client can read, WATCHDOG=1 follows, and SIGTERM brings
// STOPPING=1 before the process exits.
func TestSystemdNotify(t *testing.T) {
	requireE2E(t)
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	states := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				close(states)
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line != "" {
					states <- line
				}
			}
		}
	}()

	ports := freePorts(t, 2)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	args := memberproc.BootstrapArgs("n0", filepath.Join(dir, "n0.etcd"), clientURL, peerURL, "n0="+peerURL, "notify-"+strconv.Itoa(ports[0]))
	cmd := exec.Command(e2eBinary, args...)
	const watchdog = 2 * time.Second
	cmd.Env = append(memberproc.Env(), "NOTIFY_SOCKET="+sockPath, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()))
	log := &logBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = memberproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		memberproc.KillGroup(cmd)
		if t.Failed() {
			t.Logf("member log:\n%s", log.tail(logTailPrintBytes))
		}
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	next := func(what string) string {
		t.Helper()
		select {
		case s, ok := <-states:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			return s
		case <-time.After(startTimeout):
			t.Fatalf("no %s on $NOTIFY_SOCKET", what)
		}
		return ""
	}
	if got := next("READY=1"); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// At READY=1 the member already serves a linearizable read.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = cli.Get(ctx, "probe")
	cancel()
	if err != nil {
		t.Fatalf("READY=1 sent, but a read fails: %v", err)
	}
	if got := next("WATCHDOG=1"); got != "WATCHDOG=1" {
		t.Fatalf("after READY=1: %q, want WATCHDOG=1", got)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		got := next("STOPPING=1")
		if got == "STOPPING=1" {
			break
		}
		if got != "WATCHDOG=1" {
			t.Fatalf("after SIGTERM: %q, want STOPPING=1", got)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(startTimeout):
		t.Fatal("no exit after SIGTERM")
	}
}

// The unit file passes systemd's own check (with ExecStart pointed at a
// built binary, since /usr/bin/noded is not installed here).
func TestSystemdUnitVerifies(t *testing.T) {
	requireE2E(t)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("dist/usr/lib/systemd/system/noded.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nType=notify\n") || !strings.Contains(string(unit), "\nEnvironmentFile=-/etc/noded/noded.conf\n") {
		t.Fatal("the unit is not Type=notify with /etc/noded/noded.conf")
	}
	dir := t.TempDir()
	local := strings.Replace(string(unit), "ExecStart=/usr/bin/noded", "ExecStart="+e2eBinary, 1)
	path := filepath.Join(dir, "noded.service")
	if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// envFileLines reads a systemd EnvironmentFile: KEY=VALUE lines, values
// optionally double-quoted with backslash escapes; commented reports
// "#KEY=VALUE" lines (the documented defaults) instead of the active ones.
func envFileLines(t *testing.T, path string, commented bool) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			if !commented || !strings.HasPrefix(rest, "ETCD_") {
				continue
			}
			line = rest
		} else if commented || line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		if strings.HasPrefix(v, `"`) {
			uq, err := strconv.Unquote(v)
			if err != nil {
				t.Fatalf("%s: %q: %v", path, line, err)
			}
			v = uq
		}
		out = append(out, k+"="+v)
	}
	return out
}

// The environment file loads through the flag loader as systemd hands it
// over: no unknown variable, a valid configuration; and every setting shown
// commented out is a flag's name with its default value.
func TestSystemdEnvironmentFile(t *testing.T) {
	const path = "dist/etc/noded/noded.conf"
	env := append([]string{"ETCD_DATA_DIR=/var/lib/noded/default.etcd"}, envFileLines(t, path, false)...)
	o := newOptions()
	var warnings []string
	if err := o.parse(nil, env, func(w string) { warnings = append(warnings, w) }); err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	cfg, _, err := o.toConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "default" || cfg.DataDir != "/var/lib/noded/default.etcd" {
		t.Errorf("config from the environment file: name %q data dir %q", cfg.Name, cfg.DataDir)
	}
	defaults := envFileLines(t, path, true)
	if len(defaults) < 20 {
		t.Fatalf("%d documented settings; the file is not what this test expects", len(defaults))
	}
	for _, kv := range defaults {
		k, v, _ := strings.Cut(kv, "=")
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "ETCD_"), "_", "-"))
		f := newOptions().fs.Lookup(name)
		if f == nil {
			t.Errorf("%s: %s is no flag's variable", path, k)
			continue
		}
		if f.DefValue != v {
			t.Errorf("%s: %s shown as %q, but the default of --%s is %q", path, k, v, name, f.DefValue)
		}
	}
}
