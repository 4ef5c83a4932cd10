package noded

// The determinism lint. kvsm, node, sim and linearizability (and the
// simulated twins, disk/sim*.go and net/sim*.go) must give the same output
// for the same input, byte for byte, natively and under WebAssembly. This
// test reads their source with go/ast and go/types and fails on anything
// that would let the scheduler, the wall clock, the operating system or Go's
// map order decide an outcome. testdata/lint holds one planted violation per
// rule; TestDeterminismLintCatchesPlantedViolations proves each is caught.

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// deterministicPackages are linted in full (test files excepted: tests may
// write reports and use testing/cryptotest).
var deterministicPackages = []string{"kvsm", "node", "sim", "linearizability", "server/v2/v2store"}

// twinFilePattern selects the simulated twins that live beside production
// code in packages that are otherwise free to use the operating system.
var twinPackages = []string{"disk", "net"}

const twinFileGlob = "sim*.go"

// forbiddenImports may not appear at all in deterministic code.
var forbiddenImports = map[string]string{
	"sync":        "shared-memory concurrency has no place in a single-threaded core",
	"sync/atomic": "shared-memory concurrency has no place in a single-threaded core",
	"os":          "the operating system is reached only through disk and server",
	"os/exec":     "the operating system is reached only through disk and server",
	"os/signal":   "the operating system is reached only through disk and server",
	"net":         "sockets live in net's production half and in server",
	"net/http":    "sockets live in net's production half and in server",
	"math/rand":   "the global generator is seeded by nobody; use math/rand/v2 with an explicit source",
	"crypto/rand": "the operating system's entropy differs per run; use the run's seeded stream",
	"log":         "log stamps wall-clock time; return errors or write to a given io.Writer",
	"runtime":     "the scheduler's state differs per run",
	"syscall":     "the operating system is reached only through disk and server",
	"unsafe":      "memory layout differs between amd64 and wasm",
}

// allowedFiles lists the only exceptions, each with its reason.
var allowedFiles = map[string]map[string]string{
	"kvsm/store.go": {
		"unsafe": "keyRev holds its value as a pointer and a length (unsafe.Slice and unsafe.SliceData only): " +
			"no layout, size or address reaches a result, and a stored revision shrinks from 64 to 48 bytes",
	},
	"sim/entropy.go": {
		"crypto/rand": "go.etcd.io/raft draws election jitter from crypto/rand.Reader; " +
			"entropy.go points it at the run's seeded stream for the run's duration",
	},
}

// forbiddenTimeFuncs read or wait on the wall clock. The time package
// itself may be imported for time.Duration.
var forbiddenTimeFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "Tick": true, "NewTimer": true, "NewTicker": true,
}

// allowedRandV2 are the math/rand/v2 names that build an explicitly seeded
// generator; every other package-level function draws from the global one.
var allowedRandV2 = map[string]bool{
	"New": true, "NewPCG": true, "NewChaCha8": true, "NewZipf": true,
	"Rand": true, "PCG": true, "ChaCha8": true, "Source": true, "Zipf": true,
}

// mapOrderOK marks a range over a map whose order cannot reach an output
// (for example, collecting keys that are sorted next). The reason must follow.
const mapOrderOK = "noded:map-order-ok"

type lintFinding struct {
	pos  token.Position
	rule string
	msg  string
}

func (f lintFinding) String() string {
	return fmt.Sprintf("%s:%d: [%s] %s", f.pos.Filename, f.pos.Line, f.rule, f.msg)
}

// exportData maps import paths to compiler export data files, found once
// through `go list -export` so that go/types can type-check against real
// dependencies without loading their source.
type exportData struct {
	files map[string]string
}

