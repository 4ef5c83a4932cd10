package main

// `noded snapshot restore` and `noded snapshot status`: etcdutl's commands
// of the same names, for snapshot files saved from etcd 3.4 to 3.7 or from
// noded (etcdctl snapshot save, or any client of the Maintenance Snapshot
// RPC). restore lays out a noded member's data directory; etcdutl's own
// restore lays out an etcd member's from the same file.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/server"
	"github.com/noded/noded/server/etcddata"
)

// etcdutl's exit codes (cobrautl).
const (
	exitError   = 1
	exitBadArgs = 128
)

func runSnapshot(args []string, stdout, stderr io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return code
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, snapshotUsage)
		return 0
	}
	switch args[0] {
	case "restore":
		return runSnapshotRestore(args[1:], stdout, stderr, fail)
	case "status":
		return runSnapshotStatus(args[1:], stdout, stderr, fail)
	}
	return fail(exitBadArgs, fmt.Errorf("unknown command %q for \"noded snapshot\"", args[0]))
}

const snapshotUsage = `Usage:
  noded snapshot restore <filename> --data-dir {output dir} [options]
  noded snapshot status <filename> [-w simple|table|json|fields]

restore lays out a noded member's data directory from a snapshot file saved
from etcd 3.4 to 3.7 or from noded (etcdctl snapshot save); run it once per
member of the new cluster, with the same --initial-cluster and token. status
prints the file's hash, revision, total keys, total size and version.

restore flags:
      --data-dir string                     Path to the output data directory (default "<name>.etcd")
      --wal-dir string                      Path to the WAL directory (use --data-dir if none given)
      --name string                         Human-readable name for this member (default "default")
      --initial-cluster string              Initial cluster configuration for restore bootstrap (default "default=http://localhost:2380")
      --initial-cluster-token string        Initial cluster token for the cluster during restore bootstrap (default "etcd-cluster")
      --initial-advertise-peer-urls string  List of this member's peer URLs to advertise to the rest of the cluster (default "http://localhost:2380")
      --skip-hash-check                     Ignore snapshot integrity hash value (required if copied from data directory)
      --bump-revision uint                  How much to increase the latest revision after restore
      --mark-compacted                      Mark the latest revision after restore as the point of scheduled compaction (required if --bump-revision > 0, disallowed otherwise)
      --initial-memory-map-size uint        Accepted for etcdutl's command line; noded has no memory-mapped database
`

