// Command noded runs one member of a noded cluster. It takes etcd's
// member and clustering flags (and their ETCD_* environment variables, or
// a YAML --config-file), so that an etcd deployment runs noded by changing
// only the binary's name:
//
//	noded                                   # one member on localhost:2379, data in ./default.etcd
//	noded --name infra1 --initial-cluster infra1=http://10.0.0.1:2380,... \
//	      --listen-client-urls http://10.0.0.1:2379 --advertise-client-urls http://10.0.0.1:2379 ...
//
// SIGTERM and SIGINT stop the member cleanly: client listeners close, the
// write in flight reaches the disk, peers are told.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/noded/noded/server"
)

func main() {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, signals))
}

// run is main with its inputs and outputs handed in; it returns the exit
// code: 0 after a clean stop, 1 for a configuration or runtime error, 2
// for a command line that does not parse (as etcd).
func run(args, environ []string, stdout, stderr io.Writer, signals <-chan os.Signal) int {
	if len(args) > 0 && args[0] == "gateway" {
		return runGateway(args[1:], stdout, stderr, signals)
	}
	if len(args) > 0 && args[0] == "grpc-proxy" {
		return runGRPCProxy(args[1:], stdout, stderr, signals)
	}
	if len(args) > 0 && args[0] == "snapshot" {
		return runSnapshot(args[1:], stdout, stderr) // snapshot.go
	}
	o := newOptions()
	var warnings []string
	err := o.parse(args, environ, func(w string) { warnings = append(warnings, w) })
	if errors.Is(err, pflag.ErrHelp) || (err == nil && *o.help) {
		usage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "noded: %v\n", err)
		if strings.Contains(err.Error(), "flag") && !strings.Contains(err.Error(), "conflicting") {
			fmt.Fprintln(stderr, "Run 'noded --help' for usage.")
			return 2
		}
		return 1
	}
	if *o.version {
		fmt.Fprintf(stdout, "etcd Version: %s\nGit SHA: noded\nGo Version: %s\nGo OS/Arch: %s/%s\n", server.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	if path := *o.configFile; path != "" {
		if err := o.loadConfigFile(path); err != nil {
			fmt.Fprintf(stderr, "noded: %v\n", err)
			return 1
		}
	}
	logCfg := o.logConfig()
	if o.boolean("debug") && !o.changed("log-level") {
		logCfg.level = "debug" // etcd 3.4's -debug
	}
	lg, err := newLogger(logCfg, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "noded: %v\n", err)
		return 1
	}
	defer lg.Sync()
	for _, w := range warnings {
		lg.Warn(w)
	}
	cfg, notes, err := o.toConfig()
	if err != nil {
		lg.Error(fmt.Sprintf("error verifying flags, %v. See 'noded --help'.", err))
		return 1
	}
	for _, n := range notes {
		lg.Warn(n)
	}
	if err := o.checkBootstrapFlags(); err != nil {
		lg.Error(fmt.Sprintf("error verifying flags, %v. See 'noded --help'.", err))
		return 1
	}
	if o.str("proxy") != "off" {
		return runProxyMode(o, cfg, nil, lg, signals)
	}
	// Discovery runs before the member starts; a signal ends it.
	dctx, dcancel := context.WithCancel(context.Background())
	caught := make(chan os.Signal, 1)
	discovered := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case sig := <-signals:
			caught <- sig
			dcancel()
		case <-discovered:
		}
	}()
	plan, err := o.discover(dctx, &cfg, lg)
	close(discovered)
	<-watcherDone
	dcancel()
	select {
	case sig := <-caught:
		lg.Info("received signal during discovery; exiting", zap.String("signal", sig.String()))
		return 0
	default:
	}
	if err != nil {
		lg.Error("discovery failed", zap.Error(err))
		return 1
	}
	if plan.proxyPeers != nil {
		return runFallbackProxy(o, cfg, plan, lg, signals)
	}
	lg.Info("starting noded", zap.String("etcd-version", server.Version), zap.String("go-version", runtime.Version()),
		zap.String("name", cfg.Name), zap.String("data-dir", cfg.DataDir))
	cfg.Logger = lg
	cfg.IdleMemoryRelease = idleMemoryRelease
	cfg.PauseGCWhileLoading = true
	setMemoryLimit(lg, cfg.QuotaBackendBytes)
	m, err := server.Start(cfg)
	if err != nil {
		lg.Error("cannot start member", zap.Error(err))
		return 1
	}
	stopNotify := make(chan struct{})
	defer close(stopNotify)
	go notifySystemd(lg, m, stopNotify)
	select {
	case sig := <-signals:
		lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
		notifyStopping()
		m.Stop()
		lg.Info("stopped member cleanly")
		return 0
	case <-m.Done():
		err := m.Err()
		if errors.Is(err, server.ErrRemoved) {
			lg.Warn("stopped: " + err.Error())
			return 0
		}
		if err != nil {
			lg.Error("member stopped", zap.Error(err))
			return 1
		}
		return 0
	}
}
