package node

// A datadriven harness: testdata/*.txt scripts drive a small cluster of
// members step by step, and the output of each command is compared with
// the text recorded under it. `go test ./node -run TestScripts -rewrite`
// regenerates the expectations; review them as a diff.
//
//	command arg key=value
//	----
//	expected output
//
// Blank lines separate commands; lines starting with # are comments.

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of node's test scripts")

type scriptCmd struct {
	line   int
	text   string // the command line as written
	name   string
	args   []string
	kv     map[string]string
	want   string
	before []string // comment and blank lines before the command, kept on rewrite
}

func parseScript(t *testing.T, path string) []*scriptCmd {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []*scriptCmd
	var pending []string
	sc := bufio.NewScanner(f)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			pending = append(pending, line)
			continue
		}
		c := &scriptCmd{line: lineNo, text: line, kv: map[string]string{}, before: pending}
		pending = nil
		fields := strings.Fields(line)
		c.name = fields[0]
		for _, f := range fields[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				c.kv[k] = v
			} else {
				// A bare word is a positional argument, and also a flag.
				c.args = append(c.args, f)
				c.kv[f] = ""
			}
		}
		if !sc.Scan() || strings.TrimSpace(sc.Text()) != "----" {
			t.Fatalf("%s:%d: %q must be followed by ----", path, lineNo, line)
		}
		lineNo++
		var want []string
		for sc.Scan() {
			lineNo++
			if sc.Text() == "" {
				break
			}
			want = append(want, sc.Text())
		}
		c.want = strings.Join(want, "\n")
		cmds = append(cmds, c)
	}
	return cmds
}

func TestScripts(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			// raft draws election jitter from crypto/rand; a fixed stream makes
			// every script take the same steps on every run.
			cryptotest.SetGlobalRandom(t, 1)
			cmds := parseScript(t, path)
			env := newScriptEnv(t)
			var out strings.Builder
			for _, c := range cmds {
				got := strings.TrimRight(env.run(c), "\n")
				if got == "" {
					got = "ok"
				}
				for _, b := range c.before {
					out.WriteString(b + "\n")
				}
				fmt.Fprintf(&out, "%s\n----\n%s\n\n", c.text, got)
				if !*rewrite && got != c.want {
					t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, c.line, c.text, got, c.want)
				}
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