func loadExportData(t *testing.T, dir string, patterns ...string) *exportData {
	t.Helper()
	args := append([]string{"list", "-e", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v\n%s", err, stderr.String())
	}
	ed := &exportData{files: map[string]string{}}
	for _, line := range strings.Split(string(out), "\n") {
		path, file, ok := strings.Cut(line, "\t")
		if ok && file != "" {
			ed.files[path] = file
		}
	}
	return ed
}

func (ed *exportData) importer(fset *token.FileSet) types.Importer {
	return importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file, ok := ed.files[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %q", path)
		}
		return os.Open(file)
	})
}

// lintPackage type-checks the given files of one package and returns every
// violation in files selected by lintFile. Type-checking needs the whole
// package; only the selected files are judged.
func lintPackage(fset *token.FileSet, imp types.Importer, importPath string, files []*ast.File, lintFile func(name string) bool) ([]lintFinding, error) {
	info := &types.Info{
		Types: map[ast.Expr]types.TypeAndValue{},
		Uses:  map[*ast.Ident]types.Object{},
	}
	conf := types.Config{Importer: imp}
	if _, err := conf.Check(importPath, fset, files, info); err != nil {
		return nil, fmt.Errorf("type-check %s: %w", importPath, err)
	}
	var findings []lintFinding
	for _, f := range files {
		name := fset.Position(f.Pos()).Filename
		if !lintFile(name) {
			continue
		}
		findings = append(findings, lintFileAST(fset, info, f, name)...)
	}
	sort.Slice(findings, func(i, j int) bool {
		if findings[i].pos.Filename != findings[j].pos.Filename {
			return findings[i].pos.Filename < findings[j].pos.Filename
		}
		return findings[i].pos.Line < findings[j].pos.Line
	})
	return findings, nil
}

func lintFileAST(fset *token.FileSet, info *types.Info, f *ast.File, name string) []lintFinding {
	var findings []lintFinding
	add := func(n ast.Node, rule, format string, args ...any) {
		findings = append(findings, lintFinding{pos: fset.Position(n.Pos()), rule: rule, msg: fmt.Sprintf(format, args...)})
	}
	allowed := allowedFiles[relSlash(name)]

	for _, imp := range f.Imports {
		path := strings.Trim(imp.Path.Value, `"`)
		if why, bad := forbiddenImports[path]; bad {
			if _, ok := allowed[path]; !ok {
				add(imp, "import", "imports %s: %s", path, why)
			}
		}
	}

	// Lines carrying the map-order marker, so a range on the next line may pass.
	markedLines := map[int]bool{}
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			if strings.Contains(c.Text, mapOrderOK) {
				rest := strings.TrimSpace(c.Text[strings.Index(c.Text, mapOrderOK)+len(mapOrderOK):])
				if rest == "" {
					add(c, "map-order", "%s needs a reason after it", mapOrderOK)
					continue
				}
				markedLines[fset.Position(c.Pos()).Line] = true
			}
		}
	}

	// Calls whose map-iterator argument is sorted at once are fine.
	sortedArg := map[ast.Expr]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		if fn := calledFunc(info, call); fn != nil && fn.Pkg() != nil && fn.Pkg().Path() == "slices" &&
			(fn.Name() == "Sorted" || fn.Name() == "SortedFunc") && len(call.Args) > 0 {
			sortedArg[call.Args[0]] = true
		}
		return true
	})

	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			add(n, "goroutine", "go statement: goroutines live in server and net's production half")
		case *ast.SelectStmt:
			add(n, "select", "select statement: the scheduler would choose the branch")
		case *ast.SendStmt:
			add(n, "channel", "channel send")
		case *ast.UnaryExpr:
			if n.Op == token.ARROW {
				add(n, "channel", "channel receive")
			}
		case *ast.ChanType:
			add(n, "channel", "channel type")
		case *ast.RangeStmt:
			if tv, ok := info.Types[n.X]; ok {
				if _, isMap := tv.Type.Underlying().(*types.Map); isMap {
					line := fset.Position(n.Pos()).Line
					if !markedLines[line] && !markedLines[line-1] {
						add(n, "map-order", "range over a map: iteration order is random; sort the keys, "+
							"use a btree, or mark the loop //%s <reason> if order cannot reach an output", mapOrderOK)
					}
				}
			}
		case *ast.CallExpr:
			if sortedArg[n] {
				return true
			}
			if fn := calledFunc(info, n); fn != nil && fn.Pkg() != nil && fn.Pkg().Path() == "maps" &&
				(fn.Name() == "Keys" || fn.Name() == "Values" || fn.Name() == "All") {
				add(n, "map-order", "maps.%s yields in random order; wrap it in slices.Sorted", fn.Name())
			}
		case *ast.SelectorExpr:
			obj := info.Uses[n.Sel]
			if obj == nil || obj.Pkg() == nil {
				return true
			}
			if obj.Pkg().Scope().Lookup(obj.Name()) != obj {
				return true // a method or field, not a package-level name
			}
			switch obj.Pkg().Path() {
			case "time":
				if forbiddenTimeFuncs[obj.Name()] {
					add(n, "wall-clock", "time.%s reads or waits on the wall clock; time is ticks handed in", obj.Name())
				}
			case "math/rand/v2":
				if !allowedRandV2[obj.Name()] {
					add(n, "global-rand", "rand.%s draws from the global generator; draw from the run's seeded *rand.Rand", obj.Name())
				}
			}
		}
		return true
	})
	return findings
}

