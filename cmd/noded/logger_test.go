package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoggerRotationAndErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "noded.log")
	var stdout, stderr bytes.Buffer
	lg, err := newLogger(logConfig{logger: "zap", level: "info", format: "json", outputs: file + ",stderr", rotate: true,
		rotationConfig: `{"maxsize": 1, "maxbackups": 2}`}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	// More than the 1 MB limit: lumberjack keeps the newest in the file and
	// rotates the rest into at most two backups.
	line := strings.Repeat("x", 1000)
	for range 2500 {
		lg.Info(line)
	}
	lg.Sync()
	files, _ := filepath.Glob(filepath.Join(dir, "noded*.log"))
	if len(files) < 2 || len(files) > 3 {
		t.Errorf("rotation left %d files (%v), want the log and 1-2 backups", len(files), files)
	}
	data, err := os.ReadFile(file)
	if err != nil || len(data) == 0 || len(data) > 1<<20 {
		t.Fatalf("current log: %d bytes, %v", len(data), err)
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	var entry map[string]any
	if err := json.Unmarshal([]byte(first), &entry); err != nil {
		t.Fatalf("stderr line %q: %v", first, err)
	}
	// etcd's timestamp layout: microseconds and a zone offset.
	if ts, _ := entry["ts"].(string); len(ts) != len("2006-01-02T15:04:05.000000Z") && len(ts) != len("2006-01-02T15:04:05.000000+0000") {
		t.Errorf("ts %q is not in etcd's layout", ts)
	}

	for _, tc := range []struct {
		c    logConfig
		want string
	}{
		{logConfig{logger: "capnslog", level: "info", format: "json"}, `unknown logger option "capnslog"`},
		{logConfig{logger: "zap", level: "loud", format: "json"}, `unknown log level "loud"`},
		{logConfig{logger: "zap", level: "info", format: "xml"}, `unknown log format "xml"`},
		{logConfig{logger: "zap", level: "info", format: "json", outputs: "stderr", rotate: true, rotationConfig: defaultLogRotationConfig}, errLogRotationInvalidLogOutput.Error()},
		{logConfig{logger: "zap", level: "info", format: "json", outputs: "a.log,b.log", rotate: true, rotationConfig: defaultLogRotationConfig}, errLogRotationInvalidLogOutput.Error()},
		{logConfig{logger: "zap", level: "info", format: "json", outputs: file, rotate: true, rotationConfig: `{"maxsize": }`}, "improperly formatted log rotation config"},
		{logConfig{logger: "zap", level: "info", format: "json", outputs: file, rotate: true, rotationConfig: `{"maxsize": "big"}`}, "invalid log rotation config"},
	} {
		_, err := newLogger(tc.c, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.c, err, tc.want)
		}
	}
}