func runSnapshotRestore(args []string, stdout, stderr io.Writer, fail func(int, error) int) int {
	fs := pflag.NewFlagSet("noded snapshot restore", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dataDir := fs.String("data-dir", "", "")
	walDir := fs.String("wal-dir", "", "")
	name := fs.String("name", server.DefaultName, "")
	initialCluster := fs.String("initial-cluster", "", "")
	token := fs.String("initial-cluster-token", "etcd-cluster", "")
	peerURLs := fs.String("initial-advertise-peer-urls", "http://localhost:2380", "")
	skipHashCheck := fs.Bool("skip-hash-check", false, "")
	bump := fs.Uint64("bump-revision", 0, "")
	markCompacted := fs.Bool("mark-compacted", false, "")
	fs.Uint64("initial-memory-map-size", 0, "")
	if err := fs.Parse(args); err != nil {
		return fail(exitBadArgs, err)
	}
	if fs.NArg() != 1 {
		return fail(exitBadArgs, errors.New("snapshot restore requires exactly one argument"))
	}
	if (*bump == 0 && *markCompacted) || (*bump > 0 && !*markCompacted) {
		return fail(exitBadArgs, errors.New("--mark-compacted required if --revision-bump > 0"))
	}
	if *bump > math.MaxInt64 {
		return fail(exitBadArgs, fmt.Errorf("--bump-revision %d is out of range", *bump))
	}
	if *initialCluster == "" {
		*initialCluster = *name + "=http://localhost:2380"
	}
	if *dataDir == "" {
		*dataDir = *name + ".etcd"
	}
	urls, err := server.ParseURLs(*peerURLs)
	if err != nil {
		return fail(exitError, err)
	}
	cfg := server.Config{Name: *name, InitialCluster: *initialCluster, InitialClusterToken: *token, InitialAdvertisePeerURLs: urls}
	members, self, clusterID, err := cfg.InitialMembers()
	if err != nil {
		return fail(exitError, err)
	}
	absData, err := filepath.Abs(*dataDir)
	if err != nil {
		return fail(exitError, err)
	}
	absWAL := filepath.Join(absData, "member", "wal")
	if *walDir != "" {
		if absWAL, err = filepath.Abs(*walDir); err != nil {
			return fail(exitError, err)
		}
	}
	lg, err := newLogger(logConfig{logger: "zap", level: "info", format: "json", outputs: "stderr"}, stdout, stderr)
	if err != nil {
		return fail(exitError, err)
	}
	defer lg.Sync()
	rel := func(p string) string { return strings.TrimPrefix(filepath.ToSlash(p), "/") }
	_, err = etcddata.Restore(etcddata.RestoreConfig{
		SnapshotPath:  fs.Arg(0),
		SkipHashCheck: *skipHashCheck,
		BumpRevision:  *bump,
		MarkCompacted: *markCompacted,
		Members:       members,
		MemberID:      self,
		ClusterID:     clusterID,
		FS:            disk.NewOSFS("/"),
		DataDir:       rel(absData),
		WALDir:        rel(absWAL),
		SnapDir:       rel(filepath.Join(absData, "member", "snap")),
		Options:       disk.Options{SnapshotsKept: server.DefaultMaxSnapshots},
		Logger:        lg,
	})
	if err != nil {
		return fail(exitError, err)
	}
	return 0
}

func runSnapshotStatus(args []string, stdout, stderr io.Writer, fail func(int, error) int) int {
	fs := pflag.NewFlagSet("noded snapshot status", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	writeOut := fs.StringP("write-out", "w", "simple", "")
	if err := fs.Parse(args); err != nil {
		return fail(exitBadArgs, err)
	}
	if fs.NArg() != 1 {
		return fail(exitBadArgs, errors.New("snapshot status requires exactly one argument"))
	}
	switch *writeOut {
	case "simple", "table", "json", "fields":
	default:
		return fail(exitBadArgs, fmt.Errorf("unsupported output format %q", *writeOut))
	}
	st, err := etcddata.Status(fs.Arg(0))
	if err != nil {
		return fail(exitError, err)
	}
	printStatus(stdout, *writeOut, st)
	return 0
}

// printStatus prints a file's status as etcdutl prints it.
func printStatus(w io.Writer, format string, s etcdformat.Status) {
	row := []string{fmt.Sprintf("%x", s.Hash), fmt.Sprint(s.Revision), fmt.Sprint(s.TotalKey), humanBytes(uint64(s.TotalSize)), s.Version}
	switch format {
	case "json":
		b, _ := json.Marshal(s)
		fmt.Fprintln(w, string(b))
	case "fields":
		fmt.Fprintln(w, `"Hash" :`, s.Hash)
		fmt.Fprintln(w, `"Revision" :`, s.Revision)
		fmt.Fprintln(w, `"Keys" :`, s.TotalKey)
		fmt.Fprintln(w, `"Size" :`, s.TotalSize)
		fmt.Fprintln(w, `"Version" :`, s.Version)
	case "table":
		printTable(w, []string{"HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "VERSION"}, row)
	default:
		fmt.Fprintln(w, strings.Join(row, ", "))
	}
}

// printTable draws one row under a header with box-drawing lines, cells
// right-aligned, as etcdutl's table printer does.
func printTable(w io.Writer, header, row []string) {
	widths := make([]int, len(header))
	for i := range header {
		widths[i] = max(len([]rune(header[i])), len([]rune(row[i])))
	}
	line := func(left, mid, right string) {
		var b strings.Builder
		b.WriteString(left)
		for i, n := range widths {
			if i > 0 {
				b.WriteString(mid)
			}
			b.WriteString(strings.Repeat("─", n+2))
		}
		b.WriteString(right)
		fmt.Fprintln(w, b.String())
	}
	cells := func(vals []string, center bool) {
		var b strings.Builder
		b.WriteString("│")
		for i, v := range vals {
			pad := widths[i] - len([]rune(v))
			left := pad
			if center {
				left = pad / 2
			}
			b.WriteString(" " + strings.Repeat(" ", left) + v + strings.Repeat(" ", pad-left) + " │")
		}
		fmt.Fprintln(w, b.String())
	}
	line("┌", "┬", "┐")
	cells(header, true)
	line("├", "┼", "┤")
	cells(row, false)
	line("└", "┴", "┘")
}

// humanBytes is go-humanize's Bytes (SI units), which etcdutl prints
// sizes with: "25 kB", "2.1 MB".
func humanBytes(s uint64) string {
	if s < 10 {
		return fmt.Sprintf("%d B", s)
	}
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	e := math.Floor(math.Log(float64(s)) / math.Log(1000))
	val := math.Floor(float64(s)/math.Pow(1000, e)*10+0.5) / 10
	f := "%.0f %s"
	if val < 10 {
		f = "%.1f %s"
	}
	return fmt.Sprintf(f, val, units[int(e)])
}