func calledFunc(info *types.Info, call *ast.CallExpr) *types.Func {
	var id *ast.Ident
	switch fun := call.Fun.(type) {
	case *ast.Ident:
		id = fun
	case *ast.SelectorExpr:
		id = fun.Sel
	case *ast.IndexExpr: // generic instantiation
		if sel, ok := fun.X.(*ast.SelectorExpr); ok {
			id = sel.Sel
		}
	}
	if id == nil {
		return nil
	}
	fn, _ := info.Uses[id].(*types.Func)
	return fn
}

var repoRoot string

func relSlash(name string) string {
	if rel, err := filepath.Rel(repoRoot, name); err == nil {
		return filepath.ToSlash(rel)
	}
	return filepath.ToSlash(name)
}

// parseDir parses the non-test Go files of one directory that the build
// would compile for the host (build constraints honoured: a twin package
// such as disk has per-platform files beside its twin).
func parseDir(fset *token.FileSet, dir string) ([]*ast.File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		match, err := build.Default.MatchFile(dir, name)
		if err != nil {
			return nil, err
		}
		if !match {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func modulePath(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "module "); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}

func TestDeterminismLint(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the deterministic packages against their dependencies")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repoRoot = wd
	mod := modulePath(t)
	dirs := append(append([]string{}, deterministicPackages...), twinPackages...)
	var patterns []string
	for _, d := range dirs {
		patterns = append(patterns, "./"+d)
	}
	ed := loadExportData(t, repoRoot, patterns...)
	fset := token.NewFileSet()
	imp := ed.importer(fset)

	var all []lintFinding
	for _, d := range dirs {
		files, err := parseDir(fset, filepath.Join(repoRoot, d))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			continue
		}
		twin := contains(twinPackages, d)
		lintFile := func(name string) bool {
			if !twin {
				return true
			}
			ok, _ := filepath.Match(twinFileGlob, filepath.Base(name))
			return ok
		}
		findings, err := lintPackage(fset, imp, mod+"/"+d, files, lintFile)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, findings...)
	}
	for _, f := range all {
		t.Errorf("%s", f)
	}
}

