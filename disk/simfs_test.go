package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing"
)

func readAllT(t *testing.T, fsys FS, name string) []byte {
	t.Helper()
	b, err := readFile(fsys, name, 1<<30)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

func writeT(t *testing.T, f File, s string) {
	t.Helper()
	if _, err := f.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// TestSimFSCrashKeepsOnlyDurable: synced bytes and SyncDir'd entries survive
// CrashLoseUnsynced; unsynced bytes and entries do not.
func TestSimFSCrashKeepsOnlyDurable(t *testing.T) {
	s := NewSimFS()
	must(t, s.MkdirAll("d"))
	must(t, s.SyncDir("."))
	f, err := s.Create("d/a")
	must(t, err)
	writeT(t, f, "synced")
	must(t, f.Sync())
	must(t, s.SyncDir("d"))
	writeT(t, f, "+unsynced")
	g, err := s.Create("d/b") // entry never synced
	must(t, err)
	writeT(t, g, "b")
	must(t, g.Sync())
	if got := s.DurableSize("d/a"); got != 6 {
		t.Fatalf("DurableSize(d/a) = %d", got)
	}
	s.Crash(nil, CrashLoseUnsynced)
	if got := string(readAllT(t, s, "d/a")); got != "synced" {
		t.Fatalf("d/a after crash = %q", got)
	}
	if _, err := s.Stat("d/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("d/b survived without SyncDir: %v", err)
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("a handle from before the crash still writes")
	}
}

func TestSimFSUnsyncedDirectoryLosesChildren(t *testing.T) {
	s := NewSimFS()
	must(t, s.MkdirAll("x/y"))
	f, err := s.Create("x/y/f")
	must(t, err)
	must(t, f.Sync())
	must(t, s.SyncDir("x/y"))
	must(t, s.SyncDir("x")) // x/y's entry durable, but x's own entry is not
	s.Crash(newRand(1), CrashLoseUnsynced)
	if names, err := s.List("."); err != nil || len(names) != 0 {
		t.Fatalf("root after crash: %v %v", names, err)
	}
}

// TestSimFSTornAndZeroTail: the torn modes keep a prefix of unsynced
// writes; zero-tail pads to the pre-crash size with zeros. Same seed, same
// result.
func TestSimFSTornAndZeroTail(t *testing.T) {
	run := func(seed uint64, mode CrashMode) []byte {
		s := NewSimFS()
		f, err := s.Create("f")
		must(t, err)
		must(t, f.Sync())
		must(t, s.SyncDir("."))
		writeT(t, f, "durable|")
		must(t, f.Sync())
		writeT(t, f, "0123456789abcdef")
		s.Crash(newRand(seed), mode)
		return readAllT(t, s, "f")
	}
	sawPartial := false
	for seed := uint64(0); seed < 50; seed++ {
		torn := run(seed, CrashTorn)
		if !bytes.HasPrefix(torn, []byte("durable|")) || !bytes.HasPrefix([]byte("durable|0123456789abcdef"), torn) {
			t.Fatalf("seed %d: torn result %q is not a prefix of what was written", seed, torn)
		}
		if len(torn) > 8 && len(torn) < 24 {
			sawPartial = true
		}
		zero := run(seed, CrashZeroTail)
		if len(zero) != 24 || !bytes.HasPrefix(zero, []byte("durable|")) {
			t.Fatalf("seed %d: zero-tail result %q", seed, zero)
		}
		kept := bytes.TrimRight(zero[8:], "\x00")
		if !bytes.HasPrefix([]byte("0123456789abcdef"), kept) {
			t.Fatalf("seed %d: zero-tail kept %q", seed, kept)
		}
		if !bytes.Equal(torn, run(seed, CrashTorn)) {
			t.Fatalf("seed %d: same seed, different crash", seed)
		}
	}
	if !sawPartial {
		t.Fatal("50 seeds never tore a write mid-way")
	}
}

func TestSimFSFailNextSync(t *testing.T) {
	s := NewSimFS()
	f, err := s.Create("f")
	must(t, err)
	must(t, s.SyncDir("."))
	writeT(t, f, "abc")
	eio := errors.New("EIO")
	s.FailNextSync(eio)
	if err := f.Sync(); !errors.Is(err, eio) {
		t.Fatalf("Sync = %v, want the injected error", err)
	}
	if got := s.DurableSize("f"); got != 0 {
		t.Fatalf("a failed Sync made %d bytes durable", got)
	}
	must(t, f.Sync()) // only the next one fails
	s.FailNextSync(eio)
	if err := s.SyncDir("."); !errors.Is(err, eio) {
		t.Fatalf("SyncDir = %v", err)
	}
}

func TestSimFSFlipBitEverywhere(t *testing.T) {
	s := NewSimFS()
	f, err := s.Create("f")
	must(t, err)
	must(t, s.SyncDir("."))
	writeT(t, f, "AAAA")
	must(t, f.Sync())
	writeT(t, f, "BBBB")
	must(t, s.FlipBit("f", 8*1)) // synced region
	must(t, s.FlipBit("f", 8*5)) // unsynced region
	if got := string(readAllT(t, s, "f")); got != "A@AABCBB" {
		t.Fatalf("after flips: %q", got)
	}
	s.Crash(newRand(3), CrashTorn)
	got := string(readAllT(t, s, "f"))
	if !bytes.HasPrefix([]byte("A@AABCBB"), []byte(got)) || len(got) < 4 {
		t.Fatalf("after crash: %q (the flips must survive in every version)", got)
	}
	if err := s.FlipBit("f", 8*100); err == nil {
		t.Fatal("FlipBit past the end succeeded")
	}
	name, bit, ok := s.FlipRandomBit(newRand(4), func(n string) bool { return n == "f" })
	if !ok || name != "f" || bit < 0 || bit >= int64(len(got))*8 {
		t.Fatalf("FlipRandomBit = %q %d %v", name, bit, ok)
	}
	if _, _, ok := s.FlipRandomBit(newRand(4), func(string) bool { return false }); ok {
		t.Fatal("FlipRandomBit found a file the filter refused")
	}
}

func TestSimFSMisdirectedWrite(t *testing.T) {
	s := NewSimFS()
	f, err := s.Create("f")
	must(t, err)
	writeT(t, f, "aaaa")
	s.MisdirectNextWrite(-2)
	writeT(t, f, "bb")
	writeT(t, f, "cc")
	// "bb" landed at 2 instead of 4; 4..6 was aimed at and reads zeros.
	if got := string(readAllT(t, s, "f")); got != "aabb\x00\x00cc" {
		t.Fatalf("after misdirected write: %q", got)
	}
}

func TestSimFSHaltAfterOps(t *testing.T) {
	s := NewSimFS()
	f, err := s.Create("f") // op 1
	must(t, err)
	s.HaltAfterOps(1)
	writeT(t, f, "x") // op 2: allowed
	if _, err := f.Write([]byte("y")); !errors.Is(err, ErrHalted) {
		t.Fatalf("write after halt: %v", err)
	}
	if _, err := s.List("."); !errors.Is(err, ErrHalted) {
		t.Fatalf("list after halt: %v", err)
	}
	if !s.Halted() || s.OpsCount() != 2 {
		t.Fatalf("halted=%v ops=%d", s.Halted(), s.OpsCount())
	}
	s.Crash(nil, CrashLoseUnsynced)
	if _, err := s.List("."); err != nil {
		t.Fatalf("list after crash: %v", err)
	}
}

// TestFSConformance runs one script of operations on OSFS and SimFS and
// compares what each reads back, so the twin does not drift from the real
// thing in the behaviour Storage relies on.
func TestFSConformance(t *testing.T) {
	script := func(fsys FS) string {
		var out bytes.Buffer
		note := func(format string, err error) {
			if err != nil {
				out.WriteString(format + ": error")
				switch {
				case errors.Is(err, fs.ErrNotExist):
					out.WriteString(" not-exist")
				case errors.Is(err, fs.ErrInvalid):
					out.WriteString(" invalid")
				}
				out.WriteString("\n")
			}
		}
		note("mkdir", fsys.MkdirAll("a/b"))
		f, err := fsys.Create("a/b/f")
		note("create", err)
		f.Write([]byte("hello world"))
		note("truncate", f.Truncate(5))
		f.Write([]byte("!"))
		note("sync", f.Sync())
		note("close", f.Close())
		g, err := fsys.OpenAppend("a/b/f")
		note("openappend", err)
		g.Write([]byte("?"))
		buf := make([]byte, 4)
		n, err := g.ReadAt(buf, 3)
		out.WriteString(string(buf[:n]))
		if err == io.EOF {
			out.WriteString(" EOF")
		}
		out.WriteString("\n")
		g.Close()
		note("rename", fsys.Rename("a/b/f", "a/b/g"))
		note("rename across", fsys.Rename("a/b/g", "a/g"))
		note("syncdir", fsys.SyncDir("a/b"))
		names, err := fsys.List("a/b")
		note("list", err)
		out.WriteString(bytes.NewBufferString("").String())
		for _, n := range names {
			out.WriteString(n + " ")
		}
		size, err := fsys.Stat("a/b/g")
		note("stat", err)
		out.WriteString(string(rune('0' + size)))
		out.WriteString("\n")
		// Allocation: the size grows, the new bytes read zeros, a smaller
		// allocation shrinks nothing; WriteAt lands where told and moves no
		// write offset; OpenAppend's offset is the allocated end.
		h, err := fsys.Create("a/b/p")
		note("create p", err)
		note("allocate", h.Allocate(64))
		_, err = h.WriteAt([]byte("mid"), 10)
		note("writeat", err)
		note("allocate smaller", h.Allocate(8))
		_, err = h.Write([]byte("W"))
		note("write after writeat", err)
		size, err = fsys.Stat("a/b/p")
		note("stat p", err)
		window := make([]byte, 16)
		n, err = h.ReadAt(window, 0)
		fmt.Fprintf(&out, "size %d read %d %q %v\n", size, n, window[:n], err)
		note("sync p", h.Sync())
		note("close p", h.Close())
		h, err = fsys.OpenAppend("a/b/p")
		note("openappend p", err)
		_, err = h.Write([]byte("E"))
		note("append p", err)
		size, err = fsys.Stat("a/b/p")
		note("stat p again", err)
		n, err = h.ReadAt(window, 56)
		fmt.Fprintf(&out, "size %d tail %d %q eof=%v\n", size, n, window[:n], err == io.EOF)
		note("close p again", h.Close())

		note("remove", fsys.Remove("a/b/g"))
		_, err = fsys.Stat("a/b/g")
		note("stat removed", err)
		_, err = fsys.Open("../x")
		note("open outside", err)
		_, err = fsys.List("nope")
		note("list missing", err)
		return out.String()
	}
	sim, osfs := script(NewSimFS()), script(NewOSFS(t.TempDir()))
	if sim != osfs {
		t.Fatalf("SimFS and OSFS differ:\nSimFS:\n%s\nOSFS:\n%s", sim, osfs)
	}
	t.Logf("both:\n%s", sim)
}
