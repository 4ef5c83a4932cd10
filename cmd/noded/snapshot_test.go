package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fixturePath(name string) string {
	return filepath.Join("..", "..", "disk", "etcdformat", "testdata", name)
}

// `noded snapshot status` prints what etcdutl prints of the same file
// (etcdutl's own output for each fixture is kept beside it).
func TestSnapshotStatusPrintsWhatEtcdutlPrints(t *testing.T) {
	for _, v := range []string{"3.4", "3.7"} {
		want, err := os.ReadFile(fixturePath("etcd-" + v + ".status.json"))
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if code := run([]string{"snapshot", "status", fixturePath("etcd-" + v + ".snapshot"), "-w", "json"}, nil, &out, &errOut, nil); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		if strings.TrimSpace(out.String()) != strings.TrimSpace(string(want)) {
			t.Fatalf("%s: noded prints %s, etcdutl %s", v, out.String(), want)
		}
	}
	var out bytes.Buffer
	run([]string{"snapshot", "status", fixturePath("etcd-3.7.snapshot"), "-w", "table"}, nil, &out, &out, nil)
	table := "┌──────────┬──────────┬────────────┬────────────┬─────────┐\n" +
		"│   HASH   │ REVISION │ TOTAL KEYS │ TOTAL SIZE │ VERSION │\n" +
		"├──────────┼──────────┼────────────┼────────────┼─────────┤\n" +
		"│ f19118ef │       29 │          5 │      20 kB │         │\n" +
		"└──────────┴──────────┴────────────┴────────────┴─────────┘\n"
	if out.String() != table {
		t.Fatalf("table:\n%s\nwant:\n%s", out.String(), table)
	}
	out.Reset()
	run([]string{"snapshot", "status", fixturePath("etcd-3.7.snapshot")}, nil, &out, &out, nil)
	if out.String() != "f19118ef, 29, 5, 20 kB, \n" {
		t.Fatalf("simple: %q", out.String())
	}
}

func TestSnapshotCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"snapshot", "restore"}, 128, "Error: snapshot restore requires exactly one argument"},
		{[]string{"snapshot", "restore", "a", "b"}, 128, "Error: snapshot restore requires exactly one argument"},
		{[]string{"snapshot", "restore", "a", "--bump-revision=5"}, 128, "Error: --mark-compacted required if --revision-bump > 0"},
		{[]string{"snapshot", "restore", "a", "--mark-compacted"}, 128, "Error: --mark-compacted required if --revision-bump > 0"},
		{[]string{"snapshot", "restore", "a", "--name=x", "--initial-cluster=y=http://127.0.0.1:1"}, 1, `Error: couldn't find local name "x" in the initial cluster configuration`},
		{[]string{"snapshot", "status"}, 128, "Error: snapshot status requires exactly one argument"},
		{[]string{"snapshot", "status", "a", "-w", "yaml"}, 128, `Error: unsupported output format "yaml"`},
		{[]string{"snapshot", "frobnicate"}, 128, `Error: unknown command "frobnicate" for "noded snapshot"`},
		{[]string{"snapshot", "status", "/nonexistent"}, 1, "Error: open /nonexistent: no such file or directory"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, nil, &out, &errOut, nil)
		if code != tc.code || strings.TrimSpace(errOut.String()) != tc.want {
			t.Errorf("%v: exit %d, %q; want exit %d, %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
	}
}