// TestDeterminismLintCatchesPlantedViolations proves the lint can fail: each
// file in testdata/lint plants violations and names, in `// want: rule`
// comments (`// want+1: rule` for the next line), the rule each line must
// trigger.
func TestDeterminismLintCatchesPlantedViolations(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks planted files against the standard library")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repoRoot = wd
	dir := filepath.Join(repoRoot, "testdata", "lint")
	fset := token.NewFileSet()
	files, err := parseDir(fset, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no planted files in testdata/lint")
	}
	// The planted files import only the standard library.
	stdImports := map[string]bool{}
	for _, f := range files {
		for _, imp := range f.Imports {
			stdImports[strings.Trim(imp.Path.Value, `"`)] = true
		}
	}
	var std []string
	for p := range stdImports { //noded:map-order-ok the list is only handed to go list
		std = append(std, p)
	}
	ed := loadExportData(t, repoRoot, std...)
	findings, err := lintPackage(fset, ed.importer(fset), "planted", files, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}

	type at struct {
		file string
		line int
	}
	got := map[at][]string{}
	for _, f := range findings {
		k := at{filepath.Base(f.pos.Filename), f.pos.Line}
		got[k] = append(got[k], f.rule)
	}
	want := map[at][]string{}
	for _, f := range files {
		for _, cg := range f.Comments {
			for _, c := range cg.List {
				rule, ok := strings.CutPrefix(c.Text, "// want: ")
				offset := 0
				if !ok {
					rule, ok = strings.CutPrefix(c.Text, "// want+1: ")
					offset = 1
				}
				if ok {
					p := fset.Position(c.Pos())
					k := at{filepath.Base(p.Filename), p.Line + offset}
					want[k] = append(want[k], strings.Fields(rule)...)
				}
			}
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d planted lines; every rule needs one", len(want))
	}
	rulesSeen := map[string]bool{}
	for k, rules := range want { //noded:map-order-ok each entry is checked on its own
		sort.Strings(rules)
		g := append([]string(nil), got[k]...)
		sort.Strings(g)
		if strings.Join(g, ",") != strings.Join(rules, ",") {
			t.Errorf("%s:%d: lint reported %v, planted %v", k.file, k.line, g, rules)
		}
		for _, r := range rules {
			rulesSeen[r] = true
		}
	}
	for k, rules := range got { //noded:map-order-ok each entry is checked on its own
		if _, planted := want[k]; !planted {
			t.Errorf("%s:%d: lint reported %v on a line that plants nothing", k.file, k.line, rules)
		}
	}
	for _, rule := range []string{"import", "goroutine", "select", "channel", "map-order", "wall-clock", "global-rand"} {
		if !rulesSeen[rule] {
			t.Errorf("rule %q has no planted violation", rule)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// allowedNodedImports is the layering of DESIGN.md: which noded packages each
// package may import. A checker stays outside the code it checks, kvsm
// stands alone, and only server and cmd see everything.
var allowedNodedImports = map[string][]string{
	"kvsm": {},
	// internal/raftwire is the log entry decoder disk and net share; it
	// imports no noded package.
	"disk":            {"internal/raftwire"},
	"net":             {"internal/raftwire"},
	"internal":        {},
	"linearizability": {},
	"node":            {"kvsm"},
	// server/v2/v2store is the v2 keys API's deterministic core, which the
	// simulator's v2 workload drives; nothing else under server is.
	"sim":  {"node", "kvsm", "disk", "net", "linearizability", "server/v2/v2store", "internal/raftwire"},
	"fuzz": {"kvsm", "disk", "net", "node", "internal/raftwire"},
}

func TestLayering(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repoRoot = wd
	mod := modulePath(t)
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}", "./...")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "\t")
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, mod), "/")
		top, _, _ := strings.Cut(rel, "/")
		allowed, ruled := allowedNodedImports[top]
		if !ruled {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if !strings.HasPrefix(imp, mod+"/") {
				continue
			}
			impRel := strings.TrimPrefix(imp, mod+"/")
			impTop, _, _ := strings.Cut(impRel, "/")
			if impTop != top && !contains(allowed, impTop) && !contains(allowed, impRel) {
				t.Errorf("%s imports %s; %s may import only %v", rel, imp, top, allowed)
			}
		}
	}
}
