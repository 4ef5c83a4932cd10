package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/natefinch/lumberjack.v2"
)

// logConfig is etcd's logging flags.
type logConfig struct {
	logger         string // only "zap"
	level          string
	format         string // json or console
	outputs        string // default, stderr, stdout or file paths, comma-separated
	rotate         bool   // --enable-log-rotation
	rotationConfig string // --log-rotation-config-json
}

// defaultLogRotationConfig is etcd's --log-rotation-config-json default:
// lumberjack's settings, sizes in megabytes and ages in days.
const defaultLogRotationConfig = `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`

func (o *options) logConfig() logConfig {
	return logConfig{
		logger:         o.str("logger"),
		level:          o.str("log-level"),
		format:         o.str("log-format"),
		outputs:        o.str("log-outputs"),
		rotate:         o.boolean("enable-log-rotation"),
		rotationConfig: o.str("log-rotation-config-json"),
	}
}

// errLogRotationInvalidLogOutput is etcd's error for rotation without
// exactly one file to rotate.
var errLogRotationInvalidLogOutput = errors.New("--log-outputs requires a single file path when --log-rotate-config-json is defined")

// newLogger builds etcd's zap logger: JSON lines (or console) with ts,
// level, caller and msg in etcd's encoding (its timestamp layout, lower-case
// levels, short callers), to stderr unless --log-outputs says otherwise. With
// --enable-log-rotation the one file output is rotated by lumberjack as
// --log-rotation-config-json says. Under systemd etcd's "default" means the
// journal; noded writes to stderr, which systemd sends to the journal too.
func newLogger(c logConfig, stdout, stderr io.Writer) (*zap.Logger, error) {
	if c.logger != "" && c.logger != "zap" {
		return nil, fmt.Errorf("unknown logger option %q", c.logger)
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(c.level)); err != nil {
		return nil, fmt.Errorf("unknown log level %q", c.level)
	}
	ec := logutil.DefaultZapLoggerConfig.EncoderConfig
	var enc zapcore.Encoder
	switch c.format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("unknown log format %q: only json and console are supported", c.format)
	}
	var sinks []zapcore.WriteSyncer
	var files []string
	for _, out := range strings.Split(c.outputs, ",") {
		switch out = strings.TrimSpace(out); out {
		case "", "default", "stderr":
			sinks = append(sinks, zapcore.AddSync(stderr))
		case "stdout":
			sinks = append(sinks, zapcore.AddSync(stdout))
		default:
			files = append(files, out)
		}
	}
	switch {
	case c.rotate:
		// etcd: one file, and not alone with a standard stream only.
		if len(files) != 1 {
			return nil, errLogRotationInvalidLogOutput
		}
		rot := &lumberjack.Logger{}
		if err := json.Unmarshal([]byte(c.rotationConfig), rot); err != nil {
			var syntaxErr *json.SyntaxError
			var typeErr *json.UnmarshalTypeError
			switch {
			case errors.As(err, &syntaxErr):
				return nil, fmt.Errorf("improperly formatted log rotation config: %w", err)
			case errors.As(err, &typeErr):
				return nil, fmt.Errorf("invalid log rotation config: %w", err)
			default:
				return nil, fmt.Errorf("fail to unmarshal log rotation config: %w", err)
			}
		}
		rot.Filename = files[0]
		sinks = append(sinks, zapcore.AddSync(rot))
	case len(files) > 0:
		sink, _, err := zap.Open(files...)
		if err != nil {
			return nil, fmt.Errorf("--log-outputs: %w", err)
		}
		sinks = append(sinks, sink)
	}
	core := zapcore.NewCore(enc, zapcore.NewMultiWriteSyncer(sinks...), lvl)
	return zap.New(core, zap.AddCaller()), nil
}
