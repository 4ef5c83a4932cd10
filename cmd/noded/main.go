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
	"go.uber.org/zap/zapcore"

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
	lg, err := newLogger(o.str("log-level"), o.str("log-format"), o.str("log-outputs"), stdout, stderr)
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
	lg.Info("starting noded", zap.String("etcd-version", server.Version), zap.String("go-version", runtime.Version()),
		zap.String("name", cfg.Name), zap.String("data-dir", cfg.DataDir))
	cfg.Logger = lg
	m, err := server.Start(cfg)
	if err != nil {
		lg.Error("cannot start member", zap.Error(err))
		return 1
	}
	select {
	case sig := <-signals:
		lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
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

// newLogger builds etcd's zap logger: JSON lines (or console) with ts,
// level, caller and msg, to stderr unless --log-outputs says otherwise.
func newLogger(level, format, outputs string, stdout, stderr io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("unknown log level %q", level)
	}
	ec := zapcore.EncoderConfig{
		TimeKey: "ts", LevelKey: "level", NameKey: "logger", CallerKey: "caller", MessageKey: "msg",
		StacktraceKey: "stacktrace", LineEnding: zapcore.DefaultLineEnding,
		EncodeLevel: zapcore.LowercaseLevelEncoder, EncodeTime: zapcore.ISO8601TimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder, EncodeCaller: zapcore.ShortCallerEncoder,
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("unknown log format %q: only json and console are supported", format)
	}
	var sinks []zapcore.WriteSyncer
	var files []string
	for _, out := range strings.Split(outputs, ",") {
		switch out = strings.TrimSpace(out); out {
		case "", "default", "stderr":
			sinks = append(sinks, zapcore.AddSync(stderr))
		case "stdout":
			sinks = append(sinks, zapcore.AddSync(stdout))
		default:
			files = append(files, out)
		}
	}
	if len(files) > 0 {
		sink, _, err := zap.Open(files...)
		if err != nil {
			return nil, fmt.Errorf("--log-outputs: %w", err)
		}
		sinks = append(sinks, sink)
	}
	core := zapcore.NewCore(enc, zapcore.NewMultiWriteSyncer(sinks...), lvl)
	return zap.New(core, zap.AddCaller()), nil
}
